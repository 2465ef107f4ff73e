/**
 * The few RFC 8949 items a batch is made of, written by hand: unsigned integers, text strings,
 * byte strings, and array and map headers, each in its shortest form, with definite lengths and
 * no tags. cbor-x is not used here on purpose: it writes integers past 2^32 (a time in ms) as
 * float64 and tags byte strings by default, and docs/receiving.md promises a document that any
 * decoder reads as unsigned integers and byte strings. Writing it by hand also gives each item's
 * exact size before anything is encoded, which is how a batch is kept under its byte bounds.
 */

const UINT = 0
const BYTES = 2
const TEXT = 3
const ARRAY = 4
const MAP = 5

/** Bytes of a head (major type and argument) for argument `n` [RFC 8949 3]. */
export function headSize (n: number): number {
  if (n < 24) return 1
  if (n < 0x100) return 2
  if (n < 0x10000) return 3
  if (n < 0x100000000) return 5
  return 9
}

export function uintSize (n: number): number { return headSize(n) }
export function textSize (byteLength: number): number { return headSize(byteLength) + byteLength }
export function bytesSize (byteLength: number): number { return headSize(byteLength) + byteLength }

/** Appends items to a buffer sized in advance (the caller computes the total with the *Size functions). */
export class CborWriter {
  readonly buffer: Buffer
  private at = 0

  constructor (size: number) {
    this.buffer = Buffer.allocUnsafe(size)
  }

  /** The bytes written so far. */
  get bytes (): Buffer { return this.buffer.subarray(0, this.at) }

  private head (major: number, n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`CBOR: ${n} is not an unsigned safe integer`)
    const b = this.buffer
    const type = major << 5
    if (n < 24) {
      b[this.at++] = type | n
    } else if (n < 0x100) {
      b[this.at++] = type | 24
      b[this.at++] = n
    } else if (n < 0x10000) {
      b[this.at++] = type | 25
      b.writeUInt16BE(n, this.at)
      this.at += 2
    } else if (n < 0x100000000) {
      b[this.at++] = type | 26
      b.writeUInt32BE(n, this.at)
      this.at += 4
    } else {
      b[this.at++] = type | 27
      b.writeUInt32BE(Math.floor(n / 0x100000000), this.at)
      b.writeUInt32BE(n >>> 0, this.at + 4)
      this.at += 8
    }
  }

  uint (n: number): void { this.head(UINT, n) }
  array (length: number): void { this.head(ARRAY, length) }
  map (entries: number): void { this.head(MAP, entries) }

  /** A text string from its UTF-8 bytes. */
  text (utf8: Uint8Array): void {
    this.head(TEXT, utf8.length)
    this.buffer.set(utf8, this.at)
    this.at += utf8.length
  }

  bytesItem (data: Uint8Array): void {
    this.head(BYTES, data.length)
    this.buffer.set(data, this.at)
    this.at += data.length
  }
}
