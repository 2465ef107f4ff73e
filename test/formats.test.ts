/**
 * The upstream formats and the forwarder's small policies, as pure units: what goes on the wire
 * byte for byte (docs/receiving.md), the packet sizes the upstream's limits are checked against, the
 * rate cap's decisions on an injected clock, and when a refused message is set aside.
 */
import t from 'tap'
import { Decoder } from 'cbor-x'
import mqttPacket from 'mqtt-packet'
import type { OutgoingEntry, UpstreamMessage } from '../adapters/contract.js'
import { cborBatch } from '../adapters/formats/cbor-batch.js'
import { cloudEventsBinary } from '../adapters/formats/cloudevents-binary.js'
import { cloudEventsJson, readingAttributes } from '../adapters/formats/cloudevents-json.js'
import { publishPacketSize } from '../adapters/upstream/publish-packet.js'
import { decodeBatch, BatchDecodeError } from '../index.js'
import { TokenBucket } from '../daemon/rate-limit.js'
import { SetAsidePolicy } from '../daemon/set-aside.js'
import { mulberry32 } from '../scripts/random.js'

const templates = { gateway: 'gw-01', topic: 'sluice/{gateway}/{topic}', eventsTopic: 'sluice/{gateway}/$sluice/{kind}' }
const EPOCH = '0123456789abcdef0123456789abcdef'
const T0 = 1_700_000_000_123 // past 2^32: needs a 64-bit unsigned integer

function reading (seq: number, payload: Uint8Array | string = `{"n":${seq}}`, epoch = EPOCH, topic = `sensors/s${seq % 3}/temp`): OutgoingEntry {
  return { kind: 'reading', seq, epoch, time: T0 + seq, topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload }
}
const unlimited = { maxEntries: Number.POSITIVE_INFINITY, maxBytes: Number.POSITIVE_INFINITY }

/**
 * A decoder written from RFC 8949 alone (definite lengths, major types 0-7), independent of both
 * sluice's encoder and cbor-x. It records every major type it meets, so a test can say what the
 * document is made of.
 */
function rfcDecode (bytes: Uint8Array): { value: unknown, majors: Set<number>, additional: number[] } {
  let at = 0
  const majors = new Set<number>()
  const additional: number[] = []
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const arg = (info: number): number => {
    additional.push(info)
    if (info < 24) return info
    if (info === 24) return bytes[at++]
    if (info === 25) { const v = view.getUint16(at); at += 2; return v }
    if (info === 26) { const v = view.getUint32(at); at += 4; return v }
    if (info === 27) { const v = Number(view.getBigUint64(at)); at += 8; return v }
    throw new Error(`unsupported additional information ${info}`)
  }
  const item = (): unknown => {
    const head = bytes[at++]
    const major = head >> 5
    majors.add(major)
    const n = arg(head & 0x1f)
    switch (major) {
      case 0: return n
      case 1: return -1 - n
      case 2: { const v = bytes.slice(at, at + n); at += n; return v }
      case 3: { const v = Buffer.from(bytes.subarray(at, at + n)).toString('utf8'); at += n; return v }
      case 4: return Array.from({ length: n }, item)
      case 5: { const o: Record<string, unknown> = {}; for (let i = 0; i < n; i++) { const k = item() as string; o[k] = item() } return o }
      default: throw new Error(`major type ${major} (tag or simple/float) in a plain batch`)
    }
  }
  const value = item()
  if (at !== bytes.length) throw new Error(`${bytes.length - at} trailing bytes`)
  return { value, majors, additional }
}

t.test('cbor-batch: plain RFC 8949 that any decoder reads; the package decoder gives it back', async (t) => {
  const format = cborBatch(templates, { maxRecords: 200, maxBytes: 64 * 1024, maxDelayMs: 20 })
  const entries = [reading(1), reading(2, new Uint8Array([0, 255, 1, 2])), reading(3, ''), reading(300, 'x'.repeat(300), EPOCH, 'sensors/ünïcode/t')]
  const take = format.take(entries, unlimited)
  t.strictSame(take, { count: 4, open: true }, 'all four fit; the batch could take more')
  const message = format.encode(entries)
  t.equal(message.topic, 'sluice/gw-01/$sluice/batch', 'on the events topic, kind batch')
  t.equal(message.properties?.contentType, 'application/cbor')

  const plain = rfcDecode(message.payload)
  t.strictSame([...plain.majors].sort(), [0, 2, 3, 4, 5], 'only uints, byte strings, text, arrays, maps: no tags, floats or negative numbers')
  t.notOk(plain.additional.includes(31), 'no indefinite lengths')
  const doc = plain.value as { gateway: string, epoch: string, records: Array<[number, number, string, Uint8Array]> }
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
  t.strictSame({ ...doc, records: doc.records.map(([seq, time, topic, payload]) => [seq, time, topic, hex(payload)]) }, {
    gateway: 'gw-01',
    epoch: EPOCH,
    records: entries.map((e) => e.kind === 'reading' ? [e.seq, e.time, e.topic, hex(e.payload)] : null)
  }, 'an independent RFC 8949 decoder reads {gateway, epoch, records: [[seq, time, topic, payload]]}')
  t.ok(doc.records.every((r) => r[3] instanceof Uint8Array), 'payloads are byte strings')
  // The time is a 64-bit unsigned integer (0x1b), not the float64 (0xfb) cbor-x would write.
  const timeBytes = Buffer.alloc(9)
  timeBytes[0] = 0x1b
  timeBytes.writeBigUInt64BE(BigInt(T0 + 1), 1)
  t.ok(message.payload.includes(timeBytes), 'time: major type 0, 8-byte argument')

  const cborx = new Decoder({ mapsAsObjects: true, useRecords: false }).decode(message.payload)
  t.equal(cborx.records.length, 4, 'cbor-x reads it too')
  t.equal(Number(cborx.records[0][1]), T0 + 1)

  const batch = decodeBatch(message.payload)
  t.equal(batch.gateway, 'gw-01')
  t.equal(batch.epoch, EPOCH)
  t.strictSame(batch.records.map((r) => [r.seq, r.time, r.topic, Buffer.from(r.payload).toString('hex')]),
    entries.map((e) => e.kind === 'reading' ? [e.seq, e.time, e.topic, Buffer.from(e.payload).toString('hex')] : null))
  t.equal(typeof batch.records[0].time, 'number', 'times come back as numbers')
})

t.test('decodeBatch refuses what is not a batch', async (t) => {
  t.throws(() => decodeBatch(Buffer.from([0xff, 0x00])), BatchDecodeError)
  t.throws(() => decodeBatch(Buffer.from('a0', 'hex')), { code: 'SLUICE_BATCH_INVALID', message: /gateway/ })
  const noBytes = cborBatch(templates, { maxRecords: 10, maxBytes: 1024, maxDelayMs: 0 }).encode([reading(1)]).payload
  t.ok(decodeBatch(noBytes))
  // The same document with the payload's byte string turned into a text string.
  const tampered = Buffer.from(noBytes)
  tampered[tampered.length - 8] = (3 << 5) | 7
  t.throws(() => decodeBatch(tampered), { message: /payload is not a byte string/ })
})

t.test('cbor-batch take: bounded by maxRecords and maxBytes, never across an event or an epoch change', async (t) => {
  const format = cborBatch(templates, { maxRecords: 5, maxBytes: 600, maxDelayMs: 20 })
  const many = Array.from({ length: 12 }, (_, i) => reading(i + 1))
  t.strictSame(format.take(many, unlimited), { count: 5, open: false }, 'maxRecords')
  t.strictSame(format.take(many, { maxEntries: 1, maxBytes: Number.POSITIVE_INFINITY }), { count: 1, open: false }, 'the forwarder can ask for one')

  const big = Array.from({ length: 12 }, (_, i) => reading(i + 1, 'y'.repeat(100)))
  const take = format.take(big, unlimited)
  t.ok(take.count > 1 && take.count < 5, `maxBytes cuts the batch (${take.count} records)`)
  t.ok(format.encode(big.slice(0, take.count)).payload.length <= 600, 'the document fits maxBytes')
  t.ok(format.encode(big.slice(0, take.count + 1)).payload.length > 600, 'and one more would not: the size is computed exactly')
  const tighter = format.take(big, { maxEntries: 100, maxBytes: 400 }).count
  t.ok(tighter < take.count && format.encode(big.slice(0, tighter)).payload.length <= 400, `the upstream's bound applies when smaller (${tighter} records)`)
  t.strictSame(format.take([reading(1, 'z'.repeat(5000)), reading(2)], unlimited), { count: 1, open: false }, 'a reading larger than maxBytes goes alone')
  // Open means worth waiting for more (the forwarder lingers up to maxDelay): not when full by bytes.
  t.strictSame(format.take(big.slice(0, 2), unlimited), { count: 2, open: true }, 'room for another: open')
  const full = format.take(big.slice(0, take.count), unlimited)
  t.strictSame(full, { count: take.count, open: false }, `everything offered taken, but no room for another like them: not open (${take.count} records)`)

  const gap: OutgoingEntry = { kind: 'gap', seq: 4, epoch: EPOCH, time: T0, data: { from: 4, to: 6, count: 3, reason: 'overflow' } }
  t.strictSame(format.take([reading(1), reading(2), gap, reading(7)], unlimited), { count: 2, open: false }, 'stops before an event')
  t.strictSame(format.take([gap, reading(7)], unlimited), { count: 1, open: false }, 'an event goes alone')
  const eventMessage = format.encode([gap])
  t.equal(eventMessage.topic, 'sluice/gw-01/$sluice/gap')
  t.match(JSON.parse(eventMessage.payload.toString()), { type: 'io.sluice.gap', id: `gw-01-${EPOCH}-gap-4`, data: { from: 4, to: 6, count: 3, reason: 'overflow' } },
    'events stay structured JSON CloudEvents')
  const other = 'f'.repeat(32)
  t.strictSame(format.take([reading(1), reading(2), reading(3, 'x', other)], unlimited), { count: 2, open: false }, 'stops at an epoch change')
})

t.test('cloudevents-json: one JSON CloudEvent per reading, whatever characters the gateway id, the topic and the epoch hold', async (t) => {
  const odd = { gateway: 'gw "quoted" \\ \u00e9\u2028', topic: 'up/{gateway}/{topic}/x', eventsTopic: 'sluice/{gateway}/$sluice/{kind}' }
  const format = cloudEventsJson(odd)
  const cases: Array<{ topic: string, payload: string | Uint8Array, epoch: string }> = [
    { topic: 'sensors/"a"/\\b', payload: '{"n":1,"big":12345678901234567890}', epoch: EPOCH },
    { topic: 'sensors/\u0001\u007f/\ud83d\ude00', payload: ' [1, 2]', epoch: 'epoch "two"' },
    { topic: 'sensors/plain', payload: Buffer.from([0xff, 0x00, 0x7b]), epoch: EPOCH },
    { topic: 'sensors/text', payload: 'not json', epoch: EPOCH }
  ]
  for (const [i, c] of cases.entries()) {
    const seq = 41 + i
    const message = format.encode([reading(seq, c.payload, c.epoch, c.topic)])
    t.equal(message.topic, `up/${odd.gateway}/${c.topic}/x`, 'the topic template filled in')
    const event = JSON.parse(message.payload.toString('utf8')) as Record<string, unknown>
    const bytes = typeof c.payload === 'string' ? Buffer.from(c.payload) : Buffer.from(c.payload)
    let json: unknown = null
    try { json = JSON.parse(bytes.toString('utf8')) } catch {}
    const isJson = json !== null && typeof json === 'object'
    t.strictSame(Object.keys(event), ['specversion', 'id', 'source', 'type', 'time', 'subject', 'sequence', 'sluiceepoch', 'datacontenttype', isJson ? 'data' : 'data_base64'],
      'the attributes, in a stable order')
    t.match(event, {
      specversion: '1.0',
      id: `${odd.gateway}-${c.epoch}-${seq}`,
      source: `sluice://${odd.gateway}`,
      type: 'io.sluice.reading',
      time: new Date(T0 + seq).toISOString(),
      subject: c.topic,
      sequence: String(seq).padStart(20, '0'),
      sluiceepoch: c.epoch,
      datacontenttype: isJson ? 'application/json' : 'application/octet-stream'
    })
    if (isJson) {
      t.ok(message.payload.toString('utf8').endsWith(`"data":${bytes.toString('utf8')}}`), 'the sensor\'s JSON as the text it sent (no rounding of large integers)')
    } else {
      t.equal(event.data_base64, bytes.toString('base64'), 'other bytes in base64')
    }
  }
})

t.test('cloudevents-json: each event byte for byte what JSON.stringify makes of its attributes, the sensor\'s JSON spliced in', async (t) => {
  // The event is written piece by piece into one buffer; JSON.stringify of readingAttributes is
  // the independent account of what it must hold. Sequence numbers at every digit count, times
  // across seconds, years and before 1970, topics and epochs that need escaping, topics repeated
  // (the escaped-topic cache) and payloads JSON or not.
  const random = mulberry32(20261204)
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]
  const templates = { gateway: 'gw-"1"\\\u00e9', topic: 'up/{gateway}/{topic}', eventsTopic: 'sluice/{gateway}/$sluice/{kind}' }
  const format = cloudEventsJson(templates)
  const topics = ['sensors/a/temp', 'sensors/"q"/\\', 'sensors/\u0000\u001f\u2028', 'sensors/\ud83d\ude00/\ud800', 'x']
  const epochs = [EPOCH, 'e"p\\och', '\u00e9poque']
  const payloads = ['{"n":1}', '[1,2,{"a":null}]', ' {"big":12345678901234567890} ', 'plain text', '', '{"open":', '\u00ff\u0000']
  let mismatches = 0
  for (let i = 0; i < 3000; i++) {
    const seq = Math.floor(random() * 10 ** Math.floor(random() * 16))
    const time = Math.floor((random() * 2 - 0.3) * 4e12)
    const entry = { kind: 'reading' as const, seq, epoch: pick(epochs), time, topic: pick(topics), payload: Buffer.from(pick(payloads), i % 2 === 0 ? 'utf8' : 'latin1') }
    const message = format.encode([entry])
    let data: unknown = null
    try { data = JSON.parse(entry.payload.toString('utf8')) } catch {}
    const isJson = data !== null && typeof data === 'object' && Buffer.from(entry.payload.toString('utf8')).equals(entry.payload)
    const attributes = readingAttributes(entry, templates.gateway)
    const expected = isJson
      ? Buffer.concat([Buffer.from(JSON.stringify({ ...attributes, datacontenttype: 'application/json' }).slice(0, -1) + ',"data":'), entry.payload, Buffer.from('}')])
      : Buffer.from(JSON.stringify({ ...attributes, datacontenttype: 'application/octet-stream', data_base64: entry.payload.toString('base64') }))
    if (!message.payload.equals(expected)) {
      if (mismatches++ < 3) t.equal(message.payload.toString('latin1'), expected.toString('latin1'), `seq ${seq}, time ${time}`)
    }
  }
  t.equal(mismatches, 0, '3,000 events, each identical to the JSON.stringify account')
})

t.test('cloudevents-binary: the sensor\'s bytes unchanged, the attributes as MQTT 5 user properties', async (t) => {
  const format = cloudEventsBinary(templates)
  const bytes = new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x00])
  const m = format.encode([reading(7, bytes, EPOCH, 'sensors/a/raw')])
  t.equal(m.topic, 'sluice/gw-01/sensors/a/raw')
  t.equal(m.payload.toString('hex'), 'deadbeef00', 'payload unchanged')
  t.strictSame(m.properties, {
    contentType: 'application/octet-stream',
    userProperties: {
      specversion: '1.0',
      id: `gw-01-${EPOCH}-7`,
      source: 'sluice://gw-01',
      type: 'io.sluice.reading',
      time: new Date(T0 + 7).toISOString(),
      subject: 'sensors/a/raw',
      sequence: '00000000000000000007',
      sluiceepoch: EPOCH
    }
  })
  t.equal(format.encode([reading(8, '{"v":1}')]).properties?.contentType, 'application/json')
  t.equal(format.encode([reading(8, '{"v":1}')]).payload.toString(), '{"v":1}')
  const epochEvent: OutgoingEntry = { kind: 'epoch', seq: 9, epoch: EPOCH, time: T0, data: { epoch: EPOCH, previous: 'a'.repeat(32), lastDurableSeq: 8, reason: 'power-loss' } }
  const e = format.encode([epochEvent])
  t.equal(e.topic, 'sluice/gw-01/$sluice/epoch')
  t.match(JSON.parse(e.payload.toString()), { specversion: '1.0', type: 'io.sluice.epoch', data: { previous: 'a'.repeat(32) } })
  t.equal(e.properties?.contentType, 'application/cloudevents+json')
})

t.test('the PUBLISH packet size the upstream\'s Maximum Packet Size is checked against is exact', async (t) => {
  const messages: UpstreamMessage[] = [
    { topic: 'a', payload: Buffer.alloc(0) },
    { topic: 'sluice/gw/sensors/é', payload: Buffer.alloc(126) },
    { topic: 'x'.repeat(300), payload: Buffer.alloc(20_000) },
    cloudEventsBinary(templates).encode([reading(123456, 'q'.repeat(2000))]),
    cborBatch(templates, { maxRecords: 500, maxBytes: 1 << 20, maxDelayMs: 0 }).encode(Array.from({ length: 400 }, (_, i) => reading(i + 1)))
  ]
  for (const m of messages) {
    for (const [protocol, protocolVersion] of [['3.1.1', 4], ['5', 5]] as const) {
      const packet = mqttPacket.generate({
        cmd: 'publish', topic: m.topic, payload: m.payload, qos: 1, messageId: 42, dup: false, retain: false,
        ...(protocolVersion === 5 ? { properties: m.properties ?? {} } : {})
      } as mqttPacket.IPublishPacket, { protocolVersion })
      t.equal(publishPacketSize(m, protocol), packet.length, `${protocol}: ${m.topic.slice(0, 20)} (${m.payload.length} bytes)`)
    }
  }
})

t.test('the rate cap spaces publishes evenly: never more than the cap in any second (injected clock)', async (t) => {
  let now = 0
  const bucket = new TokenBucket(100, () => now)
  const sent: number[] = []
  // A scheduler that always has something to send: it publishes when allowed and sleeps as told.
  while (now < 10_000) {
    const wait = bucket.delay()
    if (wait > 0) { now += wait; continue }
    bucket.take()
    sent.push(now)
  }
  t.ok(sent.length >= 990 && sent.length <= 1001, `about 100/s over 10 s (${sent.length})`)
  let worst = 0
  for (let i = 0; i < sent.length; i++) {
    let j = i
    while (j < sent.length && sent[j] < sent[i] + 1000) j++
    worst = Math.max(worst, j - i)
  }
  t.ok(worst <= 100, `at most 100 in any one-second window (worst ${worst})`)

  // An idle spell does not bank a burst.
  now += 60_000
  let burst = 0
  while (bucket.delay() === 0) { bucket.take(); burst++ }
  t.equal(burst, 1, 'after a minute idle: one at once, then spaced again')
  t.equal(bucket.delay(), 10)

  const free = new TokenBucket(0, () => now)
  let waits = 0
  for (let i = 0; i < 1000; i++) { waits += free.delay(); free.take() }
  t.equal(waits, 0, '0 means no cap: never a wait')
})

t.test('set-aside policy: refusals retried rejectRetries times; a poison pill after 3 disconnects, the last isolated', async (t) => {
  const policy = new SetAsidePolicy({ rejectRetries: 2, strikes: 3, strikeWindowMs: 10_000 })
  t.strictSame(policy.rejected(10), { action: 'retry', attempt: 1 })
  t.strictSame(policy.rejected(10), { action: 'retry', attempt: 2 })
  t.strictSame(policy.rejected(10), { action: 'set-aside', attempts: 3 })
  t.strictSame(policy.rejected(10), { action: 'retry', attempt: 1 }, 'a new count for what comes next at that position')
  policy.acknowledged(10)
  t.strictSame(policy.rejected(11), { action: 'retry', attempt: 1 })

  const now = { oldest: 20, sentAgoMs: 5, isolated: false }
  t.strictSame(policy.disconnected(now), { isolate: false, setAside: false, strikes: 1 })
  t.strictSame(policy.disconnected(now), { isolate: true, setAside: false, strikes: 2 }, '2nd in a row: isolate')
  t.strictSame(policy.disconnected(now), { isolate: true, setAside: false, strikes: 3 }, 'never set aside while others were in flight with it')
  t.strictSame(policy.disconnected({ ...now, isolated: true }), { isolate: true, setAside: true, strikes: 4 }, 'alone in flight: set aside')

  t.strictSame(policy.disconnected({ oldest: 30, sentAgoMs: 5, isolated: true }), { isolate: false, setAside: false, strikes: 1 })
  t.strictSame(policy.disconnected({ oldest: 30, sentAgoMs: 5, isolated: true }), { isolate: true, setAside: false, strikes: 2 })
  policy.acknowledged(30)
  t.strictSame(policy.disconnected({ oldest: 31, sentAgoMs: 5, isolated: true }), { isolate: false, setAside: false, strikes: 1 }, 'progress resets the count')
  t.strictSame(policy.disconnected({ oldest: 31, sentAgoMs: 60_000, isolated: true }), { isolate: false, setAside: false, strikes: 0 },
    'a disconnect long after sending (a stalled link) is not held against the message')
  t.strictSame(policy.disconnected({ oldest: 31, sentAgoMs: 5, isolated: true }), { isolate: false, setAside: false, strikes: 1 }, 'and breaks the run')
})

t.test('gap events in cloudevents-json', async (t) => {
  const m = cloudEventsJson(templates).encode([{ kind: 'gap', seq: 12, epoch: EPOCH, time: T0, data: { from: 10, to: 12, count: 3, reason: 'rejected' } }])
  t.equal(m.topic, 'sluice/gw-01/$sluice/gap')
  t.strictSame(JSON.parse(m.payload.toString()), {
    specversion: '1.0',
    source: 'sluice://gw-01',
    time: new Date(T0).toISOString(),
    sluiceepoch: EPOCH,
    datacontenttype: 'application/json',
    id: `gw-01-${EPOCH}-gap-10`,
    type: 'io.sluice.gap',
    data: { from: 10, to: 12, count: 3, reason: 'rejected' }
  })
})
