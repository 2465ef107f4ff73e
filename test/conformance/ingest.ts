/**
 * The ingest adapter conformance suite: what adapters/contract.ts promises of every IngestAdapter
 * and of how it uses its ReadingSink, run once per implementation (as abstract-level ships
 * abstract-level/test and MQTT.js runs abstract_client once per transport).
 *
 * A harness per implementation builds the adapter around the suite's RecordingSink and says where
 * its readings come from: sensors publishing over MQTT from outside (the embedded broker, a
 * subscription to a local broker), or the adapter itself (health readings on a timer). Checks that
 * need a sender (acknowledgement, order) exist only for the first kind.
 */
import { randomBytes } from 'node:crypto'
import type { Test } from 'tap'
import type { MqttClient } from 'mqtt'
import type { IngestAdapter, RefusalReason, ReadingSink } from '../../adapters/contract.js'
import { waitUntil } from '../helpers/wait.js'
import { RecordingSink } from './sink.js'

export interface IngestHarness {
  /** the adapter's `name` */
  readonly name: string
  /** where its readings come from: sensors publishing from outside, or the adapter itself */
  readonly source: 'sensors' | 'own'
  /**
   * Builds the adapter (not started) around `sink`, with whatever it needs from outside (a local
   * broker, a directory). Everything it starts is torn down with `t`; the suite closes the adapter.
   */
  build: (t: Test, sink: ReadingSink) => Promise<IngestSubject>
}

export interface IngestSubject {
  readonly adapter: IngestAdapter
  readonly source: SensorSource | OwnReadings
}

/** Readings published over MQTT by sensors outside the adapter. */
export interface SensorSource {
  readonly kind: 'sensors'
  /** a sensor connected where the adapter's readings are published (rejects when it cannot connect) */
  connect: (t: Test) => Promise<Sensor>
  /**
   * Resolves once what sensors published before the call has gone as far as it was going to
   * (a QoS 1 round trip of another client through the same broker): a check that something did
   * NOT happen follows it.
   */
  settle: () => Promise<void>
}

export interface Sensor {
  readonly client: MqttClient
  /** the client id a 'refused' event names for this sensor's readings (null: the adapter cannot know it) */
  readonly refusedAs: string | null
  /** publishes one QoS 1 reading and follows its acknowledgement by the adapter */
  publishQos1: (topic: string, payload: Buffer) => Acknowledgement
}

/** Whether the adapter has acknowledged a QoS 1 reading to whoever delivered it to the adapter. */
export interface Acknowledgement {
  acknowledged: () => boolean
  /** resolves once acknowledged; rejects after `timeoutMs` */
  untilAcknowledged: (timeoutMs: number) => Promise<void>
}

/** Readings the adapter takes itself, on a timer. */
export interface OwnReadings {
  readonly kind: 'own'
  /** the topic its readings have */
  readonly topic: string
  /** Resolves once the adapter has had at least two more chances to take a reading. */
  settle: () => Promise<void>
}

interface Refusal { reason: RefusalReason, clientId: string | null }

/** Builds the adapter around a fresh sink; closes it at teardown; records its refusals. */
async function setUp (t: Test, harness: IngestHarness): Promise<{ sink: RecordingSink, subject: IngestSubject, refused: Refusal[] }> {
  const sink = new RecordingSink()
  const subject = await harness.build(t, sink)
  t.teardown(async () => { await subject.adapter.close() })
  const refused: Refusal[] = []
  subject.adapter.on('refused', (reason, clientId) => { refused.push({ reason, clientId }) })
  return { sink, subject, refused }
}

/** Readings of every kind a sensor sends: nothing in them may change on the way to the sink. */
function assortedPayloads (): Array<{ topic: string, payload: Buffer }> {
  return [
    { topic: 'sensors/conf/empty', payload: Buffer.alloc(0) },
    { topic: 'sensors/conf/every-byte', payload: Buffer.from(Array.from({ length: 256 }, (_, i) => i)) },
    { topic: 'sensors/conf/json', payload: Buffer.from('{"t":21.5,"unit":"°C","n":12345678901234567890}') },
    { topic: 'sensors/conf/ünïcødé/temp', payload: Buffer.from('1') },
    // Larger than one socket read: the adapter's payload must not be a view that is reused.
    { topic: 'sensors/conf/large', payload: randomBytes(200_000) }
  ]
}

const MS = 20_000

/** The sensors of a harness whose readings come from outside. */
function sensorsOf (subject: IngestSubject): SensorSource {
  if (subject.source.kind !== 'sensors') throw new Error('the harness said its readings come from sensors')
  return subject.source
}

/**
 * After a refusal (`topic`/1 refused or its commit failed), the sink accepts again: a later
 * reading (`topic`/2) is taken, and the refused one, if the adapter acknowledged it after all
 * (a redelivery), was stored first.
 */
async function goesOn (t: Test, sink: RecordingSink, source: SensorSource, refusedAck: Acknowledgement, topic: string): Promise<void> {
  sink.accept()
  // The first sensor may have been disconnected (MQTT 3.1.1 has no negative PUBACK).
  const later = await source.connect(t)
  await later.publishQos1(`${topic}/2`, Buffer.from('later')).untilAcknowledged(MS)
  t.equal(sink.on(`${topic}/2`).length, 1, 'a later reading is taken: the adapter kept running')
  await source.settle()
  if (refusedAck.acknowledged()) t.ok(sink.on(`${topic}/1`).some((a) => a.state === 'durable'), 'the refused reading, acknowledged later, was stored first')
}

export function ingestConformance (t: Test, harness: IngestHarness): void {
  // Checks about a sender (its acknowledgement, its order) do not apply to readings the adapter takes itself.
  // Checks that need a sender (acknowledgement, order) exist only for adapters that have one.
  const senderTest = (name: string, fn: (t: Test) => Promise<void>): void => {
    if (harness.source === 'sensors') void t.test(name, fn)
  }

  t.test('describe() is a plain object, before start, while running and after close', async (t) => {
    const { subject } = await setUp(t, harness)
    const { adapter } = subject
    t.equal(adapter.name, harness.name, 'the adapter names itself')
    const plain = (label: string): void => {
      const d = adapter.describe()
      t.ok(d !== null && typeof d === 'object' && !Array.isArray(d), `${label}: an object`)
      t.same(JSON.parse(JSON.stringify(d)), d, `${label}: what a log line or the status endpoint can print as it is`)
    }
    plain('before start')
    await adapter.start()
    plain('running')
    await adapter.close()
    plain('after close')
  })

  t.test('listening: true once started for a way in for sensors, null for an adapter that takes its own readings', async (t) => {
    const { subject } = await setUp(t, harness)
    await subject.adapter.start()
    // Readiness (/readyz) counts the adapters that say true; null ones have no say.
    t.equal(subject.adapter.listening, subject.source.kind === 'sensors' ? true : null, 'while running')
  })

  t.test('start() resolves; readings then reach sink.append with topic, bytes unchanged and an ingest time', async (t) => {
    const { sink, subject } = await setUp(t, harness)
    const before = Date.now()
    await subject.adapter.start()
    const { source } = subject
    if (source.kind === 'own') {
      await waitUntil(() => sink.appended.length >= 1, MS, 'the first reading')
      const [first] = sink.appended
      t.equal(first.reading.topic, source.topic, 'its topic')
      t.ok(first.reading.payload instanceof Uint8Array && first.reading.payload.length > 0, 'a payload of bytes')
      t.ok(first.reading.time >= before && first.reading.time <= first.at, `time ${first.reading.time} is the ingest time (between start ${before} and append ${first.at})`)
      return
    }
    const sensor = await source.connect(t)
    const sent = assortedPayloads().map((r, i) => ({ ...r, qos: i % 2 === 0 ? 1 : 0, publishedAt: 0 }))
    const acks = []
    for (const r of sent) {
      r.publishedAt = Date.now()
      if (r.qos === 1) acks.push(sensor.publishQos1(r.topic, r.payload))
      else await sensor.client.publishAsync(r.topic, r.payload, { qos: 0 })
    }
    await waitUntil(() => sent.every((r) => sink.on(r.topic).length > 0), MS, 'every reading in the sink')
    for (const r of sent) {
      const got = sink.on(r.topic)
      t.equal(got.length, 1, `${r.topic}: appended once`)
      const [a] = got
      t.ok(Buffer.from(a.reading.payload).equals(r.payload) && a.bytesAtAppend.equals(r.payload), `${r.topic}: the ${r.payload.length} bytes unchanged`)
      t.ok(a.reading.time >= r.publishedAt && a.reading.time <= a.at, `${r.topic}: time is the ingest time`)
      if (r.qos === 0) t.equal(a.options?.canWait, false, `${r.topic}: a QoS 0 sender cannot be slowed down: canWait false`)
      else t.not(a.options?.canWait, false, `${r.topic}: a QoS 1 sender can wait`)
    }
    await Promise.all(acks.map(async (ack) => { await ack.untilAcknowledged(MS) }))
    t.pass('every QoS 1 reading acknowledged once durable')
    await source.settle()
    t.ok(sent.every((r) => Buffer.from(sink.on(r.topic)[0].reading.payload).equals(r.payload)), 'the payloads the sink holds are still the sensors\' bytes later on')
  })

  senderTest('a reading sent as soon as start() resolves reaches the sink ("resolves once sensors can connect")', async (t) => {
    const { sink, subject } = await setUp(t, harness)
    const source = sensorsOf(subject)
    // A sensor is connected as early as it can be: before start where the broker is not the adapter's.
    const early = await source.connect(t).catch(() => null)
    await subject.adapter.start()
    const sensor = early ?? await source.connect(t)
    const first = sensor.publishQos1('sensors/start/first', Buffer.from('first'))
    const second = sensor.publishQos1('sensors/start/second', Buffer.from('second'))
    await second.untilAcknowledged(MS)
    await waitUntil(() => sink.on('sensors/start/second').length === 1, MS, 'the second reading')
    t.equal(sink.on('sensors/start/first').length, 1, 'the reading sent right after start() arrived too')
    t.ok(first.acknowledged(), 'and was acknowledged')
  })

  senderTest('a QoS 1 reading is acknowledged to its sender only once the sink\'s durable resolves', async (t) => {
    const { sink, subject } = await setUp(t, harness)
    const source = sensorsOf(subject)
    await subject.adapter.start()
    const sensor = await source.connect(t)
    const release = sink.hold(t)
    const ack = sensor.publishQos1('sensors/held/1', Buffer.from('held'))
    await waitUntil(() => sink.on('sensors/held/1').length === 1, MS, 'the reading in the sink')
    await source.settle()
    t.equal(sink.on('sensors/held/1')[0].state, 'pending', 'its commit is held open')
    t.notOk(ack.acknowledged(), 'not acknowledged while durable is pending')
    release()
    await ack.untilAcknowledged(MS)
    t.equal(sink.on('sensors/held/1')[0].state, 'durable', 'acknowledged once durable')
  })

  senderTest('readings from one sender reach the sink in the order they were published', async (t) => {
    const { sink, subject } = await setUp(t, harness)
    const source = sensorsOf(subject)
    await subject.adapter.start()
    const sensor = await source.connect(t)
    const n = 100
    // QoS 1 all in flight at once; then QoS 0. MQTT orders each QoS by itself [MQTT-4.6.0-6].
    const acks = Array.from({ length: n }, (_, i) => sensor.publishQos1('sensors/order/q1', Buffer.from(String(i))))
    for (let i = 0; i < n; i++) await sensor.client.publishAsync('sensors/order/q0', Buffer.from(String(i)), { qos: 0 })
    await waitUntil(() => sink.on('sensors/order/q1').length >= n && sink.on('sensors/order/q0').length >= n, MS, `${2 * n} readings`)
    const order = (topic: string): string[] => sink.on(topic).map((a) => Buffer.from(a.reading.payload).toString())
    const expected = Array.from({ length: n }, (_, i) => String(i))
    t.same(order('sensors/order/q1'), expected, 'QoS 1: in publish order, each once')
    t.same(order('sensors/order/q0'), expected, 'QoS 0: in publish order, each once')
    await Promise.all(acks.map(async (a) => { await a.untilAcknowledged(MS) }))
  })

  t.test('a sink that throws (buffer not accepting): refused "buffer-unavailable", nothing acknowledged, later readings taken', async (t) => {
    const { sink, subject, refused } = await setUp(t, harness)
    await subject.adapter.start()
    const { source } = subject
    sink.refuse()
    if (source.kind === 'own') {
      await waitUntil(() => refused.length >= 1, MS, 'a refusal')
      t.same(refused[0], { reason: 'buffer-unavailable', clientId: null })
      t.equal(sink.appended.length, 0, 'nothing taken')
      sink.accept()
      await waitUntil(() => sink.appended.length >= 1, MS, 'a reading once the buffer accepts again')
      t.pass('still running')
      return
    }
    const sensor = await source.connect(t)
    const ack = sensor.publishQos1('sensors/refused/1', Buffer.from('refused'))
    await waitUntil(() => refused.length >= 1, MS, 'a refusal')
    t.same(refused[0], { reason: 'buffer-unavailable', clientId: sensor.refusedAs }, 'refused: buffer-unavailable')
    await source.settle()
    t.equal(sink.appended.length, 0, 'nothing taken while the sink throws')
    t.notOk(ack.acknowledged(), 'the refused reading is not acknowledged')
    await goesOn(t, sink, source, ack, 'sensors/refused')
  })

  senderTest('a durable that rejects (commit failed): refused "buffer-unavailable", not acknowledged, no rejection unhandled, later readings taken', async (t) => {
    const { sink, subject, refused } = await setUp(t, harness)
    const source = sensorsOf(subject)
    await subject.adapter.start()
    const sensor = await source.connect(t)
    sink.fail()
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
    process.on('unhandledRejection', onUnhandled)
    t.teardown(() => { process.off('unhandledRejection', onUnhandled) })
    // A QoS 0 reading's `durable` is awaited by nobody: its rejection must not go unhandled.
    await sensor.client.publishAsync('sensors/failed/q0', Buffer.from('lost, qos 0'), { qos: 0 })
    const ack = sensor.publishQos1('sensors/failed/1', Buffer.from('lost commit'))
    await waitUntil(() => refused.length >= 1, MS, 'a refusal')
    t.same(refused[0], { reason: 'buffer-unavailable', clientId: sensor.refusedAs }, 'refused: buffer-unavailable')
    await source.settle()
    t.ok(sink.on('sensors/failed/1').length >= 1 && sink.on('sensors/failed/1').every((a) => a.state === 'failed'), 'its commit failed')
    t.notOk(ack.acknowledged(), 'a reading whose commit failed is not acknowledged')
    t.equal(sink.on('sensors/failed/q0').length, 1, 'the QoS 0 reading was taken, and its commit failed')
    await new Promise((resolve) => setImmediate(resolve))
    t.same(unhandled, [], 'no rejection left unhandled')
    await goesOn(t, sink, source, ack, 'sensors/failed')
  })

  t.test('close() resolves while a reading\'s commit is held open (a stuck disk does not block shutdown)', async (t) => {
    const { sink, subject } = await setUp(t, harness)
    const { adapter, source } = subject
    await adapter.start()
    sink.hold(t)
    if (source.kind === 'sensors') {
      const sensor = await source.connect(t)
      sensor.publishQos1('sensors/stuck/1', Buffer.from('stuck'))
    }
    await waitUntil(() => sink.appended.length >= 1, MS, 'a reading in a held commit')
    t.equal(sink.appended[0].state, 'pending')
    // Bounded by waitUntil's deadline: a close that waits for the commit forever fails here.
    let closed = false
    const closing = adapter.close().then(() => { closed = true })
    await waitUntil(() => closed, MS, 'close() with the commit still held')
    await closing
    t.pass('close() resolved with the commit still held')
  })

  t.test('close() resolves and is safe to call twice; after close no reading reaches the sink', async (t) => {
    const { sink, subject } = await setUp(t, harness)
    const { adapter, source } = subject
    await adapter.start()
    const sensor = source.kind === 'sensors' ? await source.connect(t) : null
    if (sensor !== null) await sensor.publishQos1('sensors/close/before', Buffer.from('before')).untilAcknowledged(MS)
    else await waitUntil(() => sink.appended.length >= 1, MS, 'a reading before close')
    await Promise.all([adapter.close(), adapter.close()])
    await adapter.close()
    t.pass('close() twice at once, and once more, all resolve')
    const count = sink.appended.length
    if (source.kind === 'sensors' && sensor !== null) {
      // The sensor connected before close (not awaited: a client whose broker closed it keeps
      // the publish in MQTT.js's offline queue), and a new one if anything still takes connections.
      sensor.client.publishAsync('sensors/close/after', Buffer.from('after, qos 0'), { qos: 0 }).catch(() => {})
      sensor.publishQos1('sensors/close/after', Buffer.from('after, qos 1'))
      const late = await source.connect(t).catch(() => null)
      if (late !== null) {
        await late.client.publishAsync('sensors/close/after', Buffer.from('late, qos 0'), { qos: 0 })
        late.publishQos1('sensors/close/after', Buffer.from('late, qos 1'))
      } else {
        t.comment('a new sensor cannot connect at all after close')
      }
    }
    await source.settle()
    t.equal(sink.appended.length, count, 'nothing appended after close resolved')
  })
}
