/**
 * The backlog lives on disk, not in memory (docs/guarantees.md §5): the built daemon, spawned, its upstream
 * down (a closed port: the forwarder keeps trying to connect), takes a million readings over
 * MQTT QoS 1 while its resident memory is read from /proc after every tenth of them.
 *
 * This is a behaviour check with a generous bound, not a measurement: a design that kept the
 * backlog in the heap, in MQTT.js's offline queue or in an unbounded read-ahead would hold a
 * million readings (hundreds of MB) and fail it by far. The figures themselves, set beside a
 * store-in-memory baseline, are in `npm run bench` (scenario "backlog").
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect, type MqttClient } from 'mqtt'
import { adminUrl, brokerUrl, startDaemon, writeConfig } from './helpers/daemon.js'
import { freePort } from './helpers/ports.js'

const READINGS = 1_000_000
const CHUNKS = 10
const CLIENTS = 4
const WINDOW = 200
/** RSS may grow by this much from the first tenth to the last: a million readings in memory would take several times more */
const GROWTH_BOUND_MB = 100
const MB = 1024 * 1024

/** The resident set of process `pid`, in bytes, as the kernel counts it. */
function rss (pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'))
  if (line === undefined) throw new Error(`no VmRSS for process ${pid}`)
  return Number(/(\d+)/.exec(line)?.[1]) * 1024
}

/** Publishes `quota` QoS 1 readings, `WINDOW` awaiting their PUBACK at a time; resolves with the PUBACKs counted. */
async function pump (client: MqttClient, topic: string, quota: number, first: number): Promise<number> {
  return await new Promise((resolve, reject) => {
    let sent = 0
    let acked = 0
    const send = (): void => {
      const n = first + sent++
      client.publish(topic, JSON.stringify({ n, t: 21.5 + (n % 100) / 10 }), { qos: 1 }, (err) => {
        if (err !== undefined && err !== null) { reject(err); return }
        acked++
        if (sent < quota) send()
        else if (acked === quota) resolve(acked)
      })
    }
    while (sent < quota && sent < WINDOW) send()
  })
}

t.test(`a backlog of ${READINGS} readings sent over MQTT stays on disk: the spawned daemon's memory stays flat`, async (t) => {
  const dir = t.testdir()
  const config = writeConfig(dir, {
    gateway: { id: 'gw-memory' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: join(dir, 'buffer'), sync: 'interval' },
    upstream: { url: `mqtt://127.0.0.1:${await freePort()}`, backoff: { min: '100ms', max: '1s' } },
    health: { enabled: false },
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info' }
  })
  const daemon = await startDaemon(t, config)
  const pid = daemon.child.pid as number
  const clients = await Promise.all(Array.from({ length: CLIENTS }, async (_, i) => {
    const client = connect(brokerUrl(daemon), { clientId: `memory-sensor-${i}`, reconnectPeriod: 0 })
    await new Promise<void>((resolve, reject) => { client.once('connect', () => { resolve() }); client.once('error', reject) })
    return client
  }))
  t.teardown(async () => { await Promise.all(clients.map(async (c) => { await c.endAsync(true) })) })

  const samples: Array<{ readings: number, rssMB: number }> = []
  let acked = 0
  const perClient = READINGS / CHUNKS / CLIENTS
  for (let chunk = 0; chunk < CHUNKS; chunk++) {
    const counts = await Promise.all(clients.map(async (c, i) => await pump(c, `sensors/s${i}/temp`, perClient, chunk * perClient)))
    acked += counts.reduce((a, b) => a + b, 0)
    samples.push({ readings: acked, rssMB: rss(pid) / MB })
  }
  t.equal(acked, READINGS, `${READINGS} readings PUBACKed to the sensors`)

  const status = await (await fetch(`${adminUrl(daemon)}/status`)).json() as any
  t.equal(status.buffer.backlog.readings, READINGS, 'all of them are in the buffer, none forwarded (the upstream is down)')
  t.equal(status.upstream.connected, false, 'the upstream stayed down')

  const growth = samples[samples.length - 1].rssMB - samples[0].rssMB
  const peak = Math.max(...samples.map((s) => s.rssMB))
  t.comment(`RSS (MB) by readings buffered: ${samples.map((s) => `${s.readings / 1000}k ${s.rssMB.toFixed(0)}`).join(', ')}`)
  t.ok(growth < GROWTH_BOUND_MB, `RSS grew ${growth.toFixed(1)} MB from ${samples[0].readings} to ${READINGS} readings buffered (bound ${GROWTH_BOUND_MB} MB); peak ${peak.toFixed(0)} MB`)
  t.equal(daemon.child.exitCode, null, 'the daemon is still running')
  t.equal((await daemon.kill('SIGTERM')).code, 0, 'and stops cleanly')
})
