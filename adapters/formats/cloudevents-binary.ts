import type { UpstreamFormat } from '../contract.js'
import { readingAttributes, structuredEvent } from './cloudevents-json.js'
import { isJsonDocument } from './json-document.js'
import { type TopicTemplates, readingTopic } from './topics.js'

/**
 * CloudEvents 1.0 in binary mode over MQTT 5 (docs/receiving.md; CloudEvents MQTT binding 3.1.1):
 * the payload is the sensor's bytes unchanged, `datacontenttype` travels in the MQTT 5 Content
 * Type property and every other attribute as a User Property of the same name. A receiver that
 * only wants the data reads the payload as the sensor sent it.
 *
 * sluice's own events (epoch, gap) stay structured JSON CloudEvents on the events topic.
 */
export function cloudEventsBinary (templates: TopicTemplates): UpstreamFormat {
  return {
    name: 'cloudevents-binary',
    lingerMs: 0,
    maxEntries: 1,
    take: () => ({ count: 1, open: false }),
    encode: (entries) => {
      const entry = entries[0]
      if (entry.kind !== 'reading') return structuredEvent(entry, templates)
      const payload = Buffer.from(entry.payload.buffer, entry.payload.byteOffset, entry.payload.byteLength)
      return {
        topic: readingTopic(templates, entry.topic),
        payload,
        properties: {
          // The same rule as the structured mode's: JSON objects and arrays say so, anything else is opaque.
          contentType: isJsonDocument(entry.payload) ? 'application/json' : 'application/octet-stream',
          userProperties: readingAttributes(entry, templates.gateway)
        }
      }
    }
  }
}
