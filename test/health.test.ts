/**
 * Health readings: the gateway's own figures go upstream as readings of their own, through the
 * buffer and the forwarder like any sensor's, to a real mosquitto.
 */
import t, { type Test } from 'tap'
import mqtt from 'mqtt'
import { ConfigError, validateConfig } from '../config/index.js'
import { Gateway } from '../daemon/gateway.js'
import { createLogger } from '../daemon/logger.js'
import { SystemAdapter, type HealthReading } from '../adapters/system.js'
import type { Reading } from '../adapters/contract.js'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy } from './helpers/proxy.js'
import { startReceiver, type ReceivedMessage } from './helpers/receiver.js'
import { waitUntil } from './helpers/wait.js'
import { freePort } from './helpers/ports.js'

const HEALTH_TOPIC = 'sluice/gw-health/$sluice/health'

async function startHealthGateway (t: Test, upstreamUrl: string, health: Record<string, unknown>): Promise<{ gateway: Gateway, sensorUrl: string, bufferPath: string }> {
  const bufferPath = `${t.testdir()}/buffer`
  const config = validateConfig({
    gateway: { id: 'gw-health' },
    // Only sensors/# is forwarded: the health readings must still go, they are not sensor topics.
    ingest: { broker: { listen: '127.0.0.1:0' }, topics: ['sensors/#'] },
    buffer: { path: bufferPath },
    upstream: { url: upstreamUrl, backoff: { min: '50ms', max: '500ms' } },
    health,
    admin: { enabled: false },
    log: { level: 'silent' }
  })
  const gateway = await Gateway.start({ config, logger: createLogger('silent') })
  t.teardown(async () => { await gateway.close() })
  return { gateway, sensorUrl: `mqtt://127.0.0.1:${gateway.broker?.address().port ?? 0}`, bufferPath }
}

function healthOf (msgs: ReceivedMessage[]): Array<{ seq: number, data: HealthReading }> {
  return msgs.filter((m) => m.topic === HEALTH_TOPIC).map((m) => ({ seq: Number(m.json.sequence), data: m.json.data }))
}

t.test('health readings go upstream through the normal path, with plausible figures', async (t) => {
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const { gateway, sensorUrl, bufferPath } = await startHealthGateway(t, link.url, { interval: '200ms' })

  await receiver.waitFor((msgs) => healthOf(msgs).length >= 3, 15_000, 'three health readings')
  const first = receiver.messages.find((m) => m.topic === HEALTH_TOPIC)
  t.match(first?.json, {
    type: 'io.sluice.reading',
    source: 'sluice://gw-health',
    subject: '$sluice/health',
    datacontenttype: 'application/json'
  }, 'a CloudEvent like any reading')
  for (const { data } of healthOf(receiver.messages).slice(0, 3)) {
    t.ok(data.memory.totalBytes !== null && data.memory.totalBytes > 0, 'memory total')
    t.ok(data.memory.availableBytes !== null && data.memory.availableBytes > 0 && data.memory.availableBytes <= (data.memory.totalBytes ?? 0), 'memory available')
    t.ok(data.memory.processRssBytes > 10 * 1024 * 1024, 'the process\'s resident memory')
    t.ok(data.uptimeSeconds.system !== null && data.uptimeSeconds.system > 0, 'system uptime')
    t.ok(data.uptimeSeconds.process > 0, 'process uptime')
    t.equal(data.disk.path, bufferPath, 'disk measured on the buffer\'s volume')
    t.ok(data.disk.freeBytes !== null && data.disk.freeBytes > 0 && data.disk.freeBytes <= (data.disk.totalBytes ?? 0), 'disk free')
    t.ok(data.temperatureCelsius === null || (data.temperatureCelsius > -40 && data.temperatureCelsius < 150),
      `temperature: ${String(data.temperatureCelsius)} (null where the hardware has no sensor)`)
    t.ok(data.cpu.loadPercent === null || (data.cpu.loadPercent >= 0 && data.cpu.loadPercent <= 100), `cpu load ${String(data.cpu.loadPercent)}%`)
    t.ok(data.cpu.loadAverage1m !== null && data.cpu.loadAverage1m >= 0, 'load average')
    t.equal(typeof data.backlog.readings, 'number', 'backlog')
  }

  // Sensor readings and health readings share one seq stream: together they are contiguous.
  const client = await mqtt.connectAsync(sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await client.endAsync(true) })
  for (let n = 0; n < 20; n++) {
    await client.publishAsync('sensors/s1/temp', JSON.stringify({ sensor: 's1', n }), { qos: 1 })
    await client.publishAsync('local/only', 'not forwarded', { qos: 1 })
  }
  const forwardedSeqs = (msgs: ReceivedMessage[]): number[] =>
    msgs.filter((m) => m.json?.type === 'io.sluice.reading').map((m) => Number(m.json.sequence))
  await receiver.waitFor((msgs) => msgs.filter((m) => m.topic === 'sluice/gw-health/sensors/s1/temp').length === 20, 10_000, '20 sensor readings')
  const last = gateway.stats().lastSeq
  await receiver.waitFor((msgs) => new Set(forwardedSeqs(msgs)).size >= last, 10_000, `every seq up to ${last}`)
  const seqs = [...new Set(forwardedSeqs(receiver.messages))].sort((a, b) => a - b)
  t.strictSame(seqs.slice(0, last), Array.from({ length: last }, (_, i) => i + 1), 'seq 1..N with no gap, health and sensor readings interleaved')
  t.equal(receiver.messages.filter((m) => m.topic.endsWith('local/only')).length, 0, 'ingest.topics still filters sensors')
  t.ok(gateway.stats().ingested.system >= 3, 'counted as the system adapter\'s readings')

  // During an outage the readings pile up with the rest, and tell of the backlog.
  link.cut()
  await waitUntil(() => !gateway.stats().upstreamConnected, 10_000, 'the outage to be noticed')
  for (let n = 20; n < 50; n++) await client.publishAsync('sensors/s1/temp', JSON.stringify({ sensor: 's1', n }), { qos: 1 })
  const taken = gateway.stats().ingested.system
  await waitUntil(() => gateway.stats().ingested.system >= taken + 2, 10_000, 'health readings during the outage')
  link.restore()
  await receiver.waitFor((msgs) => healthOf(msgs).some((h) => h.data.backlog.readings >= 30), 15_000, 'a health reading that saw the backlog')
  const during = healthOf(receiver.messages).find((h) => h.data.backlog.readings >= 30)
  t.ok((during?.data.backlog.oldestUnsentAgeSeconds ?? 0) > 0, 'with the age of the oldest unsent reading')
  t.ok((during?.data.backlog.bytes ?? 0) > 0, 'and the buffer\'s size on disk')
})

t.test('health.interval has a floor; health.enabled: false takes none; both change live', async (t) => {
  const base = { gateway: { id: 'gw' }, upstream: { url: 'mqtt://127.0.0.1:1883' } }
  t.throws(() => validateConfig({ ...base, health: { interval: '50ms' } }), ConfigError)
  try {
    validateConfig({ ...base, health: { interval: '50ms' } })
  } catch (err) {
    t.strictSame((err as ConfigError).errors, [{ path: 'health.interval', message: 'must be at least 100ms' }])
  }
  t.equal(validateConfig({ ...base, health: { interval: '100ms' } }).health.interval, 100)

  const { gateway } = await startHealthGateway(t, `mqtt://127.0.0.1:${await freePort()}`, { enabled: false })
  t.notOk(gateway.ingestInfo().some((a) => a.name === 'system'), 'no system adapter')
  await gateway.setHealth({ enabled: true, interval: 100 })
  t.match(gateway.ingestInfo(), [{ name: 'broker' }, { name: 'system', intervalMs: 100 }])
  await waitUntil(() => (gateway.stats().ingested.system ?? 0) >= 2, 10_000, 'health readings once enabled')
  await gateway.setHealth({ enabled: true, interval: 60_000 })
  t.match(gateway.ingestInfo(), [{ name: 'broker' }, { name: 'system', intervalMs: 60_000 }])
  await gateway.setHealth({ enabled: false, interval: 60_000 })
  t.notOk(gateway.ingestInfo().some((a) => a.name === 'system'), 'stopped')
})

t.test('a reading being taken when the adapter closes is not appended', async (t) => {
  const appended: Reading[] = []
  let release: () => void = () => {}
  let asked = 0
  const adapter = new SystemAdapter({
    sink: { append: (r) => { appended.push(r); return { seq: appended.length, durable: Promise.resolve() } } },
    intervalMs: 100,
    diskPath: t.testdir(),
    backlog: async () => {
      asked++
      await new Promise<void>((resolve) => { release = resolve })
      return { readings: 0, bytes: null, oldestUnsentAgeSeconds: null }
    },
    logger: createLogger('silent')
  })
  await adapter.start()
  await waitUntil(() => asked === 1, 5000, 'a reading to begin')
  const closed = adapter.close()
  release()
  await closed
  t.equal(appended.length, 0, 'nothing appended after close began')
  t.equal(asked, 1, 'and no further reading scheduled')
})
