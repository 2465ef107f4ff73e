/**
 * A CloudEvent carries a sensor's payload as `data` only when it is a JSON object or array in
 * UTF-8, else as `data_base64`: a receiver parses the event, so a payload wrongly let through as
 * JSON breaks every event it is in. The check is written by hand over the bytes
 * (adapters/formats/json-document.ts); the reference here is what the platform says: a fatal UTF-8
 * decode, then JSON.parse. They must agree on every document, valid or broken: seeded generated
 * documents, each mutated many ways, and the cases at the edges of the grammar and of UTF-8.
 * The event time is written from a per-second cache (iso-time.ts): it must equal toISOString.
 */
import t from 'tap'
import { isJsonDocument } from '../adapters/formats/json-document.js'
import { isoTime } from '../adapters/formats/iso-time.js'
import { mulberry32 } from '../scripts/random.js'

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** The platform's answer: an object or an array (after JSON whitespace), valid UTF-8, and JSON.parse accepts it. */
function reference (bytes: Uint8Array): boolean {
  let i = 0
  while (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d) i++
  if (bytes[i] !== 0x7b && bytes[i] !== 0x5b) return false
  try {
    JSON.parse(utf8.decode(bytes))
    return true
  } catch {
    return false
  }
}

const SEED = 4121
const random = mulberry32(SEED)
const below = (n: number): number => Math.floor(random() * n)
const pick = <T>(items: readonly T[]): T => items[below(items.length)]

const TEXTS = ['', 'a', 't-17', 'é', '水', '😀', '"', '\\', '/', '\b\f\n\r\t', '\u0000', '\u001f', '\ud800', 'x y']
const NUMBERS = ['0', '-0', '7', '-12', '3.25', '1e5', '1E-7', '-0.5e+3', '12345678901234567890', '1.7976931348623157e309']

function generate (depth: number): string {
  const r = below(depth > 3 ? 6 : 8)
  switch (r) {
    case 0: return JSON.stringify(pick(TEXTS) + pick(TEXTS))
    case 1: return pick(NUMBERS)
    case 2: return pick(['true', 'false', 'null'])
    case 3: return pick(TEXTS) === '' ? '"\\u00e9\\ud83d\\ude00"' : '"\\/"'
    case 4: case 5: return pick(NUMBERS)
    case 6: return '[' + Array.from({ length: below(4) }, () => space() + generate(depth + 1) + space()).join(',') + ']'
    default: return '{' + Array.from({ length: below(4) }, () => space() + JSON.stringify(pick(TEXTS)) + space() + ':' + space() + generate(depth + 1)).join(',') + '}'
  }
}

function space (): string {
  return random() < 0.7 ? '' : pick([' ', '\n', '\t', '\r\n', '  '])
}

function document (): Buffer {
  const inner = Array.from({ length: below(5) }, () => JSON.stringify(pick(TEXTS)) + ':' + generate(1)).join(',')
  return Buffer.from(space() + (random() < 0.8 ? '{' + inner + '}' : '[' + generate(1) + ']') + space())
}

/** Bytes that matter to the grammar or to UTF-8, for mutations. */
const INTERESTING = [...Buffer.from('"\\{}[]:,-+.eE0129 \tuntf/'), 0x00, 0x1f, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff]

function mutate (bytes: Buffer): Buffer {
  const out = Buffer.from(bytes)
  const at = below(out.length + 1)
  switch (below(4)) {
    case 0: return Buffer.concat([out.subarray(0, at), Buffer.from([pick(INTERESTING)]), out.subarray(at)])
    case 1: return Buffer.concat([out.subarray(0, at), out.subarray(at + 1)])
    case 2:
      if (at < out.length) out[at] = pick(INTERESTING)
      return out
    default: return out.subarray(0, at)
  }
}

t.test('the check agrees with JSON.parse on generated documents and their mutations', async (t) => {
  let cases = 0
  let valid = 0
  for (let i = 0; i < 3000; i++) {
    let bytes = document()
    for (let m = 0; m <= 6; m++) {
      const expected = reference(bytes)
      if (isJsonDocument(bytes) !== expected) {
        t.fail(`disagrees with JSON.parse (seed ${SEED}): ${JSON.stringify(bytes.toString('latin1'))} (${bytes.toString('hex')}); JSON.parse says ${expected}`)
        return
      }
      cases++
      if (expected) valid++
      bytes = mutate(bytes)
    }
  }
  t.equal(cases, 21_000, 'every case agreed')
  t.ok(valid > 3000 && valid < cases - 3000, `both answers well represented (${valid} valid of ${cases})`)
})

t.test('the edges of the grammar and of UTF-8', async (t) => {
  const cases: Array<[string | Buffer, boolean]> = [
    ['{}', true], ['[]', true], [' \n\t\r{ } \n', true], ['{"a":[1,-0,0.5,1e3,1E+3,1e-3,true,false,null,"x"]}', true],
    ['"text"', false], ['1', false], ['null', false], ['', false], ['  ', false], ['\ufeff{}', false],
    ['{} x', false], ['{}{}', false], ['{', false], ['[1,]', false], ['{"a":1,}', false], ['{"a"}', false], ['{a:1}', false],
    ['[01]', false], ['[1.]', false], ['[.5]', false], ['[1e]', false], ['[1e+]', false], ['[-]', false], ['[+1]', false], ['[0x1]', false],
    ['[tru]', false], ['[nul]', false], ['[True]', false], ['["\\u12G4"]', false], ['["\\x"]', false], ['["\\u00e9\\uD800"]', true],
    ['["a\tb"]', false], ['["a\u007fb"]', true], ['[1 2]', false], ['[NaN]', false], ['[Infinity]', false],
    [Buffer.from('["\xc3\xa9"]', 'latin1'), true], // é
    [Buffer.from('["\xc0\xaf"]', 'latin1'), false], // overlong '/'
    [Buffer.from('["\xe0\x80\xaf"]', 'latin1'), false], // overlong, three bytes
    [Buffer.from('["\xed\xa0\x80"]', 'latin1'), false], // a surrogate
    [Buffer.from('["\xf4\x90\x80\x80"]', 'latin1'), false], // past U+10FFFF
    [Buffer.from('["\xf0\x9f\x98\x80"]', 'latin1'), true], // U+1F600
    [Buffer.from('["\xe6\xb0"]', 'latin1'), false], // cut short
    [Buffer.from('[1]\xff', 'latin1'), false],
    ['['.repeat(1000) + ']'.repeat(1000), true], // deeper than the hand check goes: JSON.parse decides
    ['['.repeat(1000) + ']'.repeat(999), false]
  ]
  for (const [text, expected] of cases) {
    const bytes = typeof text === 'string' ? Buffer.from(text) : text
    t.equal(isJsonDocument(bytes), expected, JSON.stringify(bytes.toString('latin1').slice(0, 40)))
    t.equal(reference(bytes), expected, 'and JSON.parse agrees')
  }
})

t.test('event times are toISOString, from one cached second to the next', async (t) => {
  const times = [0, -1, -999, -1000, -1001, 999, 1000, 1_764_870_000_123, 1_764_870_000_999, 1_764_870_001_000, 253_402_300_799_999, 253_402_300_800_000, 1.5]
  let at = 1_764_870_000_000
  for (let i = 0; i < 3000; i++) {
    at += below(3) === 0 ? below(5000) : below(40)
    times.push(at)
  }
  let same = 0
  for (const ms of times) {
    if (isoTime(ms) === new Date(ms).toISOString()) same++
    else t.fail(`${ms}: ${isoTime(ms)}, toISOString ${new Date(ms).toISOString()}`)
  }
  t.equal(same, times.length)
})
