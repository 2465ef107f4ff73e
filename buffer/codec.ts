import { Encoder } from 'cbor-x'
import { BufferError } from './errors.js'
import { writeReadingRecord } from './reading-record.js'

/** A reading as the ingest adapters hand it to the log. */
export interface ReadingInput {
  /** ingest time, milliseconds since 1970 */
  time: number
  /** the sensor's MQTT topic */
  topic: string
  payload: Uint8Array
}

/**
 * Why a buffer began a new epoch: `power-loss` (the machine rebooted after an unclean stop),
 * `repaired` (LevelDB was repaired at open), `set-aside` (the buffer was damaged beyond repair,
 * moved aside, and a fresh one started: the old backlog is not forwarded).
 */
export const EPOCH_REASONS = ['power-loss', 'repaired', 'set-aside'] as const
export type EpochReason = typeof EPOCH_REASONS[number]

export interface EpochEventData {
  epoch: string
  /** the previous epoch; null when it could not be read (a buffer set aside unreadable) */
  previous: string | null
  /**
   * the last seq of the previous epoch that was durable when the new epoch began; null when it
   * could not be read
   */
  lastDurableSeq: number | null
  reason: EpochReason
}

/**
 * Why readings were dropped (docs/guarantees.md §4, docs/receiving.md): `overflow` (a full buffer's policy, or a QoS 0 reading
 * meeting a full buffer), `ttl` (older than buffer.ttl), `rejected` (set aside by the forwarder),
 * `corrupt` (lost to a damaged LevelDB: unreadable records, or records a repair could not save).
 */
export const GAP_REASONS = ['overflow', 'ttl', 'rejected', 'corrupt'] as const
export type GapReason = typeof GAP_REASONS[number]

/** The data of an `io.sluice.gap` event: seqs `from`..`to` (inclusive) will never be forwarded. */
export interface GapData {
  from: number
  to: number
  count: number
  reason: GapReason
}

export type LogEntry =
  | {
    kind: 'reading', pos: number, seq: number, epoch: string, time: number, topic: string, payload: Uint8Array
    /** when it was stored, in buffer time (BufferClock): what the TTL is measured on */
    storedAt: number
  }
  | { kind: 'epoch', pos: number, seq: number, epoch: string, time: number, data: EpochEventData }
  | { kind: 'gap', pos: number, seq: number, epoch: string, time: number, data: GapData }

// Plain CBOR arrays: no records or tags, so the on-disk format is readable by any decoder.
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false })

const READING = 0
const EPOCH = 1
const GAP = 2

/** A reading: `[0, time, topic, payload, storedAt]` (entries written before the TTL have no storedAt). */
export function encodeReading (r: ReadingInput, storedAt: number): Buffer {
  return writeReadingRecord(r.time, r.topic, r.payload, storedAt) ?? cbor.encode([READING, r.time, r.topic, r.payload, storedAt])
}

export function encodeEpochEvent (time: number, data: EpochEventData): Buffer {
  return cbor.encode([EPOCH, time, data])
}

/** A gap: `[2, time, from, to, count, reason]`, stored at the position of its first seq. */
export function encodeGap (time: number, gap: GapData): Buffer {
  return cbor.encode([GAP, time, gap.from, gap.to, gap.count, gap.reason])
}

export function encodeMeta (value: unknown): Buffer {
  return cbor.encode(value)
}

export function decodeMeta<T> (bytes: Uint8Array): T {
  try {
    return cbor.decode(bytes) as T
  } catch (cause) {
    throw new BufferError('SLUICE_BUFFER_CORRUPT_RECORD', 'a meta record of the buffer is not valid CBOR', { cause })
  }
}

/** Decodes a stored entry; `epoch` is looked up by the log from the entry's seq. */
export function decodeEntry (pos: number, seq: number, epoch: string, bytes: Uint8Array): LogEntry {
  let value: unknown
  try {
    value = cbor.decode(bytes)
  } catch (cause) {
    throw new BufferError('SLUICE_BUFFER_CORRUPT_RECORD', `entry at seq ${seq} is not valid CBOR`, { cause })
  }
  if (Array.isArray(value)) {
    if (value[0] === READING && (value.length === 4 || value.length === 5) && value[3] instanceof Uint8Array) {
      return { kind: 'reading', pos, seq, epoch, time: value[1], topic: value[2], payload: value[3], storedAt: value[4] ?? 0 }
    }
    if (value[0] === EPOCH && value.length === 3) {
      return { kind: 'epoch', pos, seq, epoch, time: value[1], data: value[2] }
    }
    if (value[0] === GAP && value.length === 6) {
      return { kind: 'gap', pos, seq, epoch, time: value[1], data: { from: value[2], to: value[3], count: value[4], reason: value[5] } }
    }
  }
  throw new BufferError('SLUICE_BUFFER_CORRUPT_RECORD', `entry at seq ${seq} has an unknown shape`)
}
