import type { SluiceConfig } from '../config/index.js'
import type { UpstreamFormat } from '../adapters/contract.js'
import { cborBatch } from '../adapters/formats/cbor-batch.js'
import { cloudEventsBinary } from '../adapters/formats/cloudevents-binary.js'
import { cloudEventsJson } from '../adapters/formats/cloudevents-json.js'

/** The upstream format upstream.format names, with its topics and batch bounds (docs/receiving.md). */
export function upstreamFormat (config: SluiceConfig): UpstreamFormat {
  const templates = { gateway: config.gateway.id, topic: config.upstream.topic, eventsTopic: config.upstream.eventsTopic }
  switch (config.upstream.format) {
    case 'cloudevents-json':
      return cloudEventsJson(templates)
    case 'cloudevents-binary':
      return cloudEventsBinary(templates)
    case 'cbor-batch': {
      const { maxRecords, maxBytes, maxDelay } = config.upstream.batch
      return cborBatch(templates, { maxRecords, maxBytes, maxDelayMs: maxDelay })
    }
  }
}
