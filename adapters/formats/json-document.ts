/**
 * Whether a sensor's payload is a JSON object or array (RFC 8259) in UTF-8: what decides whether
 * a CloudEvent carries it as `data` or as `data_base64`. Checked once per reading forwarded, on the
 * bytes, without decoding them to a string or building the value: the same answer as a fatal
 * UTF-8 decode followed by JSON.parse (test/json-document.test.ts compares the two on generated
 * and mutated documents), at a third of the CPU.
 *
 * A document nested deeper than MAX_DEPTH is left to JSON.parse rather than recursed into.
 */

const MAX_DEPTH = 128

const BAD = 0
const OK = 1
const DEEP = 2
type Verdict = typeof BAD | typeof OK | typeof DEEP

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const COMMA = 0x2c
const COLON = 0x3a
const MINUS = 0x2d
const PLUS = 0x2b
const DOT = 0x2e
const ZERO = 0x30
const NINE = 0x39

const TRUE = Buffer.from('true')
const FALSE = Buffer.from('false')
const NULL = Buffer.from('null')
/** the characters allowed after a backslash, besides `u` */
const SHORT_ESCAPES = new Set(Array.from('"\\/bfnrt', (c) => c.charCodeAt(0)))

// The document being checked. The check is synchronous, so one module-level cursor is safe; the
// payload is let go as soon as the check ends.
const NOTHING = new Uint8Array(0)
let src: Uint8Array = NOTHING
let at = 0

export function isJsonDocument (payload: Uint8Array): boolean {
  src = payload
  at = 0
  try {
    skipSpace()
    if (src[at] !== OPEN_OBJECT && src[at] !== OPEN_ARRAY) return false
    const verdict = value(0)
    if (verdict === DEEP) return parsesAsJson(payload)
    skipSpace()
    return verdict === OK && at === src.length
  } finally {
    src = NOTHING
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** The reference: a fatal UTF-8 decode, then JSON.parse. */
function parsesAsJson (payload: Uint8Array): boolean {
  try {
    JSON.parse(utf8.decode(payload))
    return true
  } catch {
    return false
  }
}

function skipSpace (): void {
  for (;;) {
    const c = src[at]
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return
    at++
  }
}

function value (depth: number): Verdict {
  switch (src[at]) {
    case OPEN_OBJECT: return container(depth + 1, CLOSE_OBJECT)
    case OPEN_ARRAY: return container(depth + 1, CLOSE_ARRAY)
    case QUOTE: return string() ? OK : BAD
    case 0x74: return literal(TRUE) ? OK : BAD
    case 0x66: return literal(FALSE) ? OK : BAD
    case 0x6e: return literal(NULL) ? OK : BAD
    default: return number() ? OK : BAD
  }
}

/**
 * An object or an array from its opening bracket: members separated by commas up to `close`, each
 * a value, in an object after a string key and a colon.
 */
function container (depth: number, close: number): Verdict {
  if (depth > MAX_DEPTH) return DEEP
  const keyed = close === CLOSE_OBJECT
  at++
  skipSpace()
  if (src[at] === close) {
    at++
    return OK
  }
  for (;;) {
    if (keyed) {
      if (src[at] !== QUOTE || !string()) return BAD
      skipSpace()
      if (src[at] !== COLON) return BAD
      at++
      skipSpace()
    }
    const verdict = value(depth)
    if (verdict !== OK) return verdict
    skipSpace()
    const c = src[at++]
    if (c === close) return OK
    if (c !== COMMA) return BAD
    skipSpace()
  }
}

function literal (word: Uint8Array): boolean {
  for (let i = 0; i < word.length; i++) {
    if (src[at + i] !== word[i]) return false
  }
  at += word.length
  return true
}

function digits (): boolean {
  const start = at
  while (isDigit(src[at])) at++
  return at > start
}

function isDigit (c: number | undefined): boolean {
  return c !== undefined && c >= ZERO && c <= NINE
}

/** `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` */
function number (): boolean {
  if (src[at] === MINUS) at++
  if (src[at] === ZERO) at++
  else if (!digits()) return false
  if (src[at] === DOT) {
    at++
    if (!digits()) return false
  }
  if (src[at] === 0x65 || src[at] === 0x45) { // e E
    at++
    if (src[at] === PLUS || src[at] === MINUS) at++
    if (!digits()) return false
  }
  return true
}

/** A string from its opening quote: no raw control characters, valid escapes, valid UTF-8. */
function string (): boolean {
  at++
  for (;;) {
    const c = src[at]
    if (c === undefined || c < 0x20) return false
    if (c === QUOTE) {
      at++
      return true
    }
    if (c === BACKSLASH) {
      const e = src[at + 1]
      if (e === 0x75) { // u
        if (!isHex(src[at + 2]) || !isHex(src[at + 3]) || !isHex(src[at + 4]) || !isHex(src[at + 5])) return false
        at += 6
      } else if (e !== undefined && SHORT_ESCAPES.has(e)) {
        at += 2
      } else {
        return false
      }
    } else if (c < 0x80) {
      at++
    } else if (!utf8Sequence(c)) {
      return false
    }
  }
}

function isHex (c: number | undefined): boolean {
  return c !== undefined && ((c >= ZERO && c <= NINE) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66))
}

/**
 * One multi-byte UTF-8 sequence led by `lead` [RFC 3629 4]: no overlong forms, no surrogates,
 * nothing past U+10FFFF.
 */
function utf8Sequence (lead: number): boolean {
  let length: number
  let low = 0x80
  let high = 0xbf
  if (lead >= 0xc2 && lead <= 0xdf) length = 2
  else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3
    if (lead === 0xe0) low = 0xa0
    if (lead === 0xed) high = 0x9f
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4
    if (lead === 0xf0) low = 0x90
    if (lead === 0xf4) high = 0x8f
  } else return false
  const second = src[at + 1]
  if (second === undefined || second < low || second > high) return false
  for (let i = 2; i < length; i++) {
    const next = src[at + i]
    if (next === undefined || next < 0x80 || next > 0xbf) return false
  }
  at += length
  return true
}
