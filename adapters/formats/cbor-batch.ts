import type { OutgoingEntry, Take, TakeLimits, UpstreamFormat, UpstreamMessage } from '../contract.js'
import { CborWriter, bytesSize, headSize, textSize, uintSize } from './cbor.js'
import { structuredEvent } from './cloudevents-json.js'
import { type TopicTemplates, eventTopic } from './topics.js'

type Reading = Extract<OutgoingEntry, { kind: 'reading' }>

export interface BatchBounds {
  /** most readings in one message */
  maxRecords: number
  /** largest CBOR document, in bytes (a single reading larger than this still goes, alone) */
  maxBytes: number
  /** milliseconds a batch that is not full waits for more readings before it is sent */
  maxDelayMs: number
}

/**
 * `cbor-batch` (docs/receiving.md): many readings per MQTT message, as one plain RFC 8949 document
 * `{gateway, epoch, records: [[seq, time, topic, payload], ...]}` on the events topic with kind
 * `batch`: the compact choice for metered links and for clouds that cap publishes per second.
 *
 * A batch never spans an epoch change or an event (epoch, gap): a receiver keys each record by
 * the batch's epoch, and events keep their place in the order as JSON CloudEvents of their own.
 */
export function cborBatch (templates: TopicTemplates, bounds: BatchBounds): UpstreamFormat {
  const gateway = Buffer.from(templates.gateway)
  const topic = eventTopic(templates, 'batch')
  return {
    name: 'cbor-batch',
    lingerMs: bounds.maxDelayMs,
    maxEntries: bounds.maxRecords,
    take: (entries, limits) => take(entries, limits, bounds, gateway.length),
    encode: (entries) => {
      const first = entries[0]
      if (first.kind !== 'reading') return structuredEvent(first, templates)
      return encodeBatch(gateway, topic, entries as readonly Reading[])
    }
  }
}

// The document's keys, in the order they are written.
const GATEWAY = Buffer.from('gateway')
const EPOCH = Buffer.from('epoch')
const RECORDS = Buffer.from('records')

/** Bytes of the document without its records and without the records array's head. */
function envelopeSize (gatewayBytes: number, epochBytes: number): number {
  return headSize(3) +
    textSize(GATEWAY.length) + textSize(gatewayBytes) +
    textSize(EPOCH.length) + textSize(epochBytes) +
    textSize(RECORDS.length)
}

function recordSize (r: Reading): number {
  return headSize(4) + uintSize(r.seq) + uintSize(timeOf(r)) + textSize(Buffer.byteLength(r.topic)) + bytesSize(r.payload.length)
}

/** RFC 8949 has no fractions in an unsigned integer: ingest times are whole milliseconds. */
function timeOf (r: Reading): number {
  return Math.max(0, Math.floor(r.time))
}

function take (entries: readonly OutgoingEntry[], limits: TakeLimits, bounds: BatchBounds, gatewayBytes: number): Take {
  const first = entries[0]
  if (first.kind !== 'reading') return { count: 1, open: false }
  const maxRecords = Math.min(bounds.maxRecords, limits.maxEntries)
  const maxBytes = Math.min(bounds.maxBytes, limits.maxBytes)
  const envelope = envelopeSize(gatewayBytes, Buffer.byteLength(first.epoch))
  let count = 0
  let records = 0
  for (const entry of entries) {
    // An event or an epoch change closes the batch: it goes after it, in its own message.
    if (entry.kind !== 'reading' || entry.epoch !== first.epoch) return { count, open: false }
    const next = recordSize(entry)
    if (count > 0 && envelope + headSize(count + 1) + records + next > maxBytes) return { count, open: false }
    count++
    records += next
    if (count >= maxRecords) return { count, open: false }
  }
  // Open (worth waiting for more) while a reading the size of the average so far still fits.
  return { count, open: envelope + headSize(count + 1) + records + records / count <= maxBytes }
}

function encodeBatch (gateway: Buffer, topic: string, readings: readonly Reading[]): UpstreamMessage {
  const epoch = Buffer.from(readings[0].epoch)
  const topics = readings.map((r) => Buffer.from(r.topic))
  let size = envelopeSize(gateway.length, epoch.length) + headSize(readings.length)
  for (const r of readings) size += recordSize(r)
  const w = new CborWriter(size)
  w.map(3)
  w.text(GATEWAY)
  w.text(gateway)
  w.text(EPOCH)
  w.text(epoch)
  w.text(RECORDS)
  w.array(readings.length)
  readings.forEach((r, i) => {
    w.array(4)
    w.uint(r.seq)
    w.uint(timeOf(r))
    w.text(topics[i])
    w.bytesItem(r.payload)
  })
  return { topic, payload: w.bytes, properties: { contentType: 'application/cbor' } }
}
