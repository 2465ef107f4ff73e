/**
 * The log's records and keys on disk (buffer/codec.ts, buffer/reading-record.ts, buffer/keys.ts).
 * A reading's record is written by hand, and must stay byte for byte what cbor-x writes for
 * `[0, time, topic, payload, storedAt]`: a buffer written by an earlier version of sluice, and
 * any CBOR decoder reading the buffer, depend on it. cbor-x and BigInt are the reference here, on seeded
 * random records with every length and number at the edges of CBOR's head sizes.
 */
import t from 'tap'
import { Encoder } from 'cbor-x'
import { decodeEntry, encodeReading } from '../buffer/codec.js'
import { BufferError } from '../buffer/errors.js'
import { logKey, positionOf } from '../buffer/keys.js'
import { mulberry32 } from '../scripts/random.js'

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false })
const SEED = 20261204
const random = mulberry32(SEED)
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]

/** Lengths either side of each CBOR head size (1, 2, 3 and 5 bytes). */
const LENGTHS = [0, 1, 23, 24, 25, 255, 256, 257, 65_535, 65_536, 65_537]
const NUMBERS = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 1_764_870_000_123, 2 ** 53 - 1]
/** Characters of 1, 2, 3 and 4 UTF-8 bytes. */
const CHARS = ['a', '/', 'é', 'Ω', '水', '€', '😀']

function topicOfBytes (about: number): string {
  const chars: string[] = []
  for (let bytes = 0; bytes < about;) {
    const char = pick(CHARS)
    chars.push(char)
    bytes += Buffer.byteLength(char)
  }
  return chars.join('')
}

function payloadOf (length: number, plain: boolean): Uint8Array {
  const bytes = plain ? new Uint8Array(length) : Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) bytes[i] = Math.floor(random() * 256)
  return bytes
}

function randomNumber (): number {
  return random() < 0.7 ? pick(NUMBERS) : Math.floor(random() * 2 ** (1 + Math.floor(random() * 52)))
}

t.test('a reading is written as cbor-x writes it, and read back as cbor-x reads it', async (t) => {
  let compared = 0
  for (let i = 0; i < 600; i++) {
    const time = randomNumber()
    const storedAt = randomNumber()
    const topic = topicOfBytes(random() < 0.3 ? pick(LENGTHS) : Math.floor(random() * 60))
    const payload = payloadOf(random() < 0.3 ? pick(LENGTHS) : Math.floor(random() * 120), random() < 0.3)
    const expected = cbor.encode([0, time, topic, payload, storedAt])
    const written = encodeReading({ time, topic, payload }, storedAt)
    if (!written.equals(expected)) {
      t.fail(`record differs from cbor-x (seed ${SEED}, #${i}): time ${time}, storedAt ${storedAt}, topic ${Buffer.byteLength(topic)} B, payload ${payload.length} B`)
      return
    }
    const entry = decodeEntry(8 * i + 3, 2 * i, 'e1', written)
    const reference = cbor.decode(expected) as [number, number, string, Uint8Array, number]
    if (entry.kind !== 'reading' || entry.time !== reference[1] || entry.topic !== reference[2] ||
      !Buffer.from(entry.payload).equals(reference[3]) || entry.storedAt !== reference[4]) {
      t.fail(`record read back differs (seed ${SEED}, #${i})`)
      return
    }
    compared++
  }
  t.equal(compared, 600, 'every record byte-identical and read back the same')
})

t.test('readings of other shapes are still written by cbor-x and read the same', async (t) => {
  const odd = [
    { time: -5, topic: 't', storedAt: 1 },
    { time: 1.5, topic: 't', storedAt: 1 },
    { time: 1_764_870_000_123, topic: 't', storedAt: -1 },
    { time: 2 ** 53, topic: 't', storedAt: 0 },
    { time: 7, topic: 'lone \ud800 surrogate', storedAt: 7 }
  ]
  for (const r of odd) {
    const payload = Buffer.from('{"v":1}')
    const written = encodeReading({ time: r.time, topic: r.topic, payload }, r.storedAt)
    t.same(written, cbor.encode([0, r.time, r.topic, payload, r.storedAt]), `time ${r.time}, storedAt ${r.storedAt}, topic ${JSON.stringify(r.topic)}`)
    const entry = decodeEntry(3, 0, 'e1', written)
    const reference = cbor.decode(written) as [number, number, string, Uint8Array, number]
    t.match(entry, { kind: 'reading', time: reference[1], topic: reference[2], storedAt: reference[4] })
  }
})

t.test('a reading written before the TTL existed (no storedAt) reads with storedAt 0', async (t) => {
  const payload = Buffer.from('{"t":21.5}')
  const entry = decodeEntry(7, 1, 'e1', cbor.encode([0, 1_764_870_000_123, 'site/a', payload]))
  t.match(entry, { kind: 'reading', pos: 7, seq: 1, epoch: 'e1', time: 1_764_870_000_123, topic: 'site/a', storedAt: 0 })
  t.ok(entry.kind === 'reading' && Buffer.from(entry.payload).equals(payload))
})

t.test('a record cut short anywhere is reported corrupt, never read as a shorter reading', async (t) => {
  const record = encodeReading({ time: 1_764_870_000_123, topic: 'site/ü', payload: Buffer.from('x'.repeat(300)) }, 70_000)
  let refused = 0
  for (let end = 0; end < record.length; end++) {
    try {
      decodeEntry(3, 0, 'e1', record.subarray(0, end))
    } catch (err) {
      if (err instanceof BufferError && err.code === 'SLUICE_BUFFER_CORRUPT_RECORD') refused++
    }
  }
  t.equal(refused, record.length, `all ${record.length} prefixes refused`)
  t.throws(() => decodeEntry(3, 0, 'e1', Buffer.concat([record, Buffer.from([0])])), { code: 'SLUICE_BUFFER_CORRUPT_RECORD' }, 'a byte too many is refused too')
})

t.test('log keys are a prefix byte and the position as 8 big-endian bytes', async (t) => {
  const positions = [0, 3, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 3, 2 ** 52 - 1, 2 ** 52 + 3]
  for (let i = 0; i < 500; i++) positions.push(Math.floor(random() * 2 ** 52))
  let same = 0
  for (const pos of positions) {
    const expected = Buffer.alloc(9)
    expected[0] = 0x6c
    expected.writeBigUInt64BE(BigInt(pos), 1)
    const key = logKey(pos)
    if (key.equals(expected) && positionOf(key) === pos && positionOf(new Uint8Array(key)) === pos) same++
    else t.fail(`position ${pos}: key ${key.toString('hex')}, expected ${expected.toString('hex')}`)
  }
  t.equal(same, positions.length)
})
