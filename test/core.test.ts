/**
 * The data path in-process, against a real mosquitto upstream: sensors (real MQTT.js clients)
 * -> embedded aedes -> LevelDB -> forwarder -> mosquitto -> a receiver.
 */
import t from 'tap'
import { connect as netConnect } from 'node:net'
import { connect } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy } from './helpers/proxy.js'
import { startReceiver } from './helpers/receiver.js'
import { readingArrivals, orderProblems, readingKey, startSensors } from './helpers/sensors.js'
import { startGateway } from './helpers/gateway.js'
import { waitUntil } from './helpers/wait.js'

t.test('online: thousands of readings from several sensors arrive in order, seq contiguous, as CloudEvents', async (t) => {
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, { upstreamUrl: upstream.url, bufferPath: t.testdir() })
  const sensors = await startSensors(t, gateway.sensorUrl, { count: 5, inflight: 20, readingsPerSensor: 1000 })
  await sensors.finished()
  t.equal(sensors.acked.size, 5000, 'every reading was PUBACKed')
  await receiver.waitForCount(5000, 30_000)

  const arrivals = readingArrivals(receiver.messages)
  t.equal(arrivals.length, 5000, 'no duplicates on a steady link')
  t.same(arrivals.map((a) => a.seq), Array.from({ length: 5000 }, (_, i) => i + 1), 'seq 1..5000 in arrival order')
  t.equal(new Set(arrivals.map((a) => a.epoch)).size, 1, 'one epoch')
  t.same(new Set(arrivals.map((a) => readingKey(a.sensor, a.n))), sensors.acked, 'exactly the PUBACKed readings')
  for (const sensor of ['s0', 's1', 's2', 's3', 's4']) {
    const ns = arrivals.filter((a) => a.sensor === sensor).map((a) => a.n)
    t.same(ns, [...ns].sort((a, b) => a - b), `${sensor}'s readings keep their order`)
  }

  const first = receiver.messages.find((m) => m.json?.type === 'io.sluice.reading')
  t.equal(first?.topic, `sluice/gw-test/${String(first?.json.subject)}`)
  t.match(first?.json, {
    specversion: '1.0',
    id: `gw-test-${gateway.stats().epoch}-1`,
    source: 'sluice://gw-test',
    type: 'io.sluice.reading',
    subject: /^sensors\/s\d\/temp$/,
    sequence: '00000000000000000001',
    sluiceepoch: gateway.stats().epoch,
    datacontenttype: 'application/json',
    data: { sensor: /^s\d$/, n: 0 }
  })
  t.ok(Math.abs(Date.parse(first?.json.time) - Date.now()) < 60_000, 'time is the ingest time, RFC 3339')
})

t.test('a QoS 1 PUBACK waits for the group commit', async (t) => {
  const upstream = await startMosquitto(t)
  let hold: Promise<void> | null = null
  let release = (): void => {}
  let commitsStarted = 0
  const gateway = await startGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    beforeCommit: async () => { commitsStarted++; if (hold !== null) await hold }
  })
  hold = new Promise<void>((resolve) => { release = resolve })
  const sensor = connect(gateway.sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await sensor.endAsync(true) })
  await new Promise<void>((resolve) => sensor.once('connect', () => { resolve() }))

  let acked = false
  const puback = new Promise<void>((resolve, reject) => {
    sensor.publish('sensors/a/temp', '{"v":1}', { qos: 1 }, (err) => { if (err != null) reject(err); else { acked = true; resolve() } })
  })
  // Wait until the reading is in a commit that is being held open...
  while (commitsStarted === 0) await new Promise((resolve) => setImmediate(resolve))
  // ...then give an early PUBACK every chance to show: a second client's full CONNECT/CONNACK
  // round trip through the same broker completes while the commit is held.
  const other = connect(gateway.sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await other.endAsync(true) })
  await new Promise<void>((resolve) => other.once('connect', () => { resolve() }))
  t.notOk(acked, 'no PUBACK while the commit is held open')
  t.equal(gateway.stats().forwarded, 0)
  release()
  await puback
  t.ok(acked, 'PUBACK once the commit is written')
  t.equal(gateway.stats().lastSeq, 1)
})

t.test('upstream killed: readings keep being PUBACKed and buffered, then drain in order', async (t) => {
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const gateway = await startGateway(t, { upstreamUrl: link.url, bufferPath: t.testdir() })
  const sensors = await startSensors(t, gateway.sensorUrl, { count: 3, inflight: 10 })
  const before = await startReceiver(t, upstream.url, 'sluice/#')
  await sensors.waitForAcked(300)

  link.cut() // the gateway loses the connection...
  // (what mosquitto acknowledged has reached the receiver: the broker has no disk to keep it)
  await waitUntil(() => new Set(readingArrivals(before.messages).map((a) => a.seq)).size >= gateway.stats().forwarded, 10_000, 'delivery of what was acknowledged')
  await upstream.kill('SIGKILL') // ...because the broker died
  await before.close()
  const ackedAtOutage = sensors.acked.size
  await sensors.waitForAcked(ackedAtOutage + 1500)
  t.notOk(gateway.stats().upstreamConnected, 'upstream is down')
  t.ok(gateway.stats().backlog >= 1500, 'readings are buffered')

  await upstream.restart()
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  await sensors.stop()
  const acked = new Set(sensors.acked)
  link.restore()
  await waitUntil(() => gateway.stats().backlog === 0 && gateway.stats().inFlight === 0, 30_000, 'the backlog drained')
  const seen = new Set([...readingArrivals(before.messages), ...readingArrivals(receiver.messages)].map((a) => readingKey(a.sensor, a.n)))
  t.ok([...acked].every((k) => seen.has(k)), 'every reading PUBACKed before, during and after the outage arrived')
  const arrivals = readingArrivals(receiver.messages)
  const { problems } = orderProblems(arrivals, arrivals[0].seq)
  t.same(problems, [], 'drained in seq order')
  t.equal(arrivals[arrivals.length - 1].seq, gateway.stats().lastSeq, 'up to the last reading')
})

t.test('upstream disconnects with messages in flight: duplicates only as a resent suffix, never out of order', async (t) => {
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, { upstreamUrl: link.url, bufferPath: t.testdir(), upstream: { inflight: 200 } })
  const sensors = await startSensors(t, gateway.sensorUrl, { count: 4, inflight: 50 })
  for (let cut = 1; cut <= 5; cut++) {
    // Cut while the forwarder has a full window in flight.
    await waitUntil(() => gateway.stats().inFlight > 20, 20_000, 'a full in-flight window')
    link.cut()
    await sensors.waitForAcked(sensors.acked.size + 200)
    link.restore()
    await waitUntil(() => gateway.stats().upstreamConnections > cut, 20_000, 'a reconnect')
  }
  await sensors.stop()
  const acked = new Set(sensors.acked)
  await waitUntil(() => gateway.stats().backlog === 0 && gateway.stats().inFlight === 0, 30_000, 'the backlog drained')
  const arrivals = readingArrivals(receiver.messages)
  const { problems, duplicates, highest } = orderProblems(arrivals)
  t.same(problems, [], 'every arrival continues a run or restarts one earlier')
  t.equal(highest, gateway.stats().lastSeq, 'nothing missing at the end')
  const seen = new Set(arrivals.map((a) => readingKey(a.sensor, a.n)))
  t.ok([...acked].every((k) => seen.has(k)), 'every PUBACKed reading arrived')
  t.ok(gateway.stats().resent > 0, 'cuts hit messages in flight: the scenario happened')
  t.ok(gateway.stats().resent >= duplicates, `the gateway counted its resends (${gateway.stats().resent} >= ${duplicates} duplicates seen)`)
})

t.test('a topic an upstream would refuse is refused at ingest and never buffered', async (t) => {
  const upstream = await startMosquitto(t)
  // The premise, with the real upstream: mosquitto disconnects a client publishing such a topic.
  const direct = connect(upstream.url, { reconnectPeriod: 0 })
  t.teardown(async () => { await direct.endAsync(true) })
  await new Promise<void>((resolve) => direct.once('connect', () => { resolve() }))
  const dropped = new Promise<void>((resolve) => direct.once('close', () => { resolve() }))
  direct.publish('bad\u0001topic', 'x', { qos: 1 })
  await dropped
  t.pass('mosquitto closed the connection of a client that published a control character')

  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, { upstreamUrl: upstream.url, bufferPath: t.testdir() })
  const good = connect(gateway.sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await good.endAsync(true) })
  await new Promise<void>((resolve) => good.once('connect', () => { resolve() }))

  const badTopics = ['ctl\u0001char', 'del\u007f', 'c1\u0085', 'nonchar\uFFFE', 'nonchar\uFDD0', 'replacement\uFFFD']
  for (const topic of badTopics) {
    const bad = connect(gateway.sensorUrl, { reconnectPeriod: 0 })
    await new Promise<void>((resolve) => bad.once('connect', () => { resolve() }))
    const closed = new Promise<void>((resolve) => bad.once('close', () => { resolve() }))
    bad.publish(topic, 'x', { qos: 1 })
    await closed
    await bad.endAsync(true)
  }
  // Invalid UTF-8 on the wire (0xC3 0x28), which only a raw client can send.
  const raw = netConnect(gateway.broker?.address().port ?? 0, '127.0.0.1')
  const rawClosed = new Promise<void>((resolve) => raw.once('close', () => { resolve() }))
  raw.on('error', () => {})
  raw.resume() // a paused socket with the CONNACK unread would never see the close
  raw.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'raw', keepalive: 0 }))
  raw.write(mqttPacket.generate({ cmd: 'publish', topic: Buffer.from([0x61, 0xc3, 0x28]) as unknown as string, payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false }))
  await rawClosed
  t.pass('each bad publisher was disconnected')

  await new Promise<void>((resolve, reject) => good.publish('sensors/ok/temp', '{"ok":true}', { qos: 1 }, (err) => { if (err != null) reject(err); else resolve() }))
  t.ok(good.connected, 'a well-behaved sensor is unaffected')
  await receiver.waitForCount(1)
  t.equal(gateway.stats().lastSeq, 1, 'only the good reading got a seq: the bad ones never reached the buffer')
  t.equal(gateway.stats().refused['bad-topic'], badTopics.length + 1, 'every refusal counted')
  t.match(readingArrivals(receiver.messages), [{ seq: 1, sensor: undefined }])
  t.equal(receiver.messages[0].json.subject, 'sensors/ok/temp')
})

t.test('payloads that are not JSON objects or arrays travel as data_base64', async (t) => {
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, { upstreamUrl: upstream.url, bufferPath: t.testdir() })
  const sensor = connect(gateway.sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await sensor.endAsync(true) })
  const payloads = [Buffer.from('21.5'), Buffer.from([0xff, 0x00, 0xc3]), Buffer.from('{"big":123456789012345678901234567890}'), Buffer.from('[1,2')]
  for (const p of payloads) await sensor.publishAsync('sensors/x', p, { qos: 1 })
  await receiver.waitForCount(4)
  const [num, bin, big, broken] = receiver.messages.map((m) => m.json)
  t.match(num, { datacontenttype: 'application/octet-stream', data_base64: payloads[0].toString('base64') })
  t.notOk('data' in num)
  t.match(bin, { datacontenttype: 'application/octet-stream', data_base64: payloads[1].toString('base64') })
  t.match(broken, { datacontenttype: 'application/octet-stream', data_base64: payloads[3].toString('base64') })
  t.equal(big.datacontenttype, 'application/json')
  t.ok(receiver.messages[2].payload.toString().includes('"data":{"big":123456789012345678901234567890}'), 'JSON data is embedded as sent, large integers intact')
})
