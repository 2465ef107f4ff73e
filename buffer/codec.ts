import { Encoder } from 'cbor-x'
import { BufferError } from './errors.js'

/** A reading as the ingest adapters hand it to the log. */
export interface ReadingInput {
  /** ingest time, milliseconds since 1970 */
  time: number
  /** the sensor's MQTT topic */
  topic: string
  payload: Uint8Array
}

export interface EpochEventData {
  epoch: string
  previous: string
  /** the last seq of the previous epoch that was durable when the new epoch began */
  lastDurableSeq: number
  reason: 'power-loss'
}

export type LogEntry =
  | { kind: 'reading', pos: number, seq: number, epoch: string, time: number, topic: string, payload: Uint8Array }
  | { kind: 'epoch', pos: number, seq: number, epoch: string, time: number, data: EpochEventData }

// Plain CBOR arrays: no records or tags, so the on-disk format is readable by any decoder.
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false })

const READING = 0
const EPOCH = 1

export function encodeReading (r: ReadingInput): Buffer {
  return cbor.encode([READING, r.time, r.topic, r.payload])
}

export function encodeEpochEvent (time: number, data: EpochEventData): Buffer {
  return cbor.encode([EPOCH, time, data])
}

export function encodeMeta (value: unknown): Buffer {
  return cbor.encode(value)
}

export function decodeMeta<T> (bytes: Uint8Array): T {
  return cbor.decode(bytes) as T
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
    if (value[0] === READING && value.length === 4) {
      return { kind: 'reading', pos, seq, epoch, time: value[1], topic: value[2], payload: value[3] }
    }
    if (value[0] === EPOCH && value.length === 3) {
      return { kind: 'epoch', pos, seq, epoch, time: value[1], data: value[2] }
    }
  }
  throw new BufferError('SLUICE_BUFFER_CORRUPT_RECORD', `entry at seq ${seq} has an unknown shape`)
}
