import type { OutgoingEntry, UpstreamFormat, UpstreamMessage } from '../contract.js'
import { type TopicTemplates, eventTopic, readingTopic } from './topics.js'

/**
 * CloudEvents 1.0 in structured mode over MQTT (SPEC section 5): one JSON event per message, on
 * MQTT 3.1.1 and 5 alike.
 */
export function cloudEventsJson (templates: TopicTemplates): UpstreamFormat {
  return {
    name: 'cloudevents-json',
    take: () => 1,
    encode: (entries) => encodeEntry(entries[0], templates)
  }
}

function encodeEntry (entry: OutgoingEntry, templates: TopicTemplates): UpstreamMessage {
  const { gateway } = templates
  switch (entry.kind) {
    case 'reading': {
      const head = {
        specversion: '1.0',
        id: `${gateway}-${entry.epoch}-${entry.seq}`,
        source: `sluice://${gateway}`,
        type: 'io.sluice.reading',
        time: new Date(entry.time).toISOString(),
        subject: entry.topic,
        sequence: sequence(entry.seq),
        sluiceepoch: entry.epoch
      }
      const json = jsonText(entry.payload)
      const event = json === null
        ? JSON.stringify({ ...head, datacontenttype: 'application/octet-stream', data_base64: Buffer.from(entry.payload).toString('base64') })
        // The sensor's JSON goes in as the text it sent: parsing and re-serialising would round
        // large integers and reorder nothing useful.
        : `${JSON.stringify({ ...head, datacontenttype: 'application/json' }).slice(0, -1)},"data":${json}}`
      return { topic: readingTopic(templates, entry.topic), payload: Buffer.from(event) }
    }
    case 'epoch': {
      const event = {
        specversion: '1.0',
        id: `${gateway}-${entry.epoch}-epoch`,
        source: `sluice://${gateway}`,
        type: 'io.sluice.epoch',
        time: new Date(entry.time).toISOString(),
        sluiceepoch: entry.epoch,
        datacontenttype: 'application/json',
        data: entry.data
      }
      return { topic: eventTopic(templates, 'epoch'), payload: Buffer.from(JSON.stringify(event)) }
    }
  }
}

/** The CloudEvents sequence extension compares as strings: zero-pad to 20 digits (2^64 fits). */
export function sequence (seq: number): string {
  return String(seq).padStart(20, '0')
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** The payload as JSON text when it is a UTF-8 JSON object or array, else null. */
function jsonText (payload: Uint8Array): string | null {
  let i = 0
  while (i < payload.length && (payload[i] === 0x20 || payload[i] === 0x09 || payload[i] === 0x0a || payload[i] === 0x0d)) i++
  if (payload[i] !== 0x7b && payload[i] !== 0x5b) return null // '{' or '['
  try {
    const text = utf8.decode(payload)
    JSON.parse(text)
    return text
  } catch {
    return null
  }
}
