/**
 * The subscribe ingest adapter (ingest.subscribe): sluice as a client of an existing local broker.
 * A real mosquitto is the local broker the sensors publish to, a second one is the upstream; the
 * readings the sensors had PUBACKed by the local broker are what must arrive upstream.
 */
import t, { type Test } from 'tap'
import { createServer } from 'node:net'
import { writeFileSync } from 'node:fs'
import { appendFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Aedes } from 'aedes'
import { connect, type MqttClient } from 'mqtt'
import { ConfigError, validateConfig } from '../config/index.js'
import { createLogger } from '../daemon/logger.js'
import { RecentDeliveries, deliveryFileName, digestOf, fileDeliveryStore } from '../adapters/subscribe-deliveries.js'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy } from './helpers/proxy.js'
import { startMuteProxy } from './helpers/mute-proxy.js'
import { startReceiver } from './helpers/receiver.js'
import { readingArrivals, readingKey, startSensors } from './helpers/sensors.js'
import { startDaemon, writeConfig } from './helpers/daemon.js'
import { checkDelivered } from './helpers/delivery.js'
import { startSubscribeGateway, subscribeConfig } from './helpers/subscribe.js'
import { waitUntil } from './helpers/wait.js'

/** Here the local broker, not sluice's, acknowledged the readings; one epoch, no seq missing. */
const LOCAL = { ackedBy: 'locally acknowledged', oneEpoch: true }

async function publisher (t: Test, url: string): Promise<MqttClient> {
  const client = connect(url, { reconnectPeriod: 0, clientId: `pub-${Math.random().toString(16).slice(2, 10)}` })
  t.teardown(async () => { await client.endAsync(true) })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => { resolve() })
    client.once('error', reject)
  })
  return client
}

/**
 * Holds the buffer's group commits open (a stuck disk) from hold() until release(). Teardowns
 * run last-registered first, so the one hold() adds releases the commit before the gateway's
 * close waits for it, even when the test failed halfway.
 */
function commitGate (t: Test): { started: () => number, beforeCommit: () => Promise<void>, hold: () => void, release: () => void } {
  let gate: Promise<void> | null = null
  let open = (): void => {}
  let started = 0
  return {
    started: () => started,
    beforeCommit: async () => { started++; if (gate !== null) await gate },
    hold: () => {
      gate = new Promise<void>((resolve) => { open = resolve })
      t.teardown(() => { open() })
    },
    release: () => { open() }
  }
}

/** Publishes `count` numbered QoS 1 readings as sensor `sensor`, resolving once each is PUBACKed. */
async function publishNumbered (client: MqttClient, sensor: string, from: number, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, async (_, i) =>
    await client.publishAsync(`sensors/${sensor}/temp`, JSON.stringify({ sensor, n: from + i }), { qos: 1 })))
}

t.test('config: ingest.subscribe is built; the embedded broker may be off when a subscription exists', async (t) => {
  const base = { gateway: { id: 'gw-7' }, upstream: { url: 'mqtt://127.0.0.1:1883' } }
  const config = validateConfig({
    ...base,
    ingest: {
      broker: { enabled: false },
      subscribe: [
        { url: 'mqtt://127.0.0.1:1884', topics: ['sensors/#'] },
        { url: 'mqtt://127.0.0.1:1885', topics: ['a/#', 'b/#'], clientId: 'mine', qos: 0, username: 'u', passwordFile: '/etc/x' }
      ]
    }
  })
  t.same(config.ingest.subscribe, [
    { url: 'mqtt://127.0.0.1:1884', topics: ['sensors/#'], clientId: 'gw-7-ingest', qos: 1 },
    { url: 'mqtt://127.0.0.1:1885', topics: ['a/#', 'b/#'], clientId: 'mine', qos: 0, username: 'u', passwordFile: '/etc/x' }
  ], 'defaults: a client id from the gateway id, QoS 1')
  t.same(validateConfig(base).ingest.subscribe, [], 'no subscription unless configured')

  const errors = (raw: unknown): string[] => {
    try {
      validateConfig(raw)
    } catch (err) {
      return (err as ConfigError).errors.map((e) => `${e.path}: ${e.message}`)
    }
    return []
  }
  t.same(errors({ ...base, ingest: { broker: { enabled: false } } }), [
    'ingest.broker.enabled: at least one ingest must be enabled: the embedded broker, or an ingest.subscribe entry'
  ])
  t.same(errors({
    ...base,
    ingest: {
      subscribe: [
        { url: 'mqtt://h:1', topics: ['#'], clientId: 'same', password: 'p', passwordFile: '/p' },
        { url: 'mqtt://h:2', topics: [], clientId: 'same', qos: 2, extra: true }
      ]
    }
  }).sort(), [
    'ingest.subscribe[0].password: give either password or passwordFile, not both',
    'ingest.subscribe[1].extra: unknown key',
    'ingest.subscribe[1].clientId: the same clientId as ingest.subscribe[0] ("same"); each subscription needs its own session',
    'ingest.subscribe[1].qos: expected 0 or 1, got 2',
    'ingest.subscribe[1].topics: expected at least 1 item, got an empty list'
  ].sort())
})

t.test('the record of recent deliveries: trusted after a crash, not after a power loss, a lost commit or a torn write', async (t) => {
  const dir = t.testdir()
  const file = join(dir, deliveryFileName('mqtt://local:1883', 'gw-ingest'))
  const epoch = 'ab'.repeat(16)
  const logger = createLogger('silent')
  const open = (o: { epoch?: string, recoveredSeq: number, distrust?: string }): RecentDeliveries =>
    RecentDeliveries.open({ store: fileDeliveryStore(file), url: 'mqtt://local:1883', clientId: 'gw-ingest', epoch: o.epoch ?? epoch, recoveredSeq: o.recoveredSeq, distrust: o.distrust, logger })
  const digest = (n: number): Buffer => digestOf('sensors/a', Buffer.from(String(n)))

  const first = open({ recoveredSeq: 0 })
  // Packet ids 1..3 got seqs 1..3; id 2 was then reused for another message (seq 4).
  for (const id of [1, 2, 3]) first.record(id, digest(id), id, Promise.resolve())
  first.record(2, digest(20), 4, Promise.resolve())
  // Not closed (that syncs): the process "crashes" here, the file stays as the appends left it.
  t.teardown(() => { first.close() })

  const afterCrash = open({ recoveredSeq: 4 })
  t.equal(afterCrash.redeliveryOf(1, digest(1))?.seq, 1, 'a delivery stored before the crash is recognised')
  t.equal(afterCrash.redeliveryOf(2, digest(20))?.seq, 4, 'a reused packet id means the latest delivery')
  t.equal(afterCrash.redeliveryOf(2, digest(2)), undefined, 'the earlier one with that id was acknowledged')
  t.equal(afterCrash.redeliveryOf(1, digest(9)), undefined, 'another payload under the same id is a new message')
  afterCrash.close()

  const lostCommit = open({ recoveredSeq: 3 })
  t.equal(lostCommit.redeliveryOf(2, digest(20)), undefined, 'seq 4 never became durable: its record is not trusted')
  t.equal(lostCommit.redeliveryOf(3, digest(3))?.seq, 3)
  lostCommit.close()
  const reused = open({ recoveredSeq: 4 })
  t.equal(reused.redeliveryOf(2, digest(20)), undefined, 'and it does not come back once seq 4 is taken by another reading')
  reused.close()

  await appendFile(file, Buffer.from([0x00, 0x03, 0xff, 0xff, 0x12])) // a torn append
  const torn = open({ recoveredSeq: 4 })
  t.equal(torn.redeliveryOf(3, digest(3))?.seq, 3, 'a torn last write leaves the records before it')
  torn.close()

  // Each open rewrites the file with what it kept; so each case below starts from a fresh one.
  const seeded = async (): Promise<void> => {
    const seed = open({ recoveredSeq: 0 })
    seed.record(1, digest(1), 1, Promise.resolve())
    seed.close()
    const check = open({ recoveredSeq: 1 })
    t.equal(check.size, 1, 'seeded')
    check.close()
  }
  await seeded()
  const repaired = open({ recoveredSeq: 4, distrust: 'the buffer was repaired at open' })
  t.equal(repaired.size, 0, 'a repaired buffer discards the record')
  repaired.close()
  await seeded()
  const powerLoss = open({ epoch: 'cd'.repeat(16), recoveredSeq: 4 })
  t.equal(powerLoss.size, 0, 'a new epoch (power loss, new buffer) discards the record')
  powerLoss.close()
  await writeFile(file, Buffer.from('garbage'))
  const unreadable = open({ recoveredSeq: 4 })
  t.equal(unreadable.size, 0, 'an unreadable file is ignored')
  unreadable.close()
})

t.test('readings from the local broker arrive upstream in order, each once; other topics and retained copies are not forwarded', async (t) => {
  const local = await startMosquitto(t)
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const pub = await publisher(t, local.url)
  // A retained value from before sluice subscribed: the broker replays it on every subscription.
  await pub.publishAsync('sensors/old/temp', '{"retained":true}', { qos: 1, retain: true })
  const gateway = await startSubscribeGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    subscribe: [{ url: local.url, topics: ['#'] }],
    topics: ['sensors/#']
  })
  const [adapter] = gateway.subscriptions
  await waitUntil(() => adapter.connected, 10_000, 'the subscription')
  const sensors = await startSensors(t, local.url, { count: 3, inflight: 20, readingsPerSensor: 400 })
  for (let i = 0; i < 5; i++) await pub.publishAsync('dashboard/cmd', `not a reading ${i}`, { qos: 1 })
  await sensors.finished()
  t.equal(sensors.acked.size, 1200)
  await checkDelivered(t, receiver, sensors.acked, LOCAL)
  const arrivals = readingArrivals(receiver.messages)
  t.equal(arrivals.length, 1200, 'no duplicates on a steady link')
  t.same(arrivals.map((a) => a.seq), Array.from({ length: 1200 }, (_, i) => i + 1), 'seq 1..1200 in arrival order')
  for (const sensor of ['s0', 's1', 's2']) {
    const ns = arrivals.filter((a) => a.sensor === sensor).map((a) => a.n)
    t.same(ns, Array.from({ length: 400 }, (_, i) => i), `${sensor}'s readings keep their order`)
  }
  t.notOk(receiver.messages.some((m) => /dashboard|old/.test(String(m.json?.subject))), 'neither the other topic nor the retained copy went upstream')
  await waitUntil(() => adapter.stats.acked === adapter.stats.received, 10_000, 'every message acknowledged to the local broker')
  t.match(adapter.stats, { received: 1206, stored: 1200, skipped: 6, redeliveries: 0 })
  t.equal(gateway.stats().lastSeq, 1200)
})

t.test('the PUBACK to the local broker waits for the group commit', async (t) => {
  const local = await startMosquitto(t, { extraConfig: 'log_type all' })
  const upstream = await startMosquitto(t)
  const commits = commitGate(t)
  const gateway = await startSubscribeGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    subscribe: [{ url: local.url, topics: ['sensors/#'], clientId: 'sluice-held' }],
    beforeCommit: commits.beforeCommit
  })
  const [adapter] = gateway.subscriptions
  await waitUntil(() => adapter.connected, 10_000, 'the subscription')
  commits.hold()
  const pub = await publisher(t, local.url)
  await publishNumbered(pub, 'a', 0, 1)
  // The reading is in a commit held open...
  await waitUntil(() => commits.started() > 0, 10_000, 'the reading in a commit')
  // ...give an early PUBACK every chance to reach mosquitto: one more full round trip of another
  // client through the same broker after that.
  const other = await publisher(t, local.url)
  await other.publishAsync('elsewhere', 'x', { qos: 1 })
  const pubackLine = /Received PUBACK from sluice-held \(Mid: 1/
  t.match(local.logText(), /Sending PUBLISH to sluice-held \(d0, q1, r0, m1,/, 'mosquitto sent the reading')
  t.notMatch(local.logText(), pubackLine, 'no PUBACK while the commit is held open')
  t.equal(adapter.stats.acked, 0)
  commits.release()
  await waitUntil(() => pubackLine.test(local.logText()), 10_000, 'the PUBACK in mosquitto\'s log')
  t.pass('PUBACK once the commit is written')
  t.equal(gateway.stats().lastSeq, 1)
})

t.test('a slow buffer pauses the subscription: the local broker keeps the rest, nothing is lost', async (t) => {
  // mosquitto's own in-flight window (20 by default) would pause it first; unlimited here, so
  // what stops the flow is sluice's window of unacknowledged messages (128).
  const local = await startMosquitto(t, { maxInflightMessages: 0 })
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const commits = commitGate(t)
  const gateway = await startSubscribeGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    subscribe: [{ url: local.url, topics: ['sensors/#'] }],
    beforeCommit: commits.beforeCommit
  })
  const [adapter] = gateway.subscriptions
  await waitUntil(() => adapter.connected, 10_000, 'the subscription')
  commits.hold()
  // A second subscriber on the local broker: once it has every reading, mosquitto has also
  // written to sluice all it was going to.
  const witness = await startReceiver(t, local.url, 'sensors/#')
  const pub = await publisher(t, local.url)
  await publishNumbered(pub, 'p', 0, 2000)
  await witness.waitForCount(2000, 30_000)
  t.ok(adapter.stats.received <= 128, `sluice took ${adapter.stats.received} of 2000 messages while its buffer was stuck`)
  t.ok(adapter.stats.received > 0, 'and did take some')
  t.equal(adapter.stats.acked, 0, 'none acknowledged')
  commits.release()
  await checkDelivered(t, receiver, new Set(Array.from({ length: 2000 }, (_, n) => readingKey('p', n))), LOCAL)
  t.equal(readingArrivals(receiver.messages).length, 2000, 'each once')
})

t.test('a connection lost with readings unacknowledged: the redeliveries are recognised, each reading stored once', async (t) => {
  const local = await startMosquitto(t, { extraConfig: 'log_type all' })
  const link = await startProxy(t, local.port)
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const commits = commitGate(t)
  const gateway = await startSubscribeGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    subscribe: [{ url: link.url, topics: ['sensors/#'], clientId: 'sluice-cut' }],
    beforeCommit: commits.beforeCommit
  })
  const [adapter] = gateway.subscriptions
  await waitUntil(() => adapter.connected, 10_000, 'the subscription')
  commits.hold()
  const pub = await publisher(t, local.url)
  await publishNumbered(pub, 'c', 0, 50)
  // mosquitto sends 20 (its in-flight window) and waits for their PUBACKs.
  await waitUntil(() => adapter.stats.received === 20, 10_000, '20 messages received')
  link.cut()
  await waitUntil(() => !adapter.connected, 10_000, 'the link down')
  link.restore()
  await waitUntil(() => adapter.stats.redeliveries === 20, 20_000, 'the 20 redelivered')
  t.match(local.logText(), /Sending PUBLISH to sluice-cut \(d1, q1, r0, m1,/, 'mosquitto redelivered them with DUP set')
  commits.release()
  await checkDelivered(t, receiver, new Set(Array.from({ length: 50 }, (_, n) => readingKey('c', n))), LOCAL)
  t.equal(gateway.stats().lastSeq, 50, 'each reading stored once: 50 readings, 50 seqs')
  t.equal(readingArrivals(receiver.messages).length, 50, 'and forwarded once')
})

/** aedes as the local broker, in-process on a free port; its URL. */
async function startAedes (t: Test, options: Parameters<typeof Aedes.createBroker>[0] = {}): Promise<string> {
  const aedes = await Aedes.createBroker(options)
  const server = createServer((socket) => { aedes.handle(socket) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    await new Promise<void>((resolve) => { aedes.close(() => { resolve() }) })
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`
}

t.test('a bad topic from the local broker is refused and acknowledged; the stream goes on', async (t) => {
  // mosquitto refuses such topics itself; aedes as the local broker lets them through.
  const localUrl = await startAedes(t)
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startSubscribeGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    subscribe: [{ url: localUrl, topics: ['sensors/#'] }]
  })
  const [adapter] = gateway.subscriptions
  await waitUntil(() => adapter.connected, 10_000, 'the subscription')
  const pub = await publisher(t, localUrl)
  await pub.publishAsync('sensors/bad\u0001/temp', '{"sensor":"bad","n":0}', { qos: 1 })
  await publishNumbered(pub, 'g', 0, 3)
  await checkDelivered(t, receiver, new Set(['g:0', 'g:1', 'g:2']), LOCAL)
  t.equal(gateway.stats().refused['bad-topic'], 1, 'the refusal is counted')
  t.equal(gateway.stats().lastSeq, 3, 'the bad topic never reached the buffer')
  await waitUntil(() => adapter.stats.acked === 4, 10_000, 'all four acknowledged, the refused one too (no redelivery loop)')
  t.pass('the refused message was acknowledged to the local broker too')
})

t.test('the local broker restarts: sluice reconnects with backoff, resumes its session and loses nothing', async (t) => {
  const local = await startMosquitto(t, { persistence: true })
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startSubscribeGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    subscribe: [{ url: local.url, topics: ['sensors/#'] }]
  })
  const [adapter] = gateway.subscriptions
  await waitUntil(() => adapter.connected, 10_000, 'the subscription')
  const sensors = await startSensors(t, local.url, { count: 2, inflight: 5, readingsPerSensor: 1500 })
  await receiver.waitFor((msgs) => readingArrivals(msgs).length >= 500, 30_000, '500 readings upstream')
  // A graceful restart (mosquitto saves its sessions and queues); the sensors reconnect too.
  await local.restart()
  await sensors.finished()
  await checkDelivered(t, receiver, sensors.acked, LOCAL)
  t.ok(adapter.stats.connections >= 2, `reconnected (${adapter.stats.connections} connections)`)
})

t.test('passwordFile: sluice logs in to a local broker that requires it; a missing file is a config error', async (t) => {
  const dir = t.testdir()
  const localUrl = await startAedes(t, {
    authenticate: (_client, username, password, callback) => {
      callback(null, username === 'sluice' && password?.toString() === 's3cret')
    }
  })
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  writeFileSync(join(dir, 'local.password'), 's3cret\n')
  const gateway = await startSubscribeGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: join(dir, 'buffer'),
    subscribe: [{ url: localUrl, topics: ['sensors/#'], username: 'sluice', passwordFile: join(dir, 'local.password') }]
  })
  await waitUntil(() => gateway.subscriptions[0].connected, 10_000, 'the subscription with the password')
  const pub = connect(localUrl, { reconnectPeriod: 0, username: 'sluice', password: 's3cret' })
  t.teardown(async () => { await pub.endAsync(true) })
  await new Promise<void>((resolve) => pub.once('connect', () => { resolve() }))
  await publishNumbered(pub, 'auth', 0, 1)
  await checkDelivered(t, receiver, new Set(['auth:0']), LOCAL)

  await t.rejects(startSubscribeGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: join(dir, 'buffer2'),
    subscribe: [{ url: localUrl, topics: ['sensors/#'], passwordFile: join(dir, 'missing') }]
  }), { code: 'SLUICE_CONFIG_INVALID', errors: [{ path: 'ingest.subscribe[0].passwordFile', message: /cannot read the password file/ }] })
})

/** The spawned daemon's config: readings from `localUrl`, the embedded broker off. */
function daemonConfig (dir: string, localUrl: string, upstreamUrl: string, clientId: string): string {
  const config = subscribeConfig({ upstreamUrl, bufferPath: join(dir, 'buffer'), subscribe: [{ url: localUrl, topics: ['sensors/#'], clientId }], gatewayId: 'gw-sub' })
  return writeConfig(dir, { ...config, log: { level: 'info' } })
}

t.test('kill -9 in the middle of a stream: every reading the local broker had arrives upstream, in order', async (t) => {
  const dir = t.testdir()
  // Persistence on: the local broker's queue for sluice's session is what carries the readings
  // over sluice's absence.
  const local = await startMosquitto(t, { persistence: true, extraConfig: 'log_type all' })
  // Not muted: it only counts sluice's PUBACKs, to kill sluice at a point of its ingest.
  const link = await startMuteProxy(t, local.port)
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const config = daemonConfig(dir, link.url, upstream.url, 'sluice-crash')
  let daemon = await startDaemon(t, config)
  await daemon.waitForLine('subscribed to the local broker')
  const sensors = await startSensors(t, local.url, { count: 3, inflight: 10, readingsPerSensor: 4000 })
  for (let round = 1; round <= 3; round++) {
    // Killed while readings stream through it: some in the buffer and not yet acknowledged to
    // the local broker, some acknowledged and not yet forwarded, more queued in the local broker.
    await link.waitFor(() => (link.fromClient.puback ?? 0) >= round * 3000, 60_000, `${round * 3000} PUBACKs from sluice`)
    const killed = await daemon.kill('SIGKILL')
    t.equal(killed.signal, 'SIGKILL')
    daemon = await startDaemon(t, config)
    const ready = await daemon.waitForLine('sluice ready')
    t.equal(ready.uncleanStop, true, 'the restart knows the last stop was not clean')
  }
  await sensors.finished()
  t.equal(sensors.acked.size, 12_000, 'the local broker acknowledged every reading')
  const { duplicates, highest } = await checkDelivered(t, receiver, sensors.acked, LOCAL)
  const redelivered = local.logText().match(/Sending PUBLISH to sluice-crash \(d1,/g)?.length ?? 0
  t.comment(`${sensors.acked.size} readings, ${highest} seqs, ${duplicates} duplicate arrivals upstream, ${redelivered} sends with DUP set (mosquitto sets it on all it had queued when a session resumes)`)
  // A reading's record is written before its commit starts: after a process crash, every
  // redelivery of a reading already in the buffer is recognised (docs/guarantees.md §7).
  t.equal(highest, sensors.acked.size, 'no reading stored twice: 12000 readings, 12000 seqs')
  const stopped = await daemon.kill('SIGTERM')
  t.equal(stopped.code, 0)
})

t.test('kill -9 after storing but before the PUBACK reached the local broker: the redeliveries are not stored again', async (t) => {
  const dir = t.testdir()
  const local = await startMosquitto(t, { persistence: true })
  const link = await startMuteProxy(t, local.port)
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const config = daemonConfig(dir, link.url, upstream.url, 'sluice-mute')
  const first = await startDaemon(t, config)
  await first.waitForLine('subscribed to the local broker')
  link.mute() // from here sluice's PUBACKs never reach mosquitto
  const pub = await publisher(t, local.url)
  await publishNumbered(pub, 'm', 0, 20) // mosquitto's in-flight window: all 20 are sent at once
  // sluice sends a PUBACK only once the reading is in the buffer and in its record of deliveries.
  await link.waitFor(() => (link.swallowed.puback ?? 0) >= 20, 20_000, '20 PUBACKs from sluice')
  await receiver.waitForCount(20, 20_000)
  await first.kill('SIGKILL')
  link.unmute()

  const second = await startDaemon(t, config)
  const ready = await second.waitForLine('sluice ready')
  t.equal(ready.lastSeq, 20, 'the 20 readings were in the buffer at the crash')
  await second.waitForLine('subscribed to the local broker')
  // mosquitto redelivers the 20 (DUP) on the new connection; then 5 new ones follow them.
  await publishNumbered(pub, 'm', 20, 5)
  await checkDelivered(t, receiver, new Set(Array.from({ length: 25 }, (_, n) => readingKey('m', n))), LOCAL)
  await link.waitFor(() => (link.fromClient.puback ?? 0) >= 45, 20_000, 'the redeliveries and the new readings acknowledged')
  const stopped = await second.kill('SIGTERM')
  t.equal(stopped.code, 0)
  const last = await second.waitForLine('sluice stopped')
  t.equal(last.lastSeq, 25, '25 readings, 25 seqs: no redelivery was stored twice')
  // The ack cursor reaches the disk a few ms after the upstream's PUBACKs: readings acknowledged
  // in those ms before the crash (the receiver already had them) are resent once, from the cursor
  // the restart found; the redeliveries from the local broker are never sent again.
  t.ok(Number.isInteger(ready.ackedSeq) && ready.ackedSeq >= 0 && ready.ackedSeq <= 20, `the ready line names the acknowledged seq the restart found (${String(ready.ackedSeq)})`)
  const resent = Array.from({ length: 20 - ready.ackedSeq }, (_, i) => ready.ackedSeq + 1 + i)
  t.same(readingArrivals(receiver.messages).map((a) => a.seq), [...Array.from({ length: 20 }, (_, i) => i + 1), ...resent, 21, 22, 23, 24, 25],
    `and each went upstream once, in order, but for a resend from the cursor on disk (after seq ${ready.ackedSeq})`)
})
