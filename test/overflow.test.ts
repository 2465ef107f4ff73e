/**
 * A full buffer, end to end: a tiny buffer.maxBytes, the upstream (a real mosquitto)
 * cut off behind a proxy, sensors (real MQTT.js clients) publishing. What the sensors were
 * PUBACKed is counted on the sensor side; what arrived is read from the upstream; the daemon's
 * own counters are only cross-checked.
 */
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { connect } from 'mqtt'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy, type Proxy } from './helpers/proxy.js'
import { startReceiver, type Receiver } from './helpers/receiver.js'
import { readingKey, startSensors } from './helpers/sensors.js'
import { startGateway } from './helpers/gateway.js'
import { waitUntil } from './helpers/wait.js'
import { coverage, coverageCounter, watchDirectory } from './helpers/coverage.js'

const MAX_BYTES = 1024 * 1024

async function outage (t: Test, overflow: string): Promise<{ gateway: Awaited<ReturnType<typeof startGateway>>, link: Proxy, receiver: Receiver, peak: () => number }> {
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const bufferPath = join(t.testdir(), 'buffer')
  const gateway = await startGateway(t, { upstreamUrl: link.url, bufferPath, buffer: { maxBytes: MAX_BYTES, overflow } })
  await waitUntil(() => gateway.stats().upstreamConnected, 10_000, 'the upstream connection')
  link.cut()
  await waitUntil(() => !gateway.stats().upstreamConnected, 10_000, 'the upstream to be cut off')
  return { gateway, link, receiver, peak: watchDirectory(t, bufferPath).peak }
}

t.test('overflow "block": a full buffer withholds PUBACKs, drops QoS 0, and resumes when the upstream returns; every PUBACKed reading arrives', async (t) => {
  const { gateway, link, receiver, peak } = await outage(t, 'block')
  const sensors = await startSensors(t, gateway.sensorUrl, { count: 3, inflight: 10 })
  await waitUntil(() => !gateway.stats().buffer.accepting, 30_000, 'the buffer to fill')
  t.equal(gateway.stats().buffer.reason, 'full', 'not ready, with the reason')
  t.equal(gateway.stats().buffer.code, 'SLUICE_BUFFER_FULL')

  // QoS 0 readings meet the full buffer: dropped at once, counted, announced later.
  const qos0 = connect(gateway.sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await qos0.endAsync(true) })
  await new Promise<void>((resolve) => qos0.once('connect', () => { resolve() }))
  const droppedBefore = gateway.stats().dropped.overflow
  for (let n = 0; n < 50; n++) qos0.publish('sensors/q/temp', JSON.stringify({ sensor: 'q', n }), { qos: 0 })
  await waitUntil(() => gateway.stats().dropped.overflow === droppedBefore + 50, 10_000, '50 QoS 0 readings dropped')

  // A full buffer still takes a commit whenever LevelDB's compression of its write-ahead log
  // frees a little space; within seconds there is none left and the sensors stall. A stall is
  // an absence, with no event to wait for: it is watched for a second at a time.
  let stalledAt = -1
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const before = sensors.acked.size
    await new Promise((resolve) => setTimeout(resolve, 1000))
    if (sensors.acked.size === before && !gateway.stats().buffer.accepting) {
      stalledAt = before
      break
    }
  }
  t.ok(stalledAt > 1000, `the sensors stalled, with no PUBACK for a second, after ${stalledAt} readings`)
  t.ok(sensors.sent > stalledAt, `the sensors have ${sensors.sent - stalledAt} publishes waiting`)
  t.ok(peak() <= MAX_BYTES, `the buffer's directory stayed within maxBytes (peak ${peak()} of ${MAX_BYTES} bytes)`)

  link.restore()
  // The sensors resume as the upstream frees space, and go on past what the buffer holds.
  await sensors.waitForAcked(stalledAt + 3000, 60_000)
  t.pass('the sensors resumed once the upstream acknowledged readings')
  await sensors.stop()
  const acked = new Set(sensors.acked)
  const { lastSeq } = gateway.stats()
  const covered = coverageCounter()
  await receiver.waitFor((msgs) => covered(msgs) >= lastSeq, 60_000, `seqs 1..${lastSeq} delivered or announced`)
  const seen = coverage(receiver.messages)
  const delivered = new Set(seen.readings.values())
  const missing = [...acked].filter((k) => !delivered.has(k))
  t.same(missing, [], `all ${acked.size} PUBACKed readings arrived`)
  t.same(seen.problems, [], 'in order, no gap unannounced')
  t.same(seen.overlaps, [], 'no seq both delivered and announced')
  t.same(seen.gaps.map((g) => [g.reason, g.count]), [['overflow', 50]], 'one gap: the 50 QoS 0 readings')
  t.equal(seen.covered, lastSeq, 'delivered + announced = assigned')
  t.notOk([...delivered].some((k) => k.startsWith('q:')), 'none of the dropped QoS 0 readings arrived')
  t.ok(peak() <= MAX_BYTES, `peak ${peak()} <= maxBytes ${MAX_BYTES}`)
  t.comment(`block: stalled at ${stalledAt} readings; ${acked.size} PUBACKed in all; peak directory ${peak()} bytes`)
})

for (const overflow of ['drop-oldest', 'drop-newest'] as const) {
  t.test(`overflow "${overflow}": PUBACKs never stop, and delivered + announced = PUBACKed`, async (t) => {
    const { gateway, link, receiver, peak } = await outage(t, overflow)
    // JSON readings compress well in LevelDB's tables: 1 MiB holds some 15,000 of them.
    const perSensor = 15_000
    const sensors = await startSensors(t, gateway.sensorUrl, { count: 3, inflight: 50, readingsPerSensor: perSensor })
    await sensors.finished()
    t.equal(sensors.acked.size, 3 * perSensor, 'every reading was PUBACKed although the buffer holds a fraction of them')
    t.ok(gateway.stats().buffer.accepting, 'the buffer kept accepting')
    const dropped = gateway.stats().dropped.overflow
    t.ok(dropped > 3 * perSensor / 2, `most were dropped to stay within maxBytes (${dropped})`)

    link.restore()
    const assigned = sensors.acked.size // seqs given: one per PUBACKed reading, nothing else published
    const covered = coverageCounter()
    await receiver.waitFor((msgs) => covered(msgs) >= assigned, 60_000, `seqs 1..${assigned} delivered or announced`)
    const seen = coverage(receiver.messages)
    const announced = seen.gaps.reduce((sum, g) => sum + g.count, 0)
    t.equal(seen.readings.size + announced, assigned, `delivered ${seen.readings.size} + announced ${announced} = PUBACKed ${assigned}`)
    t.equal(announced, dropped, 'what the gateway counted as dropped is what it announced')
    t.same(seen.overlaps, [], 'no seq both delivered and announced')
    t.same(seen.problems, [], 'in order, no gap unannounced')
    t.same([...new Set(seen.gaps.map((g) => g.reason))], ['overflow'])
    t.ok(seen.readings.size >= 1000, `a full buffer's worth survived (${seen.readings.size} readings): no more dropped than needed`)
    const delivered = new Set(seen.readings.values())
    for (const sensor of ['s0', 's1', 's2']) {
      const first = readingKey(sensor, 0)
      const last = readingKey(sensor, perSensor - 1)
      if (overflow === 'drop-oldest') {
        t.ok(delivered.has(last) && !delivered.has(first), `${sensor}: its newest reading arrived, its oldest was dropped`)
      } else {
        // Mostly the newest go: room that turns up later (a compaction packs the tables tighter
        // than the estimate) lets a later reading in again, so not necessarily the very last.
        let lateArrived = 0
        for (let n = perSensor / 2; n < perSensor; n++) if (delivered.has(readingKey(sensor, n))) lateArrived++
        t.ok(delivered.has(first) && lateArrived < perSensor / 4,
          `${sensor}: its oldest reading arrived; of its newer half, ${lateArrived} of ${perSensor / 2} did`)
      }
    }
    t.ok(peak() <= MAX_BYTES, `the buffer's directory stayed within maxBytes (peak ${peak()} of ${MAX_BYTES} bytes)`)
    t.comment(`${overflow}: ${seen.readings.size} delivered, ${announced} announced in ${seen.gaps.length} gap events; peak directory ${peak()} bytes`)
  })
}
