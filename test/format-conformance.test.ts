/**
 * The upstream format conformance suite (test/conformance/format.ts) run once per UpstreamFormat,
 * each read back the way a receiver reads it: the JSON CloudEvent, the MQTT 5 user properties
 * and payload of binary mode, decodeBatch for cbor-batch.
 */
import t from 'tap'
import type { UpstreamMessage } from '../adapters/contract.js'
import { cborBatch } from '../adapters/formats/cbor-batch.js'
import { cloudEventsBinary } from '../adapters/formats/cloudevents-binary.js'
import { cloudEventsJson } from '../adapters/formats/cloudevents-json.js'
import type { TopicTemplates } from '../adapters/formats/topics.js'
import { validateConfig } from '../config/index.js'
import { decodeBatch } from '../index.js'
import { type FormatHarness, type Received, formatConformance, readEvent } from './conformance/format.js'

/** The upstream topic a reading from `sensorTopic` is published to (written out, not sluice's code). */
function readingTopic (templates: TopicTemplates, sensorTopic: string): string {
  return `sluice/${templates.gateway}/${sensorTopic}`
}

/** A reading's CloudEvent attributes, as a receiver takes them: the sequence extension and the time. */
function attributes (a: Record<string, unknown>, message: UpstreamMessage, templates: TopicTemplates): Omit<Extract<Received, { kind: 'reading' }>, 'data'> {
  const topic = String(a.subject)
  if (message.topic !== readingTopic(templates, topic)) throw new Error(`reading of ${topic} published to ${message.topic}`)
  if (a.specversion !== '1.0' || a.source !== `sluice://${templates.gateway}`) throw new Error(`not a reading of this gateway: ${JSON.stringify(a)}`)
  const seq = Number(a.sequence)
  if (a.id !== `${templates.gateway}-${String(a.sluiceepoch)}-${seq}`) throw new Error(`id ${String(a.id)} does not name the reading`)
  return { kind: 'reading', seq, epoch: String(a.sluiceepoch), time: Date.parse(String(a.time)), topic }
}

const json: FormatHarness = {
  name: 'cloudevents-json',
  build: (templates) => cloudEventsJson(templates),
  decode: (message, templates) => {
    const event = JSON.parse(message.payload.toString('utf8')) as Record<string, unknown>
    if (event.type !== 'io.sluice.reading') return [readEvent(message)]
    const data = event.data_base64 !== undefined
      ? { bytes: Buffer.from(String(event.data_base64), 'base64') }
      : { json: event.data }
    return [{ ...attributes(event, message, templates), data }]
  }
}

const binary: FormatHarness = {
  name: 'cloudevents-binary',
  build: (templates) => cloudEventsBinary(templates),
  decode: (message, templates) => {
    const properties = message.properties?.userProperties
    if (properties?.type !== 'io.sluice.reading') return [readEvent(message)]
    return [{ ...attributes(properties, message, templates), data: { bytes: message.payload } }]
  }
}

function batchFormat (name: string, bounds: () => { maxRecords: number, maxBytes: number, maxDelayMs: number }): FormatHarness {
  return {
    name,
    build: (templates) => cborBatch(templates, bounds()),
    decode: (message, templates) => {
      if (message.topic !== `sluice/${templates.gateway}/$sluice/batch`) return [readEvent(message)]
      const batch = decodeBatch(message.payload)
      if (batch.gateway !== templates.gateway) throw new Error(`a batch of gateway ${batch.gateway}`)
      return batch.records.map((r) => ({ kind: 'reading', seq: r.seq, epoch: batch.epoch, time: r.time, topic: r.topic, data: { bytes: r.payload } }))
    }
  }
}

/** The bounds a gateway with the shipped defaults gets (daemon/gateway.ts). */
function defaultBounds (): { maxRecords: number, maxBytes: number, maxDelayMs: number } {
  const config = validateConfig({ gateway: { id: 'gw' }, upstream: { url: 'mqtt://127.0.0.1:1883', format: 'cbor-batch' } })
  const { maxRecords, maxBytes, maxDelay } = config.upstream.batch
  return { maxRecords, maxBytes, maxDelayMs: maxDelay }
}

const harnesses: Array<{ label: string, harness: FormatHarness }> = [
  { label: 'cloudevents-json', harness: json },
  { label: 'cloudevents-binary', harness: binary },
  { label: 'cbor-batch (shipped defaults)', harness: batchFormat('cbor-batch', defaultBounds) },
  // Bounds the stream's readings often exceed: batches cut by count and by size.
  { label: 'cbor-batch (4 records, 300 bytes)', harness: batchFormat('cbor-batch', () => ({ maxRecords: 4, maxBytes: 300, maxDelayMs: 0 })) }
]

for (const { label, harness } of harnesses) {
  t.test(`upstream format: ${label}`, async (t) => { formatConformance(t, harness) })
}
