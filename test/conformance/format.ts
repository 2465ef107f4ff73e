/**
 * The upstream format conformance suite: what adapters/contract.ts promises of every
 * UpstreamFormat, run once per format. A harness builds the format and reads its messages back
 * the way a receiver would (JSON, MQTT 5 user properties and payload, decodeBatch); the suite
 * offers it entries the way the forwarder does (a read-ahead, message by message, under the
 * upstream's limits) and checks that what a receiver reads is what was offered.
 */
import { isDeepStrictEqual } from 'node:util'
import type { Test } from 'tap'
import type { OutgoingEntry, TakeLimits, UpstreamFormat, UpstreamMessage } from '../../adapters/contract.js'
import type { TopicTemplates } from '../../adapters/formats/topics.js'
import { mulberry32 } from '../../scripts/random.js'

export interface FormatHarness {
  /** the format's `name` */
  readonly name: string
  build: (templates: TopicTemplates) => UpstreamFormat
  /** What a receiver reads in one message, in order. Throws when it is not a message of this format. */
  decode: (message: UpstreamMessage, templates: TopicTemplates) => Received[]
}

/** A reading or an event as a receiver reads it. */
export type Received =
  | {
    kind: 'reading'
    seq: number
    epoch: string
    time: number
    topic: string
    /** the sensor's bytes, or, where the format carries a JSON payload as JSON, its value */
    data: { bytes: Uint8Array } | { json: unknown }
  }
  | { kind: 'gap' | 'epoch', epoch: string, data: unknown, topic: string }

/** The topics the suite's formats are built with. */
export const TEMPLATES: TopicTemplates = {
  gateway: 'gw-conformance',
  topic: 'sluice/{gateway}/{topic}',
  eventsTopic: 'sluice/{gateway}/$sluice/{kind}'
}

/** Where a receiver finds sluice's events of `kind` (written out, not computed by sluice's code). */
const eventsTopic = (kind: string): string => `sluice/gw-conformance/$sluice/${kind}`

/**
 * sluice's own events as every format sends them: a structured JSON CloudEvent. How a receiver
 * reads one; harnesses use it for the messages that are not readings.
 */
export function readEvent (message: UpstreamMessage): Received {
  const event = JSON.parse(message.payload.toString('utf8')) as Record<string, unknown>
  if (event.specversion !== '1.0') throw new Error(`not a CloudEvent: ${message.payload.toString('utf8').slice(0, 80)}`)
  const kind = event.type === 'io.sluice.gap' ? 'gap' : event.type === 'io.sluice.epoch' ? 'epoch' : null
  if (kind === null) throw new Error(`not an event of sluice's: type ${String(event.type)}`)
  return { kind, epoch: String(event.sluiceepoch), data: event.data, topic: message.topic }
}

// ------------------------------------------------------------------ entries

const T0 = 1_700_000_000_123 // past 2^32 ms

/** Payloads of every shape a sensor sends; each, by how it starts, may or may not be taken for JSON. */
function payloadFor (n: number, next: () => number): Uint8Array {
  const shapes: Array<() => Uint8Array> = [
    () => Buffer.from(`{"n":${n},"t":21.5}`),
    () => Buffer.from(`[${n},2,3]`),
    () => Buffer.from(`  {"a" : [1, {"b":null}], "unit":"°C", "emoji":"🌡"}\n`),
    () => Buffer.from(`{"big":12345678901234567890,"n":${n}}`),
    () => Buffer.from(String(n)), // JSON, but not an object or array
    () => Buffer.from('"a JSON string"'),
    () => Buffer.from('{"cut":'), // starts like JSON, is not
    () => new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), // '{' then invalid UTF-8
    () => new Uint8Array(0),
    () => Uint8Array.from({ length: Math.floor(next() * 300) }, () => Math.floor(next() * 256)),
    () => Buffer.alloc(2500 + Math.floor(next() * 1000), n % 256), // larger than a small batch
    // A view into a larger buffer, as a payload read from LevelDB or a socket can be.
    () => Buffer.from(`xx{"view":${n}}yy`).subarray(2, -2),
    () => new Uint8Array(Buffer.from(`~~[${n}]~~`)).subarray(2, -2)
  ]
  return shapes[Math.floor(next() * shapes.length)]()
}

const TOPICS = ['sensors/s1/temp', 'sensors/ünïcødé/température', 'a', `deep/${'x/'.repeat(30)}end`, 'sensors/$odd/+literal']

/**
 * A stream as the log holds it: readings with contiguous seqs, gap events where readings were
 * dropped (at the seq of the first dropped one), and an epoch event before the first reading of a
 * new epoch (at that reading's seq).
 */
export function entryStream (length: number, seed: number): OutgoingEntry[] {
  const next = mulberry32(seed)
  const entries: OutgoingEntry[] = []
  let epoch = '0123456789abcdef0123456789abcdef'
  let epochs = 0
  let last = 0
  while (entries.length < length) {
    const roll = next()
    if (roll < 0.01) {
      // A new epoch with no event between: nothing in the contract lets a format rely on one.
      epoch = `${String(++epochs).padStart(2, '0')}${'cd'.repeat(15)}`
    } else if (roll < 0.07) {
      const count = 1 + Math.floor(next() * 5)
      const reasons = ['overflow', 'ttl', 'rejected', 'corrupt'] as const
      entries.push({ kind: 'gap', seq: last + 1, epoch, time: T0 + last, data: { from: last + 1, to: last + count, count, reason: reasons[Math.floor(next() * reasons.length)] } })
      last += count
    } else if (roll < 0.1) {
      const previous = epoch
      epoch = `${String(++epochs).padStart(2, '0')}${'ab'.repeat(15)}`
      entries.push({ kind: 'epoch', seq: last + 1, epoch, time: T0 + last, data: { epoch, previous, lastDurableSeq: Math.max(0, last - 3), reason: 'power-loss' } })
    } else {
      last++
      entries.push({ kind: 'reading', seq: last, epoch, time: T0 + last * 7, topic: TOPICS[Math.floor(next() * TOPICS.length)], payload: payloadFor(last, next) })
    }
  }
  return entries
}

/** The bounds the forwarder may put on a message: none, isolating one entry, an upstream's Maximum Packet Size. */
const LIMITS: TakeLimits[] = [
  { maxEntries: Number.POSITIVE_INFINITY, maxBytes: Number.POSITIVE_INFINITY },
  { maxEntries: 1, maxBytes: Number.POSITIVE_INFINITY },
  { maxEntries: 3, maxBytes: Number.POSITIVE_INFINITY },
  { maxEntries: Number.POSITIVE_INFINITY, maxBytes: 600 },
  { maxEntries: Number.POSITIVE_INFINITY, maxBytes: 64 }, // smaller than most single readings
  { maxEntries: 7, maxBytes: 2000 },
  { maxEntries: 1000, maxBytes: 8192 }
]

// ------------------------------------------------------------------ comparing

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** What a receiver must read for `entry`, or why `got` is not it. */
function mismatch (entry: OutgoingEntry, got: Received | undefined): string | null {
  const what = `${entry.kind} seq ${entry.seq}`
  if (got === undefined) return `${what}: missing`
  if (got.kind !== entry.kind) return `${what}: read a ${got.kind} instead`
  if (got.epoch !== entry.epoch) return `${what}: epoch ${got.epoch}, not ${entry.epoch}`
  if (entry.kind !== 'reading') {
    if (got.kind === 'reading') return `${what}: read a reading`
    if (got.topic !== eventsTopic(entry.kind)) return `${what}: on ${got.topic}, not the events topic ${eventsTopic(entry.kind)}`
    if (!isDeepStrictEqual(got.data, entry.data)) return `${what}: data ${JSON.stringify(got.data)}, not ${JSON.stringify(entry.data)}`
    return null
  }
  if (got.kind !== 'reading') return `${what}: read a ${got.kind}`
  if (got.seq !== entry.seq) return `${what}: read seq ${got.seq}`
  if (got.time !== entry.time) return `${what}: time ${got.time}, not ${entry.time}`
  if (got.topic !== entry.topic) return `${what}: topic ${got.topic}, not ${entry.topic}`
  if ('bytes' in got.data) {
    return Buffer.from(got.data.bytes).equals(Buffer.from(entry.payload)) ? null : `${what}: payload bytes differ`
  }
  // Carried as JSON: the sensor's bytes must have been JSON, and mean the same.
  let sent: unknown
  try {
    sent = JSON.parse(utf8.decode(entry.payload))
  } catch {
    return `${what}: its payload is not JSON, yet it was carried as JSON`
  }
  return isDeepStrictEqual(got.data.json, sent) ? null : `${what}: JSON ${JSON.stringify(got.data.json)}, not ${JSON.stringify(sent)}`
}

/** Entries against what a receiver read, one by one. */
function compare (entries: readonly OutgoingEntry[], received: readonly Received[]): string[] {
  const problems: string[] = []
  for (let i = 0; i < entries.length; i++) {
    const problem = mismatch(entries[i], received[i])
    if (problem !== null) problems.push(`#${i} ${problem}`)
  }
  if (received.length > entries.length) problems.push(`${received.length - entries.length} more read than were offered`)
  return problems
}

/** What is wrong with `format.take(entries, limits)`, and with the message it makes. */
function takeProblems (format: UpstreamFormat, harness: FormatHarness, entries: readonly OutgoingEntry[], limits: TakeLimits): string[] {
  const where = `take(${entries.length} entries from seq ${entries[0].seq}, maxEntries ${limits.maxEntries}, maxBytes ${limits.maxBytes})`
  const { count, open } = format.take(entries, limits)
  if (!Number.isInteger(count) || count < 1) return [`${where}: count ${count}, not at least 1`]
  const problems: string[] = []
  if (count > entries.length) return [`${where}: count ${count}, more than offered`]
  if (limits.maxEntries >= 1 && count > limits.maxEntries) problems.push(`${where}: count ${count} over maxEntries`)
  if (open && count !== entries.length) problems.push(`${where}: open, yet took ${count}, not all`)
  if (open && count >= limits.maxEntries) problems.push(`${where}: open (room for more), yet at maxEntries`)
  const message = format.encode(entries.slice(0, count))
  // One entry is as small as a message gets: whether it may go is the forwarder's call.
  if (count > 1 && message.payload.length > limits.maxBytes) problems.push(`${where}: ${count} entries make ${message.payload.length} payload bytes, over maxBytes`)
  problems.push(...compare(entries.slice(0, count), harness.decode(message, TEMPLATES)).map((p) => `${where}: ${p}`))
  return problems
}

// ------------------------------------------------------------------ the suite

export function formatConformance (t: Test, harness: FormatHarness): void {
  const format = harness.build(TEMPLATES)

  t.test('name and lingerMs', async (t) => {
    t.equal(format.name, harness.name)
    t.ok(Number.isFinite(format.lingerMs) && format.lingerMs >= 0, `lingerMs ${format.lingerMs}: milliseconds, 0 or more`)
  })

  t.test('every reading\'s seq, epoch, time, topic and payload can be read back from its message', async (t) => {
    const readings = entryStream(400, 1).filter((e) => e.kind === 'reading')
    const problems: string[] = []
    for (const r of readings) {
      const message = format.encode([r])
      if (!Buffer.isBuffer(message.payload)) problems.push(`seq ${r.seq}: the payload is not a Buffer`)
      problems.push(...compare([r], harness.decode(message, TEMPLATES)))
    }
    t.same(problems, [], `${readings.length} readings of assorted payloads and topics, each alone in a message`)
  })

  t.test('gap and epoch entries become events on the events topic', async (t) => {
    const epoch = 'fedcba9876543210fedcba9876543210'
    const reading = (seq: number): OutgoingEntry => ({ kind: 'reading', seq, epoch, time: T0 + seq, topic: 'sensors/a', payload: Buffer.from(`{"n":${seq}}`) })
    const gap: OutgoingEntry = { kind: 'gap', seq: 10, epoch, time: T0, data: { from: 10, to: 14, count: 5, reason: 'overflow' } }
    const epochEvent: OutgoingEntry = { kind: 'epoch', seq: 20, epoch, time: T0, data: { epoch, previous: '0'.repeat(32), lastDurableSeq: 17, reason: 'power-loss' } }
    const unlimited = LIMITS[0]
    for (const event of [gap, epochEvent]) {
      // Alone, first before readings, and after readings: each time it reads back as the event it is.
      for (const entries of [[event], [event, reading(event.seq + 5), reading(event.seq + 6)], [reading(event.seq - 2), reading(event.seq - 1), event]]) {
        let rest = entries
        const received: Received[] = []
        const topics: string[] = []
        while (rest.length > 0) {
          const { count } = format.take(rest, unlimited)
          const message = format.encode(rest.slice(0, Math.max(1, count)))
          const read = harness.decode(message, TEMPLATES)
          if (read.some((r) => r.kind === event.kind)) topics.push(message.topic)
          received.push(...read)
          rest = rest.slice(Math.max(1, count))
        }
        t.same(compare(entries, received), [], `${event.kind} among ${entries.length} entries: read back in place`)
        t.same(topics, [eventsTopic(event.kind)], `its message goes to ${eventsTopic(event.kind)}`)
      }
    }
  })

  t.test('take(): at least 1, no more than offered or limits.maxEntries; the message fits limits.maxBytes; open only when it took all', async (t) => {
    const stream = entryStream(1500, 2)
    const next = mulberry32(3)
    const problems: string[] = []
    let cases = 0
    for (let i = 0; i < 300; i++) {
      const from = Math.floor(next() * (stream.length - 1))
      const entries = stream.slice(from, from + 1 + Math.floor(next() * 60))
      for (const limits of LIMITS) {
        cases++
        problems.push(...takeProblems(format, harness, entries, limits))
      }
    }
    t.same(problems.slice(0, 20), [], `${cases} takes of read-aheads from the stream under ${LIMITS.length} kinds of limits${problems.length > 20 ? ` (${problems.length} problems in all)` : ''}`)

    // Every maxBytes from 1 to 1500: a message a few bytes over the bound shows up here.
    const small = stream.filter((e) => e.kind !== 'reading' || e.payload.length < 100)
    const sweep: string[] = []
    for (const from of [0, 100, 200, 300, 400]) {
      const entries = small.slice(from, from + 40)
      for (let maxBytes = 1; maxBytes <= 1500; maxBytes++) sweep.push(...takeProblems(format, harness, entries, { maxEntries: Number.POSITIVE_INFINITY, maxBytes }))
    }
    t.same(sweep.slice(0, 20), [], `5 read-aheads of small entries under every maxBytes from 1 to 1500${sweep.length > 20 ? ` (${sweep.length} problems in all)` : ''}`)
  })

  t.test('a stream of mixed entries, message by message: every entry read back once, in order', async (t) => {
    const stream = entryStream(3000, 4)
    const next = mulberry32(5)
    const received: Received[] = []
    let rest: readonly OutgoingEntry[] = stream
    let messages = 0
    while (rest.length > 0) {
      // What the forwarder has read ahead, and the bounds of the moment.
      const readAhead = rest.slice(0, 1 + Math.floor(next() * 80))
      const limits = LIMITS[Math.floor(next() * LIMITS.length)]
      const { count } = format.take(readAhead, limits)
      if (!(count >= 1 && count <= readAhead.length)) {
        t.fail(`take returned count ${count} for ${readAhead.length} entries`)
        return
      }
      received.push(...harness.decode(format.encode(readAhead.slice(0, count)), TEMPLATES))
      rest = rest.slice(count)
      messages++
    }
    const seqs = (list: ReadonlyArray<{ kind: string, seq?: number }>): number[] => list.flatMap((e) => e.kind === 'reading' && e.seq !== undefined ? [e.seq] : [])
    const readings = stream.filter((e) => e.kind === 'reading')
    t.same(seqs(received), seqs(stream), `each of the ${readings.length} readings' seqs once, in order`)
    t.same(compare(stream, received).slice(0, 20), [], `all ${stream.length} entries (${stream.length - readings.length} events) read back as offered, in ${messages} messages`)
  })
}
