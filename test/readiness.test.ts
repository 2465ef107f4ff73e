/**
 * Readiness of a gateway that takes its readings from a local broker: /readyz follows the
 * subscription, and the gateway's own health readings, which keep coming whatever happens to the
 * local broker, never make it ready on their own.
 */
import t from 'tap'
import { validateConfig } from '../config/index.js'
import { Gateway } from '../daemon/gateway.js'
import { createLogger } from '../daemon/logger.js'
import { startMosquitto } from './helpers/mosquitto.js'
import { subscribeConfig } from './helpers/subscribe.js'
import { waitUntil } from './helpers/wait.js'

/** Polls /readyz until its answer satisfies `wanted`; returns that answer. */
async function readyzUntil (base: string, wanted: (status: number, body: string) => boolean, what: string): Promise<{ status: number, body: string }> {
  const deadline = Date.now() + 15_000
  for (;;) {
    const res = await fetch(new URL('/readyz', base))
    const answer = { status: res.status, body: await res.text() }
    if (wanted(answer.status, answer.body)) return answer
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; /readyz last said ${answer.status} ${answer.body}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

t.test('a subscription-only gateway is not ready while its local broker is gone, health readings or not', async (t) => {
  const upstream = await startMosquitto(t)
  const local = await startMosquitto(t)
  const config = validateConfig({
    ...subscribeConfig({ upstreamUrl: upstream.url, bufferPath: t.testdir(), subscribe: [{ url: local.url, topics: ['sensors/#'] }] }),
    health: { enabled: true, interval: '100ms' },
    admin: { listen: '127.0.0.1:0' }
  })
  const gateway = await Gateway.start({ config, logger: createLogger('silent') })
  t.teardown(async () => { await gateway.close() })
  const admin = gateway.adminAddress()
  if (admin === null) throw new Error('no admin endpoint')
  const base = `http://127.0.0.1:${admin.port}`

  t.equal((await readyzUntil(base, (status) => status === 200, 'ready')).body, 'ready\n', 'ready while subscribed')
  await local.kill()
  const down = await readyzUntil(base, (status) => status === 503, 'not ready')
  t.equal(down.body, 'not ready: no ingest adapter is listening\n', 'the one reason: the health adapter does not count')
  const taken = gateway.stats().ingested.system ?? 0
  await waitUntil(() => (gateway.stats().ingested.system ?? 0) >= taken + 2, 15_000, 'two more health readings')
  t.equal((await fetch(new URL('/readyz', base))).status, 503, 'health readings taken meanwhile do not make it ready')
  await local.restart()
  await readyzUntil(base, (status) => status === 200, 'ready again')
  t.pass('ready again once the subscription is back')
})
