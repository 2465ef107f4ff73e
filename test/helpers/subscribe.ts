/**
 * A gateway built in-process that takes its readings from a local broker (ingest.subscribe),
 * with the embedded broker off by default; and the config the spawned daemon gets for the same.
 */
import { validateConfig, type SluiceConfigInput } from '../../config/index.js'
import { Gateway, type GatewayContext } from '../../daemon/gateway.js'
import { createLogger } from '../../daemon/logger.js'
import type { TestLike } from './mosquitto.js'

export interface SubscribeGatewayOptions extends Partial<Omit<GatewayContext, 'config' | 'logger'>> {
  upstreamUrl: string
  bufferPath: string
  /** the ingest.subscribe entries */
  subscribe: Array<Record<string, unknown>>
  /** ingest.topics (default ["#"]) */
  topics?: string[]
  gatewayId?: string
}

/** The config, as the YAML file would hold it: no health readings, no admin endpoint. */
export function subscribeConfig (o: Omit<SubscribeGatewayOptions, keyof GatewayContext>): SluiceConfigInput {
  return {
    gateway: { id: o.gatewayId ?? 'gw-sub' },
    ingest: { broker: { enabled: false }, subscribe: o.subscribe, topics: o.topics ?? ['#'] },
    buffer: { path: o.bufferPath },
    upstream: { url: o.upstreamUrl, backoff: { min: '50ms', max: '500ms' } },
    // Health readings would take seqs of their own, and the admin endpoint a fixed port.
    health: { enabled: false },
    admin: { enabled: false },
    log: { level: 'silent' }
  } as SluiceConfigInput
}

export async function startSubscribeGateway (t: TestLike, o: SubscribeGatewayOptions): Promise<Gateway> {
  const { upstreamUrl, bufferPath, subscribe, topics, gatewayId, ...context } = o
  const config = validateConfig(subscribeConfig({ upstreamUrl, bufferPath, subscribe, topics, gatewayId }))
  const gateway = await Gateway.start({ config, logger: createLogger('silent'), ...context })
  t.teardown(async () => { await gateway.close() })
  return gateway
}
