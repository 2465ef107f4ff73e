/**
 * Upstream flow control against a real mosquitto (2.0.11, MQTT 5): the Receive Maximum and
 * Maximum Packet Size it announces in CONNACK, the rate cap, and cbor-batch batching. What the
 * upstream sees is read off the wire by a tapping proxy, not taken from sluice's counters.
 */
import t from 'tap'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy } from './helpers/proxy.js'
import { startReceiver } from './helpers/receiver.js'
import { startGateway } from './helpers/gateway.js'
import { startMqttTap } from './helpers/mqtt-tap.js'
import { arrivals, firstArrivals, publishAll, readingSeqs, readings } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** The most timestamps falling in any window of `ms`. */
function busiestWindow (times: readonly number[], ms: number): number {
  let worst = 0
  for (let i = 0, j = 0; i < times.length; i++) {
    while (j < times.length && times[j] < times[i] + ms) j++
    worst = Math.max(worst, j - i)
  }
  return worst
}

t.test('the upstream\'s Receive Maximum bounds the in-flight window, whatever upstream.inflight says', async (t) => {
  for (const protocol of ['5', '3.1.1'] as const) {
    await t.test(`protocol ${protocol}`, async (t) => {
      // mosquitto announces max_inflight_messages as its Receive Maximum to MQTT 5 clients.
      const upstream = await startMosquitto(t, { maxInflightMessages: 5 })
      const tap = await startMqttTap(t, upstream.port, protocol === '5' ? 5 : 4)
      const link = await startProxy(t, tap.port)
      const receiver = await startReceiver(t, upstream.url, 'sluice/#')
      const gateway = await startGateway(t, { upstreamUrl: link.url, bufferPath: t.testdir(), upstream: { protocol: protocol === '5' ? 5 : '3.1.1', inflight: 64 } })
      link.cut()
      await publishAll(t, gateway.sensorUrl, readings(1500), 50)
      link.restore()
      await waitUntil(() => gateway.stats().backlog === 0 && gateway.stats().inFlight === 0, 60_000, 'the backlog drained')
      await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 1500, 20_000, '1500 readings')
      t.same(firstArrivals(arrivals(receiver.messages)), range(1, 1500), 'every reading, in order')
      if (protocol === '5') {
        t.ok(tap.maxOutstanding <= 5, `never more than the announced 5 unacknowledged on the wire (max ${tap.maxOutstanding})`)
        t.ok(tap.maxOutstanding >= 2, `but the window is used (max ${tap.maxOutstanding})`)
      } else {
        // MQTT 3.1.1 announces nothing: the configured window is the bound (the control case).
        t.ok(tap.maxOutstanding > 5, `MQTT 3.1.1: up to upstream.inflight in flight (max ${tap.maxOutstanding})`)
        t.ok(tap.maxOutstanding <= 64)
      }
    })
  }
})

t.test('a reading larger than the upstream\'s Maximum Packet Size is set aside with a gap event, never a disconnect loop', async (t) => {
  const upstream = await startMosquitto(t, { extraConfig: 'max_packet_size 1200' })
  const tap = await startMqttTap(t, upstream.port, 5)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, { upstreamUrl: tap.url, bufferPath: t.testdir(), upstream: { protocol: 5, inflight: 8 } })
  await publishAll(t, gateway.sensorUrl, [
    ...readings(5, 0),
    { topic: 'sensors/a/blob', payload: Buffer.alloc(3000, 0x61) },
    ...readings(5, 5)
  ], 1)
  await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 10 && arrivals(m).some((a) => a.kind === 'gap'), 20_000, '10 readings and a gap')
  const got = arrivals(receiver.messages)
  t.same(firstArrivals(got), range(1, 11), 'readings 1-5, the gap at 6, readings 7-11: in order')
  t.notOk(readingSeqs(got).includes(6), 'the big reading never went')
  t.match(got.find((a) => a.kind === 'gap'), { kind: 'gap', from: 6, to: 6, count: 1, reason: 'rejected', epoch: gateway.stats().epoch })
  t.ok(tap.publishSizes.every((size) => size <= 1200), `no PUBLISH over 1200 bytes reached the broker (largest ${Math.max(...tap.publishSizes)})`)
  t.equal(tap.connections, 1, 'one connection: the upstream never had to disconnect us')
  const [letter] = await gateway.deadLetters()
  t.match(letter, { seq: 6, topic: 'sensors/a/blob', reason: 'too-large', reasonCode: 0x95, from: 6, to: 6 })
  t.equal(letter.payload.length, 3000, 'kept for inspection, bytes and all')
  t.equal(gateway.stats().setAside, 1)
  t.equal(gateway.stats().deadLetters, 1)
  await waitUntil(() => gateway.stats().backlog === 0, 10_000, 'the backlog drained')
})

t.test('cbor-batch: batches split to fit the upstream\'s Maximum Packet Size', async (t) => {
  const upstream = await startMosquitto(t, { extraConfig: 'max_packet_size 2000' })
  const tap = await startMqttTap(t, upstream.port, 5)
  const link = await startProxy(t, tap.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, {
    upstreamUrl: link.url,
    bufferPath: t.testdir(),
    upstream: { format: 'cbor-batch', protocol: 5, batch: { maxRecords: 200, maxBytes: '64KiB', maxDelay: '5ms' } }
  })
  link.cut()
  await publishAll(t, gateway.sensorUrl, readings(1000), 50)
  link.restore()
  await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 1000, 30_000, '1000 readings')
  t.same(firstArrivals(arrivals(receiver.messages)), range(1, 1000), 'every reading, in order')
  const batches = receiver.messages.filter((m) => m.topic === 'sluice/gw-test/$sluice/batch')
  t.ok(tap.publishSizes.every((size) => size <= 2000), `every batch fits 2000 bytes (largest ${Math.max(...tap.publishSizes)})`)
  t.ok(batches.length >= 20 && batches.length < 200, `many readings per message (${batches.length} batches)`)
  t.equal(tap.connections, 1, 'no disconnect')
})

t.test('upstream.maxMessagesPerSecond caps publishes; with cbor-batch a backlog still drains in batches', async (t) => {
  await t.test('cloudevents-json: one reading per message, so readings per second = the cap', async (t) => {
    const upstream = await startMosquitto(t)
    const tap = await startMqttTap(t, upstream.port, 4)
    const link = await startProxy(t, tap.port)
    const receiver = await startReceiver(t, upstream.url, 'sluice/#')
    const gateway = await startGateway(t, { upstreamUrl: link.url, bufferPath: t.testdir(), upstream: { maxMessagesPerSecond: 20 } })
    link.cut()
    await publishAll(t, gateway.sensorUrl, readings(60), 20)
    const started = performance.now()
    link.restore()
    await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 60, 20_000, '60 readings')
    const took = performance.now() - started
    t.same(firstArrivals(arrivals(receiver.messages)), range(1, 60))
    t.ok(took >= 2500, `60 messages at 20/s take about 3 s (took ${Math.round(took)} ms)`)
    // What the upstream sees: publishes spaced by the cap (the margin is for the tap's own timing).
    const busiest = busiestWindow(tap.publishTimes, 1000)
    t.ok(busiest <= 22 && busiest >= 15, `about 20 publishes in any one second (busiest ${busiest})`)
  })

  await t.test('cbor-batch: 3000 readings at 5 messages/s', async (t) => {
    const upstream = await startMosquitto(t)
    const tap = await startMqttTap(t, upstream.port, 4)
    const link = await startProxy(t, tap.port)
    const receiver = await startReceiver(t, upstream.url, 'sluice/#')
    const gateway = await startGateway(t, {
      upstreamUrl: link.url,
      bufferPath: t.testdir(),
      upstream: { format: 'cbor-batch', maxMessagesPerSecond: 5, batch: { maxRecords: 500 } }
    })
    link.cut()
    await publishAll(t, gateway.sensorUrl, readings(3000), 50)
    const started = performance.now()
    link.restore()
    await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 3000, 20_000, '3000 readings')
    const took = performance.now() - started
    t.same(firstArrivals(arrivals(receiver.messages)), range(1, 3000), 'every reading, in order')
    const published = tap.publishSizes.length
    t.ok(published <= 8, `in batches: ${published} messages for 3000 readings`)
    t.ok(busiestWindow(tap.publishTimes, 1000) <= 6, 'at most about 5 publishes in any one second')
    t.ok(took < 5000, `drained in ${Math.round(took)} ms under a cap of 5 messages/s (one reading per message would take 10 minutes)`)
    t.equal(gateway.stats().published, published)
  })
})

t.test('cbor-batch live: readings wait up to maxDelay to share a message, and no longer', async (t) => {
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    upstream: { format: 'cbor-batch', batch: { maxRecords: 100, maxDelay: '300ms' } }
  })
  await waitUntil(() => gateway.stats().upstreamConnected, 10_000, 'the upstream connection')

  // One reading on a quiet link: it waits maxDelay for company, then goes alone.
  const acked = performance.now()
  await publishAll(t, gateway.sensorUrl, readings(1), 1)
  await receiver.waitFor((m) => readingSeqs(arrivals(m)).includes(1), 5000, 'reading 1')
  const latency = performance.now() - acked
  t.ok(latency >= 250, `held about maxDelay (${Math.round(latency)} ms)`)
  t.ok(latency < 3000, 'and then sent')

  // A burst shares messages: 250 readings within a few ms go in a handful of batches of up to 100.
  receiver.clear()
  await publishAll(t, gateway.sensorUrl, readings(250, 1), 250)
  await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 250, 10_000, '250 readings')
  t.same(firstArrivals(arrivals(receiver.messages)), range(2, 251))
  const batches = receiver.messages.filter((m) => m.topic.endsWith('/$sluice/batch'))
  t.ok(batches.length <= 8, `${batches.length} messages for 250 readings`)
})

t.test('cloudevents-binary over MQTT 5: the sensor\'s bytes unchanged, attributes as user properties', async (t) => {
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#', { protocolVersion: 5 })
  const gateway = await startGateway(t, { upstreamUrl: upstream.url, bufferPath: t.testdir(), upstream: { format: 'cloudevents-binary' } })
  const raw = Buffer.from([0x00, 0xff, 0x10, 0x80, 0x7f])
  await publishAll(t, gateway.sensorUrl, [{ topic: 'sensors/x/raw', payload: raw }, { topic: 'sensors/x/json', payload: '{"t":21.5}' }], 1)
  await receiver.waitForCount(2, 10_000)
  const [first, second] = receiver.messages
  t.equal(first.topic, 'sluice/gw-test/sensors/x/raw')
  t.equal(first.payload.toString('hex'), raw.toString('hex'), 'payload byte for byte')
  t.equal(first.properties?.contentType, 'application/octet-stream')
  t.match(first.properties?.userProperties, {
    specversion: '1.0',
    id: `gw-test-${gateway.stats().epoch}-1`,
    source: 'sluice://gw-test',
    type: 'io.sluice.reading',
    subject: 'sensors/x/raw',
    sequence: '00000000000000000001',
    sluiceepoch: gateway.stats().epoch,
    time: /^\d{4}-\d\d-\d\dT/
  })
  t.equal(second.payload.toString(), '{"t":21.5}')
  t.equal(second.properties?.contentType, 'application/json')
})
