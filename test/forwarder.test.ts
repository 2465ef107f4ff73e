/**
 * The forwarder on its own, against a fake upstream (an UpstreamAdapter written here, whose
 * acknowledgements the test gives in any order) and a fake buffer, with an injected clock and
 * timers: what is published, when the ack cursor moves, where a resend starts, how a refusal is
 * retried and set aside, and that stop() leaves nothing scheduled.
 */
import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import type { LogEntry } from '../buffer/index.js'
import type { DeadLetter, PendingRange } from '../buffer/dead-letters.js'
import {
  type UpstreamAdapter, type UpstreamAdapterEvents, type UpstreamFormat, type UpstreamLimits, type UpstreamMessage, UpstreamRejection
} from '../adapters/contract.js'
import { cloudEventsJson } from '../adapters/formats/cloudevents-json.js'
import { Forwarder, type ForwarderLog, type ForwarderTimers } from '../daemon/forwarder.js'
import { createLogger } from '../daemon/logger.js'
import { waitUntil } from './helpers/wait.js'

const EPOCH = 'e'.repeat(32)
const posOf = (seq: number): number => seq * 4 + 3

interface Publish { seq: number, message: UpstreamMessage, resolve: () => void, reject: (err: Error) => void }

/** An upstream whose every PUBACK (or refusal) the test gives by hand. */
class FakeUpstream extends EventEmitter<UpstreamAdapterEvents> implements UpstreamAdapter {
  connected = false
  limits: UpstreamLimits = { receiveMaximum: 65_535, maximumPacketSize: Number.POSITIVE_INFINITY }
  /** every publish, in order, answered or not */
  readonly published: Publish[] = []
  start (): void {}
  async close (): Promise<void> {}
  packetSize (message: UpstreamMessage): number { return message.topic.length + message.payload.length + 10 }
  publish (message: UpstreamMessage, done: (err?: Error) => void): void {
    const event = JSON.parse(message.payload.toString())
    // One answer per publish (a drop after the PUBACK is not one), a turn later, as a real
    // connection gives it.
    let answered = false
    const answer = (err?: Error): void => {
      if (answered) return
      answered = true
      queueMicrotask(() => { done(err) })
    }
    this.published.push({ seq: Number(event.sequence ?? event.data?.from), message, resolve: () => { answer() }, reject: answer })
  }

  up (): void { this.connected = true; this.emit('up') }
  /** The connection drops: every unanswered publish fails, then 'down'. */
  down (): void {
    this.connected = false
    for (const p of this.published) p.reject(new Error('connection closed'))
    this.emit('down', undefined)
  }

  seqs (from = 0): number[] { return this.published.slice(from).map((p) => p.seq) }
}

/** A buffer of readings seq 1..n (position seq*4+3), reads optionally held by the test. */
class FakeLog extends EventEmitter<{ committed: [lastPos: number] }> implements ForwarderLog {
  ackPos = 0
  readonly acks: number[] = []
  readonly entries: LogEntry[] = []
  hold: Promise<void> | null = null
  reads = 0
  /** the limit of each read */
  readonly limits: number[] = []
  get lastCommittedPos (): number { return this.entries.length === 0 ? 0 : posOf(this.entries.length) }
  add (n: number): void {
    for (let i = 0; i < n; i++) {
      const seq = this.entries.length + 1
      this.entries.push({ kind: 'reading', pos: posOf(seq), seq, epoch: EPOCH, time: 1_700_000_000_000 + seq, topic: 'sensors/a/temp', payload: Buffer.from(JSON.stringify({ seq })), storedAt: 0 })
    }
    this.emit('committed', posOf(this.entries.length))
  }

  async read (after: number, limit: number): Promise<LogEntry[]> {
    this.reads++
    this.limits.push(limit)
    if (this.hold !== null) await this.hold
    return this.entries.filter((e) => e.pos > after).slice(0, limit)
  }

  async ack (upTo: number): Promise<void> {
    if (upTo <= this.ackPos) return
    this.ackPos = upTo
    this.acks.push(upTo)
  }
}

class FakeDeadLetters {
  readonly added: DeadLetter[] = []
  private readonly pending: PendingRange[] = []
  pendingFrom (seq: number): PendingRange | undefined { return this.pending.find((r) => r.to >= seq) }
  async add (letters: readonly DeadLetter[]): Promise<void> {
    this.added.push(...letters)
    this.pending.push({ from: letters[0].from, to: letters[0].to, epoch: letters[0].epoch, at: letters[0].at })
  }

  release (seq: number): void {
    while (this.pending.length > 0 && this.pending[0].to <= seq) this.pending.shift()
  }
}

/** A clock the test moves, and the timers that run on it. */
class FakeTime implements ForwarderTimers {
  now = 0
  private timers: Array<{ at: number, callback: () => void }> = []
  get pending (): number { return this.timers.length }
  set = (callback: () => void, ms: number): unknown => {
    const timer = { at: this.now + ms, callback }
    this.timers.push(timer)
    return timer
  }

  clear = (handle: unknown): void => { this.timers = this.timers.filter((x) => x !== handle) }
  advance (ms: number): void {
    this.now += ms
    const due = this.timers.filter((x) => x.at <= this.now)
    this.timers = this.timers.filter((x) => x.at > this.now)
    for (const x of due) x.callback()
  }
}

function setup (t: Test, options: { inflight?: number, rejectRetries?: number, format?: UpstreamFormat } = {}): { forwarder: Forwarder, upstream: FakeUpstream, log: FakeLog, deadLetters: FakeDeadLetters, time: FakeTime } {
  const upstream = new FakeUpstream()
  const log = new FakeLog()
  const deadLetters = new FakeDeadLetters()
  const time = new FakeTime()
  const forwarder = new Forwarder({
    log,
    upstream,
    format: options.format ?? cloudEventsJson({ gateway: 'gw', topic: 'up/{topic}', eventsTopic: 'up/$sluice/{kind}' }),
    deadLetters,
    inflight: options.inflight ?? 4,
    rejectRetries: options.rejectRetries ?? 1,
    backoff: { min: 1000, max: 1000 },
    maxMessagesPerSecond: 0,
    logger: createLogger('silent'),
    now: () => time.now,
    clock: () => 1_700_000_000_000 + time.now,
    timers: time
  })
  t.teardown(async () => { await forwarder.stop(0) })
  return { forwarder, upstream, log, deadLetters, time }
}

t.test('publishes in order within the window; the cursor moves only over a contiguous acknowledged prefix', async (t) => {
  const { forwarder, upstream, log } = setup(t, { inflight: 4 })
  log.add(10)
  forwarder.start()
  upstream.up()
  await waitUntil(() => upstream.published.length === 4, 2000, 'the window full')
  t.same(upstream.seqs(), [1, 2, 3, 4], 'seqs 1..4 in order, no more than the window')
  upstream.published[2].resolve()
  upstream.published[1].resolve()
  await waitUntil(() => forwarder.inFlight === 2, 2000, 'two acknowledgements taken')
  t.equal(forwarder.acknowledged, 0, 'seqs 2 and 3 acknowledged, seq 1 not: the cursor stays')
  t.same(log.acks, [], 'nothing persisted')
  t.equal(upstream.published.length, 4, 'acknowledged messages behind an unanswered one still hold their place in the window')
  upstream.published[0].resolve()
  await waitUntil(() => forwarder.acknowledged === posOf(3), 2000, 'the cursor over 1..3')
  await waitUntil(() => log.acks.includes(posOf(3)), 2000, 'the cursor persisted')
  await waitUntil(() => upstream.published.length === 7, 2000, 'the window refilled')
  t.same(upstream.seqs(4), [5, 6, 7])
  t.equal(forwarder.stats.forwarded, 3)
})

t.test('after a disconnect, sending resumes at the oldest unacknowledged reading; resends are counted', async (t) => {
  const { forwarder, upstream, log } = setup(t, { inflight: 4 })
  log.add(6)
  forwarder.start()
  upstream.up()
  await waitUntil(() => upstream.published.length === 4, 2000, 'the window full')
  upstream.published[0].resolve()
  upstream.published[2].resolve() // acknowledged, but after the unanswered seq 2
  await waitUntil(() => forwarder.acknowledged === posOf(1), 2000, 'the cursor over seq 1')
  await waitUntil(() => upstream.published.length === 5, 2000, 'seq 5 in the room seq 1 left')
  upstream.down()
  t.equal(forwarder.inFlight, 0, 'the window is forgotten with the connection')
  const before = upstream.published.length
  upstream.up()
  await waitUntil(() => upstream.published.length >= before + 4, 2000, 'the window full again')
  t.same(upstream.seqs(before).slice(0, 4), [2, 3, 4, 5], 'resent from seq 2, seq 3 again though it was acknowledged')
  t.equal(forwarder.stats.resent, 4, 'seqs 2..5 were published before')
})

t.test('a refused reading is retried after the backoff, then set aside; the window goes on after it', async (t) => {
  const { forwarder, upstream, log, deadLetters, time } = setup(t, { inflight: 1, rejectRetries: 1 })
  log.add(3)
  forwarder.start()
  upstream.up()
  await waitUntil(() => upstream.published.length === 1, 2000, 'seq 1 published')
  upstream.published[0].resolve()
  await waitUntil(() => upstream.published.length === 2, 2000, 'seq 2 published')
  upstream.published[1].reject(new UpstreamRejection(0x87, 'Not authorized'))
  await waitUntil(() => time.pending === 1, 2000, 'the retry scheduled')
  t.equal(upstream.published.length, 2, 'nothing is published during the backoff')
  time.advance(999)
  t.equal(upstream.published.length, 2, 'not before the backoff is over')
  time.advance(1)
  await waitUntil(() => upstream.published.length === 3, 2000, 'the retry')
  t.equal(upstream.published[2].seq, 2, 'the retry is seq 2 again')
  upstream.published[2].reject(new UpstreamRejection(0x87, 'Not authorized'))
  await waitUntil(() => deadLetters.added.length === 1, 2000, 'seq 2 set aside')
  t.match(deadLetters.added[0], { seq: 2, reason: 'rejected', reasonCode: 0x87, attempts: 2 })
  await waitUntil(() => upstream.published.length === 4, 2000, 'the gap event in its place')
  t.match(JSON.parse(upstream.published[3].message.payload.toString()), { type: 'io.sluice.gap', data: { from: 2, to: 2, reason: 'rejected' } })
  upstream.published[3].resolve()
  await waitUntil(() => upstream.published.length === 5, 2000, 'seq 3 after the gap event')
  t.equal(upstream.published[4].seq, 3)
  upstream.published[4].resolve()
  await waitUntil(() => forwarder.acknowledged === posOf(3), 2000, 'everything acknowledged')
  t.same(forwarder.stats, { forwarded: 2, events: 1, resent: 1, published: 5, rejected: 2, setAside: 1, strikes: 0 })
})

t.test('stop() while a pump is reading leaves no timer behind and publishes nothing more', async (t) => {
  // A batch format that lingers: the pump in progress ends by scheduling a wake-up.
  const base = cloudEventsJson({ gateway: 'gw', topic: 'up/{topic}', eventsTopic: 'up/$sluice/{kind}' })
  const lingering: UpstreamFormat = { ...base, lingerMs: 50, take: (entries) => ({ count: 1, open: entries.length === 1 }) }
  const { forwarder, upstream, log, time } = setup(t, { format: lingering })
  let release = (): void => {}
  log.hold = new Promise<void>((resolve) => { release = resolve })
  log.add(1)
  forwarder.start()
  upstream.up()
  await waitUntil(() => log.reads === 1, 2000, 'the pump reading the buffer')
  const stopped = forwarder.stop(0)
  log.hold = null
  release()
  await stopped
  t.equal(time.pending, 0, 'no wake-up timer is left scheduled')
  time.advance(1000)
  t.equal(upstream.published.length, 0, 'and nothing is published after stop()')
})

t.test('with a backlog, the next chunk is read while the window drains, and every reading goes once, in order', async (t) => {
  // inflight 4: chunks of 64 entries. The window must not wait for LevelDB at each chunk's end.
  const { forwarder, upstream, log } = setup(t, { inflight: 4 })
  log.add(200)
  forwarder.start()
  upstream.up()
  await waitUntil(() => upstream.published.length === 4, 2000, 'the window full')
  t.equal(log.reads, 1, 'one chunk read to start')
  // Hold the next read, then acknowledge until the read-ahead is below half a chunk.
  let release = (): void => {}
  log.hold = new Promise<void>((resolve) => { release = resolve })
  let answered = 0
  while (upstream.published.length < 40) {
    upstream.published[answered++].resolve()
    await waitUntil(() => upstream.published.length === answered + 4, 2000, `the window refilled after ${answered} acknowledgements`)
  }
  t.equal(log.reads, 2, 'the next chunk was asked for with 24 entries of the first still to send')
  release()
  log.hold = null
  while (answered < 200) {
    await waitUntil(() => upstream.published.length > answered, 2000, `publish ${answered + 1}`)
    upstream.published[answered++].resolve()
  }
  await waitUntil(() => forwarder.acknowledged === posOf(200), 2000, 'all 200 acknowledged')
  t.same(upstream.seqs(), Array.from({ length: 200 }, (_, i) => i + 1), 'seqs 1..200, each once, in order')
  t.equal(log.reads, 4, 'four chunks, the last one short: acknowledgements at the head of the log read nothing more')
  log.add(1)
  await waitUntil(() => upstream.published.length === 201, 2000, 'a new commit read and sent')
  t.equal(log.reads, 5, 'one read for the new commit')
})

t.test('a batch format\'s reads hold two of its batches: a batch is not assembled from several reads', async (t) => {
  // 150 entries a message, sent as the CloudEvent of its first (what the fake upstream reads).
  const base = cloudEventsJson({ gateway: 'gw', topic: 'up/{topic}', eventsTopic: 'up/$sluice/{kind}' })
  const batches: UpstreamFormat = {
    ...base,
    maxEntries: 150,
    take: (entries) => ({ count: Math.min(150, entries.length), open: false }),
    encode: (entries) => base.encode([entries[0]])
  }
  const { forwarder, upstream, log } = setup(t, { format: batches, inflight: 4 })
  log.add(600)
  forwarder.start()
  upstream.up()
  await waitUntil(() => upstream.published.length === 4, 2000, 'four batches in flight')
  t.same(upstream.seqs(), [1, 151, 301, 451], 'each batch whole: 150 readings')
  t.ok(log.limits.length > 0 && log.limits.every((limit) => limit === 300), `every read asks for 300 entries (${log.limits.join(', ')})`)
  t.equal(log.reads, 2, 'two reads for four batches')
  for (const p of upstream.published) p.resolve()
  await waitUntil(() => forwarder.acknowledged === posOf(600), 2000, 'all 600 acknowledged')
})
