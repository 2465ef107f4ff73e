import { Decoder } from 'cbor-x'

/** One reading of a `cbor-batch` message. */
export interface BatchRecord {
  /** the reading's sequence number: `(gateway, epoch, seq)` identifies it worldwide */
  seq: number
  /** ingest time, milliseconds since 1970 */
  time: number
  /** the topic the sensor published to */
  topic: string
  /** the sensor's bytes, unchanged */
  payload: Uint8Array
}

/** A decoded `cbor-batch` message (docs/receiving.md). */
export interface Batch {
  gateway: string
  /** the buffer epoch every record of the batch belongs to */
  epoch: string
  /** in increasing seq order */
  records: BatchRecord[]
}

/** The bytes are not a `cbor-batch` message. */
export class BatchDecodeError extends Error {
  readonly code = 'SLUICE_BATCH_INVALID'

  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'BatchDecodeError'
  }
}

// Plain CBOR in, plain values out: maps as objects, no record or tag extensions expected.
// cbor-x reads 64-bit integers (a time in ms is one) as BigInt: toRecord makes numbers of them.
const decoder = new Decoder({ mapsAsObjects: true, useRecords: false })

/**
 * Decodes the payload of a `cbor-batch` message (an MQTT message on the events topic with kind
 * `batch`). Throws a BatchDecodeError when it is not one. Any RFC 8949 decoder reads the same
 * document; this one checks its shape and names the fields.
 */
export function decodeBatch (bytes: Uint8Array): Batch {
  let doc: unknown
  try {
    doc = decoder.decode(bytes)
  } catch (cause) {
    throw new BatchDecodeError('not a CBOR document', { cause })
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new BatchDecodeError('expected a CBOR map')
  const { gateway, epoch, records } = doc as Record<string, unknown>
  if (typeof gateway !== 'string') throw new BatchDecodeError('"gateway" is not a text string')
  if (typeof epoch !== 'string') throw new BatchDecodeError('"epoch" is not a text string')
  if (!Array.isArray(records)) throw new BatchDecodeError('"records" is not an array')
  return { gateway, epoch, records: records.map(toRecord) }
}

function toRecord (value: unknown, i: number): BatchRecord {
  if (!Array.isArray(value) || value.length < 4) throw new BatchDecodeError(`record ${i} is not an array [seq, time, topic, payload]`)
  const [seq, time, topic, payload] = (value as unknown[]).map(safeNumber)
  if (!isUint(seq)) throw new BatchDecodeError(`record ${i}: seq is not an unsigned integer`)
  if (!isUint(time)) throw new BatchDecodeError(`record ${i}: time is not an unsigned integer`)
  if (typeof topic !== 'string') throw new BatchDecodeError(`record ${i}: topic is not a text string`)
  if (!(payload instanceof Uint8Array)) throw new BatchDecodeError(`record ${i}: payload is not a byte string`)
  return { seq, time, topic, payload }
}

/** A BigInt that fits a double exactly becomes a number; anything else is left as it is. */
function safeNumber (value: unknown): unknown {
  if (typeof value === 'bigint' && value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value)
  return value
}

function isUint (value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}
