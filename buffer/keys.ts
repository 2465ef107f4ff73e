/**
 * Key layout of the durable log in LevelDB.
 *
 * Every entry of the log has a *position*: `seq * SLOTS + slot`. Readings sit in the last slot of
 * their seq; events sit in the slots before it, so an event stored at seq N is read (and forwarded)
 * just before reading N. Positions are plain numbers: seq stays below 2^50, far beyond any
 * gateway's lifetime (a million readings a second for 35 years).
 *
 * Keys are one prefix byte then the position as 8 big-endian bytes, so LevelDB's byte order is
 * the log's order and the meta records (meta.ts) never interleave with entries.
 */
export const SLOTS = 4
export const enum Slot {
  /** an `io.sluice.epoch` event, before the first reading of a new epoch */
  Epoch = 0,
  /** an `io.sluice.gap` event, where the dropped readings were */
  Gap = 1,
  Reading = 3
}

const LOG_PREFIX = 0x6c // 'l' (meta records start with 'm': meta.ts)

export function position (seq: number, slot: Slot): number {
  return seq * SLOTS + slot
}

export function seqOf (pos: number): number {
  return Math.floor(pos / SLOTS)
}

/** The seq of the last reading at or before a position. */
export function readingSeqAtOrBefore (pos: number): number {
  const seq = seqOf(pos)
  return pos % SLOTS === Slot.Reading ? seq : seq - 1
}

// The position is written and read as two 32-bit halves: a BigInt per key cost more than the rest
// of the key (made once per reading written and once per reading read).
const HALF = 0x1_0000_0000

export function logKey (pos: number): Buffer {
  const key = Buffer.allocUnsafe(9)
  key[0] = LOG_PREFIX
  key.writeUInt32BE(Math.floor(pos / HALF), 1)
  key.writeUInt32BE(pos % HALF, 5)
  return key
}

export function positionOf (key: Uint8Array): number {
  const view = Buffer.isBuffer(key) ? key : Buffer.from(key.buffer, key.byteOffset, key.byteLength)
  return view.readUInt32BE(1) * HALF + view.readUInt32BE(5)
}

export function slotOf (pos: number): number {
  return pos % SLOTS
}

/** The key just past every log entry: the exclusive upper bound of a log scan. */
export const LOG_END = Buffer.from([LOG_PREFIX + 1])
