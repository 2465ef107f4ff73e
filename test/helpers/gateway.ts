/**
 * A real gateway built in-process (real aedes, real LevelDB in a temp dir, real MQTT upstream),
 * torn down at the end of the test.
 */
import { validateConfig } from '../../config/index.js'
import { Gateway, type GatewayContext } from '../../daemon/gateway.js'
import { createLogger } from '../../daemon/logger.js'
import type { TestLike } from './mosquitto.js'

export interface TestGatewayOptions extends Partial<Omit<GatewayContext, 'config' | 'logger'>> {
  upstreamUrl: string
  bufferPath: string
  /** extra config keys merged into the upstream section */
  upstream?: Record<string, unknown>
  buffer?: Record<string, unknown>
  /** extra config keys merged into ingest.broker */
  broker?: Record<string, unknown>
  gatewayId?: string
}

export function testConfig (o: TestGatewayOptions): ReturnType<typeof validateConfig> {
  return validateConfig({
    gateway: { id: o.gatewayId ?? 'gw-test' },
    ingest: { broker: { listen: '127.0.0.1:0', ...o.broker } },
    buffer: { path: o.bufferPath, ...o.buffer },
    upstream: { url: o.upstreamUrl, backoff: { min: '50ms', max: '500ms' }, ...o.upstream },
    admin: { listen: '127.0.0.1:0' },
    health: { enabled: false },
    log: { level: 'silent' }
  })
}

export async function startGateway (t: TestLike, o: TestGatewayOptions): Promise<Gateway & { sensorUrl: string }> {
  const { upstreamUrl: _u, bufferPath: _b, upstream: _up, buffer: _buf, broker: _br, gatewayId: _g, ...context } = o
  const gateway = await Gateway.start({ config: testConfig(o), logger: createLogger('silent'), ...context })
  t.teardown(async () => { await gateway.close() })
  const { port } = o.broker?.listen === null ? { port: 0 } : gateway.broker?.address() ?? { port: 0 }
  return Object.assign(gateway, { sensorUrl: `mqtt://127.0.0.1:${port}` })
}
