/**
 * What the upstream will not take (docs/guarantees.md §8), against a real mosquitto: a message it refuses
 * (MQTT 5 PUBACK reason >= 0x80) is retried, then set aside as a dead letter with a gap event in
 * its place; a "poison pill" it disconnects on (MQTT 3.1.1) is found and set aside after a few
 * disconnects; either way the readings around it keep flowing, and the gap event is owed until
 * the upstream acknowledges it, across reconnects and restarts.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startMosquitto } from './helpers/mosquitto.js'
import { startReceiver } from './helpers/receiver.js'
import { startGateway } from './helpers/gateway.js'
import { buildStatus } from '../daemon/status.js'
import { formatStatus } from '../daemon/status-command.js'
import { startMqttTap } from './helpers/mqtt-tap.js'
import { startMuteProxy } from './helpers/mute-proxy.js'
import { type Arrival, arrivals, firstArrivals, publishAll, readingSeqs, readings } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)
const gaps = (list: Arrival[]): Array<Extract<Arrival, { kind: 'gap' }>> => list.flatMap((a) => a.kind === 'gap' ? [a] : [])

/** A mosquitto that refuses (PUBACK 0x87 Not authorized, to MQTT 5 clients) publishes to the `deny` filters. */
async function refusingMosquitto (t: Parameters<typeof startMosquitto>[0] & { testdir: () => string }, deny: string | string[]): Promise<Awaited<ReturnType<typeof startMosquitto>>> {
  const acl = join(t.testdir(), 'acl')
  writeFileSync(acl, ['topic readwrite #', ...[deny].flat().map((d) => `topic deny ${d}`), ''].join('\n'))
  // With the helper's `max_queued_messages 0` (unlimited), mosquitto 2.0.11 also drops the
  // connection of an MQTT 5 client right after refusing its publish (checked by hand); a bounded
  // queue keeps it to the PUBACK reason code, as a cloud broker would.
  return await startMosquitto(t, { extraConfig: `acl_file ${acl}\nmax_queued_messages 100000` })
}

t.test('a refused message is retried rejectRetries times, then set aside: gap event in its place, in order', async (t) => {
  const upstream = await refusingMosquitto(t, 'sluice/gw-test/sensors/forbidden/#')
  const tap = await startMqttTap(t, upstream.port, 5)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, {
    upstreamUrl: tap.url,
    bufferPath: t.testdir(),
    upstream: { protocol: 5, inflight: 1, rejectRetries: 2, backoff: { min: '50ms', max: '200ms' } }
  })
  await publishAll(t, gateway.sensorUrl, [...readings(5, 0), { topic: 'sensors/forbidden/x', payload: '{"secret":1}' }, ...readings(5, 5)], 1)
  await receiver.waitFor((m) => gaps(arrivals(m)).length > 0 && new Set(readingSeqs(arrivals(m))).size >= 10, 20_000, 'the gap and 10 readings')
  const got = arrivals(receiver.messages)
  t.same(firstArrivals(got), range(1, 11), 'with one message in flight: readings 1-5, the gap at 6, readings 7-11, strictly in order')
  t.match(gaps(got), [{ from: 6, to: 6, count: 1, reason: 'rejected' }])
  t.equal(gateway.stats().rejected, 3, 'refused once and on each of 2 retries')
  t.equal(tap.fromClient.publish, 10 + 3 + 1, 'each reading once, the refused one 3 times, the gap event once')
  t.equal(tap.connections, 1, `refusals do not cost the connection (${tap.connections} connections)`)
  const letters = await gateway.deadLetters()
  t.equal(letters.length, 1)
  t.match(letters[0], { seq: 6, topic: 'sensors/forbidden/x', reason: 'rejected', reasonCode: 0x87, attempts: 3, from: 6, to: 6 })
  t.equal(Buffer.from(letters[0].payload).toString(), '{"secret":1}')
  t.ok(Math.abs(letters[0].at - Date.now()) < 60_000, 'with the time it was set aside')
  // what `sluice status` (and /status) shows the operator
  const report = await buildStatus(gateway)
  t.match(report.recentDeadLetters, [{ seq: 6, topic: 'sensors/forbidden/x', reason: 'rejected', reasonCode: 0x87, attempts: 3, bytes: 12 }])
  t.match(formatStatus(report), /seq 6 sensors\/forbidden\/x \(12 B\): rejected 0x87 after 3 tries/)
  await waitUntil(() => gateway.stats().backlog === 0, 10_000, 'an empty backlog')
})

t.test('with a window in flight, a refusal costs only resends: everything else arrives, the gap before the resent rest', async (t) => {
  const upstream = await refusingMosquitto(t, 'sluice/gw-test/sensors/forbidden/#')
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    upstream: { protocol: 5, inflight: 32, rejectRetries: 1, backoff: { min: '50ms', max: '200ms' } }
  })
  const items = [...readings(100, 0), { topic: 'sensors/forbidden/x', payload: '1' }, ...readings(100, 100), { topic: 'sensors/forbidden/y', payload: '2' }, ...readings(100, 200)]
  await publishAll(t, gateway.sensorUrl, items, 50)
  await receiver.waitFor((m) => gaps(arrivals(m)).length >= 2 && new Set(readingSeqs(arrivals(m))).size >= 300, 30_000, 'two gaps and 300 readings')
  const got = arrivals(receiver.messages)
  t.same([...new Set(readingSeqs(got))].sort((a, b) => a - b), [...range(1, 100), ...range(102, 201), ...range(203, 302)], 'every allowed reading, none refused')
  t.match(gaps(got), [{ from: 101, to: 101, reason: 'rejected' }, { from: 202, to: 202, reason: 'rejected' }])
  for (const gap of gaps(got)) {
    const at = got.findIndex((a) => a.kind === 'gap' && a.from === gap.from)
    const lastNext = got.findLastIndex((a) => a.kind === 'reading' && a.seq === gap.from + 1)
    t.ok(lastNext > at, `reading ${gap.from + 1} arrives (again) after the gap event at ${gap.from}: the stream resumes in order`)
  }
  t.same((await gateway.deadLetters()).map((l) => [l.seq, l.reason, l.reasonCode]), [[202, 'rejected', 0x87], [101, 'rejected', 0x87]], 'newest first')
})

t.test('a poison pill (MQTT 3.1.1: the upstream disconnects on it) is found in the window and set aside', async (t) => {
  for (const format of ['cloudevents-json', 'cbor-batch'] as const) {
    await t.test(format, async (t) => {
      // mosquitto closes the connection of a client that sends a packet over max_packet_size; it
      // cannot say so to an MQTT 3.1.1 client, which learns nothing of the limit in advance.
      const upstream = await startMosquitto(t, { extraConfig: 'max_packet_size 1000' })
      const tap = await startMqttTap(t, upstream.port, 4)
      const receiver = await startReceiver(t, upstream.url, 'sluice/#')
      const gateway = await startGateway(t, {
        upstreamUrl: tap.url,
        bufferPath: t.testdir(),
        upstream: { format, inflight: 8, backoff: { min: '50ms', max: '200ms' }, batch: { maxBytes: '800B', maxDelay: '5ms' } }
      })
      await waitUntil(() => gateway.stats().upstreamConnected, 10_000, 'the upstream connection')
      await publishAll(t, gateway.sensorUrl, [...readings(20, 0), { topic: 'sensors/a/big', payload: Buffer.alloc(2000, 0x62) }, ...readings(20, 20)], 50)
      await receiver.waitFor((m) => gaps(arrivals(m)).length > 0 && new Set(readingSeqs(arrivals(m))).size >= 40, 30_000, 'the gap and 40 readings')
      const got = arrivals(receiver.messages)
      t.same([...new Set(readingSeqs(got))].sort((a, b) => a - b), [...range(1, 20), ...range(22, 41)], 'every other reading arrived')
      t.match(gaps(got), [{ from: 21, to: 21, count: 1, reason: 'rejected' }])
      const [letter] = await gateway.deadLetters()
      t.match(letter, { seq: 21, topic: 'sensors/a/big', reason: 'disconnected', reasonCode: null })
      const disconnects = tap.connections - 1
      t.ok(disconnects >= 3 && disconnects <= 10, `set aside after a few disconnects (${disconnects}), not a loop`)
      t.ok(gateway.stats().setAside === 1)
      await waitUntil(() => gateway.stats().backlog === 0 && gateway.stats().inFlight === 0, 10_000, 'an empty backlog')
      const settled = tap.connections
      await publishAll(t, gateway.sensorUrl, readings(20, 40), 10)
      await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 60, 10_000, '20 more readings')
      t.equal(tap.connections, settled, 'and the connection stays up afterwards')
    })
  }
})

t.test('the gap event is owed until acknowledged: lost to a stop, it is sent after the restart', async (t) => {
  const upstream = await startMosquitto(t, { extraConfig: 'max_packet_size 1200' })
  const muting = await startMuteProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const bufferPath = t.testdir()
  const config = { protocol: 5 }
  const first = await startGateway(t, { upstreamUrl: muting.url, bufferPath, upstream: config, drainGraceMs: 200 })
  await publishAll(t, first.sensorUrl, readings(3), 1)
  await receiver.waitFor((m) => readingSeqs(arrivals(m)).length >= 3, 10_000, '3 readings')
  // From now on nothing the gateway sends reaches the broker: the gap event will go unacknowledged.
  muting.mute()
  await publishAll(t, first.sensorUrl, [{ topic: 'sensors/a/blob', payload: Buffer.alloc(3000) }], 1)
  await waitUntil(() => first.stats().setAside === 1, 10_000, 'the big reading set aside')
  // (the mute proxy names packet types a subscriber sends; a PUBLISH is its "type3")
  await muting.waitFor(() => (muting.swallowed.type3 ?? 0) >= 1, 10_000, 'the gap event sent into the void')
  t.equal(first.stats().events, 0, 'the gap event was not acknowledged')
  await first.close()

  const second = await startGateway(t, { upstreamUrl: upstream.url, bufferPath, upstream: config })
  await receiver.waitFor((m) => gaps(arrivals(m)).length > 0, 10_000, 'the gap event')
  t.match(gaps(arrivals(receiver.messages)), [{ from: 4, to: 4, reason: 'rejected' }])
  t.match(await second.deadLetters(), [{ seq: 4, reason: 'too-large' }], 'the dead letter survived the restart')
  await waitUntil(() => second.stats().backlog === 0 && second.stats().events === 1, 10_000, 'the gap acknowledged')
  await publishAll(t, second.sensorUrl, readings(2, 3), 1)
  await receiver.waitFor((m) => readingSeqs(arrivals(m)).includes(6), 10_000, 'readings after')
  t.same(firstArrivals(arrivals(receiver.messages)), range(1, 6), 'readings 1-3, the gap at 4, readings 5-6')
})

t.test('a gap event the upstream refuses every time is passed over, and the readings go on', async (t) => {
  const upstream = await refusingMosquitto(t, ['sluice/gw-test/sensors/forbidden/#', 'sluice/gw-test/$sluice/gap'])
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const gateway = await startGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: t.testdir(),
    upstream: { protocol: 5, inflight: 4, rejectRetries: 1, backoff: { min: '20ms', max: '50ms' } }
  })
  await publishAll(t, gateway.sensorUrl, [...readings(3, 0), { topic: 'sensors/forbidden/x', payload: '1' }, ...readings(3, 3)], 1)
  await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 6, 20_000, '6 readings')
  await waitUntil(() => gateway.stats().backlog === 0 && gateway.stats().inFlight === 0, 10_000, 'an empty backlog')
  t.same([...new Set(readingSeqs(arrivals(receiver.messages)))].sort((a, b) => a - b), [1, 2, 3, 5, 6, 7])
  t.same(gaps(arrivals(receiver.messages)), [], 'the upstream took no gap event')
  t.equal(gateway.stats().rejected, 4, 'the reading refused twice, then its gap event twice')
  t.match(await gateway.deadLetters(), [{ seq: 4, reason: 'rejected', reasonCode: 0x87 }], 'the reading is still kept for inspection')
})
