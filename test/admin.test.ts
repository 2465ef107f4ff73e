/**
 * The admin endpoint of an in-process gateway (real aedes, real LevelDB, real mosquitto upstream):
 * /metrics follows readings through ingest, the buffer and the upstream; /readyz says why the
 * gateway does not accept readings; /status is the same story as JSON.
 */
import t, { type Test } from 'tap'
import { createServer } from 'node:net'
import { Writable } from 'node:stream'
import mqtt from 'mqtt'
import { validateConfig } from '../config/index.js'
import { Gateway, type GatewayContext } from '../daemon/gateway.js'
import { createLogger } from '../daemon/logger.js'
import type { StatusReport } from '../daemon/status.js'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy } from './helpers/proxy.js'
import { startReceiver } from './helpers/receiver.js'
import { readingArrivals, startSensors } from './helpers/sensors.js'
import { waitUntil } from './helpers/wait.js'
import { freePort } from './helpers/ports.js'

const SECRET = 'pw-admin-7f3c9a'

interface Started { gateway: Gateway, base: string, sensorUrl: string }

let gateways = 0

async function start (t: Test, o: { upstreamUrl: string, context?: Partial<GatewayContext>, admin?: Record<string, unknown>, logger?: GatewayContext['logger'] }): Promise<Started> {
  const config = validateConfig({
    gateway: { id: 'gw-admin' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: `${t.testdir()}/buffer-${++gateways}` },
    upstream: { url: o.upstreamUrl, backoff: { min: '50ms', max: '500ms' }, username: 'gw', password: SECRET },
    health: { enabled: false },
    admin: { listen: '127.0.0.1:0', ...o.admin },
    log: { level: 'silent' }
  })
  const gateway = await Gateway.start({ config, logger: o.logger ?? createLogger('silent'), ...o.context })
  t.teardown(async () => { await gateway.close() })
  const admin = gateway.adminAddress()
  const broker = gateway.broker?.address()
  return { gateway, base: admin === null ? '' : `http://127.0.0.1:${admin.port}`, sensorUrl: `mqtt://127.0.0.1:${broker?.port ?? 0}` }
}

async function get (base: string, path: string, init?: RequestInit): Promise<{ status: number, type: string, text: string }> {
  const res = await fetch(`${base}${path}`, init)
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() }
}

/** One sample of a Prometheus text exposition: `name` with exactly these labels (all, any order). */
function sample (text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const got: Record<string, string> = {}
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[k] = v
    if (JSON.stringify(Object.entries(got).sort()) === JSON.stringify(Object.entries(labels).sort())) return Number(m[3])
  }
  return undefined
}

/** Polls an async condition (an HTTP answer) until it holds. */
async function pollUntil (predicate: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

async function metrics (base: string): Promise<string> {
  const res = await get(base, '/metrics')
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`)
  return res.text
}

async function status (base: string): Promise<StatusReport> {
  return JSON.parse((await get(base, '/status')).text) as StatusReport
}

t.test('/metrics and /status follow readings through ingest, an outage and the drain', async (t) => {
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  let clockOffset = 0
  const { gateway, base, sensorUrl } = await start(t, { upstreamUrl: link.url, context: { clock: () => Date.now() + clockOffset } })

  t.strictSame(await get(base, '/healthz'), { status: 200, type: 'text/plain; charset=utf-8', text: 'ok\n' })
  t.equal((await get(base, '/readyz')).status, 200)
  await waitUntil(() => gateway.stats().upstreamConnected, 10_000, 'the upstream connection')

  // Online: 200 readings straight through.
  const online = await startSensors(t, sensorUrl, { count: 2, inflight: 10, readingsPerSensor: 100 })
  await online.finished()
  await waitUntil(() => gateway.stats().forwarded === 200, 15_000, '200 readings acknowledged upstream')
  let text = await metrics(base)
  t.match((await get(base, '/metrics')).type, /^text\/plain; version=0\.0\.4/)
  t.equal(sample(text, 'sluice_ingested_readings_total', { adapter: 'broker' }), 200, 'ingested, by adapter')
  t.equal(sample(text, 'sluice_upstream_acknowledged_readings_total'), 200, 'acknowledged upstream')
  t.ok((sample(text, 'sluice_upstream_published_messages_total') ?? 0) >= 200, 'published')
  t.equal(sample(text, 'sluice_backlog_readings'), 0)
  t.equal(sample(text, 'sluice_oldest_unsent_age_seconds'), 0, 'nothing unsent')
  t.equal(sample(text, 'sluice_upstream_connected'), 1)
  t.equal(sample(text, 'sluice_upstream_reconnects_total'), 0)
  t.equal(sample(text, 'sluice_commit_readings_sum'), 200, 'every reading went through a group commit')
  const commits = sample(text, 'sluice_commit_duration_seconds_count') ?? 0
  t.ok(commits >= 1 && commits <= 200, `${commits} group commits`)
  t.ok((sample(text, 'sluice_commit_duration_seconds_sum') ?? 0) > 0, 'commit latency measured')
  t.ok((sample(text, 'sluice_buffer_written_bytes_total') ?? 0) > 200 * 20, 'bytes written to disk counted')
  t.ok((sample(text, 'sluice_backlog_bytes') ?? 0) > 0, 'the buffer\'s size on disk')
  t.ok((sample(text, 'sluice_disk_free_bytes') ?? 0) > 0, 'free disk')
  t.equal(sample(text, 'sluice_dropped_readings_total', { reason: 'overflow' }), 0, 'drop reasons shown before any drop')
  t.equal(sample(text, 'sluice_refused_total', { reason: 'bad-topic' }), 0)
  t.equal(sample(text, 'sluice_ready'), 1)
  t.equal(sample(text, 'sluice_info', { gateway: 'gw-admin', epoch: gateway.stats().epoch, version: '0.1.0' }), 1)
  t.ok((sample(text, 'process_resident_memory_bytes') ?? 0) > 0, 'process metrics too')

  // Outage: the backlog grows on disk and ages.
  link.cut()
  await waitUntil(() => !gateway.stats().upstreamConnected, 10_000, 'the gateway to notice the outage')
  const during = await startSensors(t, sensorUrl, { count: 1, inflight: 10, readingsPerSensor: 50 })
  await during.finished()
  clockOffset = 30_000 // the backlog's oldest reading is now 30 s old, as far as the gateway can tell
  text = await metrics(base)
  t.equal(sample(text, 'sluice_upstream_connected'), 0)
  t.equal(sample(text, 'sluice_backlog_readings'), 50)
  const age = sample(text, 'sluice_oldest_unsent_age_seconds') ?? 0
  t.ok(age >= 30 && age < 60, `oldest unsent ${age} s`)
  t.equal(sample(text, 'sluice_ready'), 1, 'an upstream outage is what sluice is for: still ready')
  const report = await status(base)
  t.match(report, {
    gateway: 'gw-admin',
    state: 'open',
    ready: true,
    reasons: [],
    upstream: { connected: false },
    buffer: { lastSeq: 250, backlog: { readings: 50 } },
    totals: { ingested: { broker: 250 }, forwarded: 200, dropped: { overflow: 0, ttl: 0, rejected: 0 } }
  })
  t.ok((report.buffer.backlog.oldestUnsentAgeSeconds ?? 0) >= 30)
  t.ok(report.rates.ingestPerSecond > 0, `ingest rate ${report.rates.ingestPerSecond}/s`)

  // Drain: reconnect, resend, everything acknowledged.
  link.restore()
  await waitUntil(() => gateway.stats().forwarded === 250 && gateway.stats().backlog === 0, 20_000, 'the backlog to drain')
  await receiver.waitFor((msgs) => new Set(readingArrivals(msgs).map((a) => a.seq)).size === 250, 10_000, '250 readings upstream')
  text = await metrics(base)
  t.ok((sample(text, 'sluice_upstream_reconnects_total') ?? 0) >= 1, 'the reconnect counted')
  t.equal(sample(text, 'sluice_upstream_acknowledged_readings_total'), 250)
  t.equal(sample(text, 'sluice_backlog_readings'), 0)
  t.equal(sample(text, 'sluice_oldest_unsent_age_seconds'), 0)

  const everything = text + JSON.stringify(await status(base)) + (await get(base, '/readyz')).text
  t.notMatch(everything, SECRET, 'no secret on any route')
})

t.test('refused publishes are counted by reason', async (t) => {
  const { base, sensorUrl } = await start(t, { upstreamUrl: `mqtt://127.0.0.1:${await freePort()}` })
  const client = await mqtt.connectAsync(sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await client.endAsync(true) })
  const closed = new Promise<void>((resolve) => client.once('close', () => { resolve() }))
  client.publish('sensors/bad\u0001topic', 'x', { qos: 1 })
  await closed
  const text = await metrics(base)
  t.equal(sample(text, 'sluice_refused_total', { reason: 'bad-topic' }), 1)
  t.equal(sample(text, 'sluice_ingested_readings_total', { adapter: 'broker' }), 0, 'nothing reached the buffer')
})

t.test('/readyz: 503 with the reason while buffer writes fail, 200 once they succeed', async (t) => {
  let failing = false
  const { gateway, base, sensorUrl } = await start(t, {
    upstreamUrl: `mqtt://127.0.0.1:${await freePort()}`,
    context: { beforeCommit: async () => { if (failing) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }) } }
  })
  t.equal((await get(base, '/readyz')).status, 200)
  failing = true
  const client = await mqtt.connectAsync(sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await client.endAsync(true) })
  let acked = false
  const puback = client.publishAsync('sensors/s1/temp', '{"c":20}', { qos: 1 }).then(() => { acked = true })
  await pollUntil(async () => (await get(base, '/readyz')).status === 503, 10_000, '/readyz to say 503')
  t.match((await get(base, '/readyz')).text, /^not ready: writes to the buffer fail: .*ENOSPC/)
  const report = await status(base)
  t.equal(report.ready, false)
  t.match(report.reasons, [/writes to the buffer fail/])
  t.equal(sample(await metrics(base), 'sluice_ready'), 0)
  t.notOk(acked, 'no PUBACK while the reading is not on disk')
  t.equal(gateway.status, 'open', 'still running: the fault is reported, not fatal')
  failing = false
  await pollUntil(async () => (await get(base, '/readyz')).status === 200, 15_000, '/readyz to recover')
  await puback
  t.ok(acked, 'the reading was written and acknowledged')
})

t.test('/readyz: 503 while the disk is full', async (t) => {
  let free = 10 * 1024 ** 3
  const { base } = await start(t, {
    upstreamUrl: `mqtt://127.0.0.1:${await freePort()}`,
    context: { diskSpace: async () => ({ freeBytes: free, totalBytes: 16 * 1024 ** 3 }) }
  })
  t.equal((await get(base, '/readyz')).status, 200)
  free = 4096
  const ready = await get(base, '/readyz')
  t.equal(ready.status, 503)
  t.match(ready.text, /not ready: the disk is full: 4096 bytes free/)
  t.equal(sample(await metrics(base), 'sluice_disk_free_bytes'), 4096)
  free = 10 * 1024 ** 3
  t.equal((await get(base, '/readyz')).status, 200, 'ready again once space returns')
})

t.test('/readyz: 503 while the gateway is closing', async (t) => {
  let release: () => void = () => {}
  let hold = false
  const { gateway, base, sensorUrl } = await start(t, {
    upstreamUrl: `mqtt://127.0.0.1:${await freePort()}`,
    context: { beforeCommit: async () => { if (hold) await new Promise<void>((resolve) => { release = resolve }) } }
  })
  hold = true
  const client = await mqtt.connectAsync(sensorUrl, { reconnectPeriod: 0 })
  client.publish('sensors/s1/temp', '{"c":20}', { qos: 0 }) // its commit is now held
  await waitUntil(() => gateway.stats().lastSeq === 1, 5000, 'the reading to get its seq')
  await client.endAsync(true)
  const closing = gateway.close() // waits for the held commit
  const ready = await get(base, '/readyz')
  t.equal(ready.status, 503)
  t.match(ready.text, /the gateway is closing/)
  release()
  await closing
  await t.rejects(fetch(`${base}/healthz`), 'the endpoint is gone once the gateway is closed')
})

t.test('HTTP: read-only, 404 elsewhere, HEAD without a body', async (t) => {
  const { base } = await start(t, { upstreamUrl: `mqtt://127.0.0.1:${await freePort()}` })
  t.equal((await get(base, '/nope')).status, 404)
  const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' })
  t.equal(post.status, 405)
  t.equal(post.headers.get('allow'), 'GET, HEAD')
  await post.text()
  const head = await fetch(`${base}/metrics`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(await head.text(), '')
  t.equal((await get(base, '/status?x=1')).status, 200, 'a query string is ignored')
})

t.test('two gateways in one process keep their own metrics', async (t) => {
  const upstreamUrl = `mqtt://127.0.0.1:${await freePort()}`
  const a = await start(t, { upstreamUrl })
  const b = await start(t, { upstreamUrl })
  const client = await mqtt.connectAsync(a.sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await client.endAsync(true) })
  for (let i = 0; i < 3; i++) await client.publishAsync('sensors/s1/temp', String(i), { qos: 1 })
  const textA = await metrics(a.base)
  t.equal(sample(textA, 'sluice_ingested_readings_total', { adapter: 'broker' }), 3)
  t.equal(sample(textA, 'sluice_backlog_readings'), 3, 'a fresh buffer\'s backlog: nothing acknowledged yet')
  t.equal(sample(await metrics(b.base), 'sluice_ingested_readings_total', { adapter: 'broker' }), 0)
})

t.test('an admin port already in use is logged, not fatal; setAdmin serves on a new address', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { blocker.close() })
  const taken = (blocker.address() as { port: number }).port
  const lines: Array<{ msg: string, err?: string }> = []
  const sink = new Writable({ write (chunk, _enc, done) { lines.push(JSON.parse(String(chunk))); done() } })
  const { gateway, sensorUrl } = await start(t, { upstreamUrl: `mqtt://127.0.0.1:${await freePort()}`, admin: { listen: `127.0.0.1:${taken}` }, logger: createLogger('error', sink) })
  t.equal(gateway.adminAddress(), null, 'no endpoint')
  t.match(lines, [{ msg: /admin endpoint could not listen/, err: /EADDRINUSE/ }])
  const client = await mqtt.connectAsync(sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await client.endAsync(true) })
  await client.publishAsync('sensors/s1/temp', '1', { qos: 1 })
  t.equal(gateway.stats().lastSeq, 1, 'readings are still taken')

  await gateway.setAdmin({ enabled: true, listen: { host: '127.0.0.1', port: 0 } })
  const address = gateway.adminAddress()
  t.ok(address !== null && address.port !== taken, 'now serving')
  t.equal((await get(`http://127.0.0.1:${address?.port ?? 0}`, '/healthz')).status, 200)
  await gateway.setAdmin({ enabled: false, listen: { host: '127.0.0.1', port: 0 } })
  t.equal(gateway.adminAddress(), null)
  await t.rejects(fetch(`http://127.0.0.1:${address?.port ?? 0}/healthz`), 'admin.enabled: false stops it')
})
