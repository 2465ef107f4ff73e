/**
 * A reading's record, `[0, time, topic, payload, storedAt]`, written by hand: the record written
 * once per reading, where cbor-x's general encoder (a type switch per item, options checked per
 * call) took 0.6 µs and this takes half that. The bytes are exactly the ones cbor-x writes for the
 * same array with the buffer's options (test/codec.test.ts compares them), so records read the
 * same whichever wrote them, and any other shape (negative or fractional numbers, a topic that is
 * not well-formed UTF-16) is left to cbor-x: `null` means "not this shape". Reading stays with
 * cbor-x: a hand reader measured no faster (the payload view and the topic string cost the same).
 *
 * cbor-x's choices followed here: an integer up to 2^32 - 1 in its shortest unsigned form, a
 * larger one (a time in ms) as a float64; strings and byte strings with the shortest length head;
 * byte strings untagged (tagUint8Array: false). The batch format's CBOR writer
 * (adapters/formats/cbor.ts) is not used here: the buffer imports nothing of sluice's, and that
 * writer puts a time in ms as a 64-bit integer where the record must have cbor-x's float64.
 */

const ARRAY_5 = 0x85
const READING = 0x00
const FLOAT64 = 0xfb
const TEXT = 3
const BYTES = 2

/** The record of a reading, or null when cbor-x must write it. */
export function writeReadingRecord (time: number, topic: string, payload: Uint8Array, storedAt: number): Buffer | null {
  if (!fastNumber(time) || !fastNumber(storedAt) || !topic.isWellFormed()) return null
  const topicBytes = Buffer.byteLength(topic)
  const size = 2 + numberSize(time) + headSize(topicBytes) + topicBytes + headSize(payload.length) + payload.length + numberSize(storedAt)
  const out = Buffer.allocUnsafe(size)
  out[0] = ARRAY_5
  out[1] = READING
  let at = writeNumber(out, 2, time)
  at = writeHead(out, at, TEXT, topicBytes)
  at += out.write(topic, at, topicBytes, 'utf8')
  at = writeHead(out, at, BYTES, payload.length)
  out.set(payload, at)
  writeNumber(out, at + payload.length, storedAt)
  return out
}

function fastNumber (n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0
}

function numberSize (n: number): number {
  return n > 0xffffffff ? 9 : headSize(n)
}

function headSize (n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5
}

function writeNumber (out: Buffer, at: number, n: number): number {
  if (n <= 0xffffffff) return writeHead(out, at, 0, n)
  out[at] = FLOAT64
  out.writeDoubleBE(n, at + 1)
  return at + 9
}

/** A head with an argument below 2^32, in its shortest form. */
function writeHead (out: Buffer, at: number, major: number, n: number): number {
  const type = major << 5
  if (n < 24) {
    out[at] = type | n
    return at + 1
  }
  if (n < 0x100) {
    out[at] = type | 24
    out[at + 1] = n
    return at + 2
  }
  if (n < 0x10000) {
    out[at] = type | 25
    out.writeUInt16BE(n, at + 1)
    return at + 3
  }
  out[at] = type | 26
  out.writeUInt32BE(n, at + 1)
  return at + 5
}
