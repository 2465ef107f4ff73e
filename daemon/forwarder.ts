import type { Logger } from 'pino'
import { type LogEntry, readingSeqAtOrBefore } from '../buffer/index.js'
import type { DeadLetter, PendingRange } from '../buffer/dead-letters.js'
import { type UpstreamAdapter, type UpstreamFormat, type UpstreamMessage, UpstreamRejection } from '../adapters/contract.js'
import { type Entry, isSetAsideGap, nextMessage } from './next-message.js'
import { TokenBucket } from './rate-limit.js'
import { type Advance, type InFlightMessage, InFlightWindow } from './inflight.js'
import { SetAsidePolicy, type SetAsideRequest, setAsideReadings } from './set-aside.js'
import { type ForwarderTimers, WakeTimer } from './wake-timer.js'

export type { ForwarderTimers } from './wake-timer.js'

/** What the forwarder needs of the buffer. */
export interface ForwarderLog {
  readonly ackPos: number
  /** the position of the last entry committed: nothing past it can be read */
  readonly lastCommittedPos: number
  read: (after: number, limit: number) => Promise<LogEntry[]>
  ack: (upTo: number) => Promise<void>
  on: (event: 'committed', listener: (lastPos: number) => void) => unknown
  off: (event: 'committed', listener: (lastPos: number) => void) => unknown
}

/** What the forwarder needs of the dead-letter store. */
export interface ForwarderDeadLetters {
  pendingFrom: (seq: number) => PendingRange | undefined
  add: (letters: readonly DeadLetter[]) => Promise<void>
  release: (seq: number) => void
}

export interface ForwarderOptions {
  log: ForwarderLog
  upstream: UpstreamAdapter
  format: UpstreamFormat
  deadLetters: ForwarderDeadLetters
  /** messages published and not yet acknowledged, at most (the upstream's Receive Maximum may lower it) */
  inflight: number
  /** how often a message the upstream refuses is retried before it is set aside */
  rejectRetries: number
  /** delays before retrying a refused message, in ms: exponential from min to max, with jitter */
  backoff: { min: number, max: number }
  /** most messages published per second; 0 = no cap */
  maxMessagesPerSecond: number
  logger: Logger
  /** monotonic milliseconds; injectable for tests */
  now?: () => number
  /** milliseconds since 1970, for the time a reading is set aside */
  clock?: () => number
  /** the forwarder's one wake-up timer; injectable for tests (with `now`) */
  timers?: ForwarderTimers
}

export interface ForwarderStats {
  /** readings the upstream has acknowledged */
  forwarded: number
  /** events (epoch, gap) the upstream has acknowledged */
  events: number
  /** readings published again after a reconnect (the receiver may see them twice) */
  resent: number
  /** messages published, first sends and resends */
  published: number
  /** PUBACKs with a reason code >= 0x80 (MQTT 5): refusals, retried or not */
  rejected: number
  /** readings set aside (dead letters), announced by a gap event with reason `rejected` */
  setAside: number
  /** disconnects that came while the oldest message in flight was a suspect (poison-pill strikes) */
  strikes: number
}

/** Disconnects in a row, within STRIKE_WINDOW_MS of sending, that make a message a poison pill. */
const POISON_STRIKES = 3
const STRIKE_WINDOW_MS = 10_000
/** MQTT 5 reason code "Packet too large": what a dead letter too big for the upstream records. */
const PACKET_TOO_LARGE = 0x95

/**
 * Moves entries from the buffer to the upstream, in position order, at least once (docs/guarantees.md §3).
 *
 * Up to `inflight` messages (fewer if the upstream's Receive Maximum says so) are published
 * before the first is acknowledged. Acknowledgements may come in any order; the ack cursor only
 * moves over a contiguous acknowledged prefix, so after a disconnect the forwarder resends from
 * the oldest unacknowledged entry: a receiver sees at most a resent suffix, never a reading out of
 * order. The backlog is read from disk a chunk at a time; the heap holds only the window and one
 * chunk, however large the backlog.
 *
 * What the upstream will not take is set aside (docs/guarantees.md §8): a refused message (MQTT 5 PUBACK reason
 * >= 0x80) after `rejectRetries` retries, a message it disconnects on three times running, and one
 * larger than its Maximum Packet Size at once. Its readings go to the dead-letter store, and a gap
 * event (reason `rejected`) is sent in their place, in order; the readings leave the log once the
 * upstream has acknowledged that gap event, so a gap event lost to a disconnect is sent again.
 */
export class Forwarder {
  readonly stats: ForwarderStats = { forwarded: 0, events: 0, resent: 0, published: 0, rejected: 0, setAside: 0, strikes: 0 }
  private readonly options: ForwarderOptions
  private readonly readChunk: number
  private readonly now: () => number
  private readonly clock: () => number
  private readonly timer: WakeTimer
  private readonly bucket: TokenBucket
  private readonly policy: SetAsidePolicy
  /** bumped on every (re)connect; replies from an older connection are ignored */
  private session = 0
  /** what is in flight, the acknowledged prefix (maybe not yet persisted by the log), where a resend starts */
  private readonly window: InFlightWindow
  /** entries after the cursor, read and not yet published */
  private readAhead: Entry[] = []
  /** the last position read into readAhead */
  private readPos: number
  /** the read in progress, if any */
  private reading: Promise<boolean> | null = null
  /** the last read filled its chunk: more is waiting in the log */
  private backlogAhead = false
  /** one message at a time until everything up to here is acknowledged (finding a culprit) */
  private isolateUpTo = -1
  /** a refusal is being handled: nothing new is sent until every message in flight has its answer */
  private recovering = false
  /** no publish before this (monotonic ms): the backoff before retrying a refused message */
  private holdUntil = 0
  private setAsideRequest: SetAsideRequest | null = null
  /** the batch waiting for more entries: its first position and since when */
  private linger: { pos: number, since: number } | null = null
  private pumping: Promise<void> | null = null
  private wakeAgain = false
  private stopping = false
  private drained: (() => void) | null = null
  private readonly wake = (): void => { this.pump() }
  private readonly onUp = (): void => { this.reset(); this.pump() }
  private readonly onDown = (): void => { this.noteDisconnect(); this.reset() }

  constructor (options: ForwarderOptions) {
    this.options = options
    this.now = options.now ?? (() => performance.now())
    this.clock = options.clock ?? Date.now
    this.timer = new WakeTimer(() => { this.pump() }, this.now, options.timers)
    this.bucket = new TokenBucket(options.maxMessagesPerSecond, this.now)
    this.policy = new SetAsidePolicy({ rejectRetries: options.rejectRetries, strikes: POISON_STRIKES, strikeWindowMs: STRIKE_WINDOW_MS })
    this.window = new InFlightWindow(options.log.ackPos)
    this.readPos = this.window.resumeAfter
    // Enough read-ahead to keep the window full, and two batches' worth, without holding much of
    // the backlog in memory. Each read is a round trip to LevelDB's thread: a 200-reading batch
    // read 128 entries at a time took two of them.
    this.readChunk = Math.min(1000, Math.max(64, options.inflight * 2, options.format.maxEntries * 2))
  }

  start (): void {
    const { upstream, log } = this.options
    upstream.on('up', this.onUp)
    upstream.on('down', this.onDown)
    log.on('committed', this.wake)
    if (upstream.connected) this.onUp()
  }

  /** Messages published and not yet acknowledged. */
  get inFlight (): number { return this.window.unacked }

  /** The position up to which the upstream has acknowledged everything. */
  get acknowledged (): number { return this.window.ackedPos }

  /** After a (re)connect or a disconnect: forget the window and resume after the ack cursor. */
  private reset (): void {
    this.session++
    this.window.clear()
    this.readAhead = []
    this.readPos = this.window.resumeAfter
    this.recovering = false
    this.linger = null
    this.drained?.()
  }

  /** The connection dropped: was the oldest message in flight the reason? (docs/guarantees.md §8) */
  private noteDisconnect (): void {
    const oldest = this.window.oldestUnacked()
    if (oldest === undefined) return
    const decision = this.policy.disconnected({
      oldest: oldest.firstPos,
      sentAgoMs: this.now() - oldest.sentAt,
      isolated: this.window.unacked === 1
    })
    if (decision.strikes === 0) return
    this.stats.strikes++
    if (decision.isolate) this.isolateUpTo = Math.max(this.isolateUpTo, this.window.lastPos ?? -1)
    if (decision.setAside) {
      this.setAsideRequest = { firstPos: oldest.firstPos, lastPos: oldest.lastPos, gap: oldest.gap, reason: 'disconnected', reasonCode: null, attempts: decision.strikes }
    }
    // The first strike is any disconnect with messages in flight: not news yet.
    this.options.logger[decision.strikes >= 2 ? 'warn' : 'debug']({ firstPos: oldest.firstPos, strikes: decision.strikes, isolating: decision.isolate },
      'the upstream disconnected again with the same message the oldest in flight')
  }

  private pump (): void {
    if (this.stopping) return
    if (this.pumping !== null) {
      this.wakeAgain = true
      return
    }
    this.pumping = this.fill().catch((err: unknown) => {
      this.options.logger.error({ err }, 'forwarder failed to read the buffer')
    }).finally(() => {
      this.pumping = null
      if (this.wakeAgain && !this.stopping) {
        this.wakeAgain = false
        this.pump()
      }
    })
  }

  /** Runs `pump` again in `ms` (one timer, for the earliest reason: batch delay, rate cap, retry backoff). */
  private wakeIn (ms: number): void {
    // A pump that was running when stop() began must not leave a timer behind it.
    if (this.stopping) return
    this.timer.in(ms)
  }

  private windowLimit (): number {
    if (this.isolateUpTo > this.window.ackedPos) return 1
    return Math.max(1, Math.min(this.options.inflight, this.options.upstream.limits.receiveMaximum))
  }

  private async fill (): Promise<void> {
    const { upstream } = this.options
    while (!this.stopping) {
      if (this.setAsideRequest !== null) {
        await this.setAside(this.setAsideRequest)
        continue
      }
      if (!upstream.connected || this.recovering || this.window.size >= this.windowLimit()) return
      const hold = this.holdUntil - this.now()
      if (hold > 0) return this.wakeIn(hold)
      const session = this.session
      if (this.readAhead.length === 0 && !(await this.readMore())) return
      if (session !== this.session) continue

      const plan = nextMessage(this.readAhead, {
        format: this.options.format,
        upstream: this.options.upstream,
        deadLetters: this.options.deadLetters,
        isolate: this.isolateUpTo > this.window.ackedPos
      })
      if (plan.kind === 'too-large') {
        // Alone larger than the upstream takes: it could never be sent. Set aside at once.
        const { entry, bytes } = plan
        this.options.logger.warn({ pos: entry.pos, bytes, maximumPacketSize: this.options.upstream.limits.maximumPacketSize },
          'a message is larger than the upstream\'s Maximum Packet Size: set aside')
        this.setAsideRequest = { firstPos: entry.pos, lastPos: entry.pos, gap: entry.kind === 'gap', reason: 'too-large', reasonCode: PACKET_TOO_LARGE, attempts: 0 }
        continue
      }
      if (plan.open && this.options.format.lingerMs > 0) {
        // A batch with room to spare: take what was committed meanwhile, else wait a little for more.
        if (await this.readMore()) continue
        if (session !== this.session) continue
        const head = plan.entries[0].pos
        if (this.linger?.pos !== head) this.linger = { pos: head, since: this.now() }
        const left = this.linger.since + this.options.format.lingerMs - this.now()
        if (left > 0) return this.wakeIn(left)
      }
      const wait = this.bucket.delay()
      if (wait > 0) return this.wakeIn(wait)
      this.publish(plan.entries, plan.message, session)
      this.readAheadEarly()
    }
  }

  /**
   * Reads the next chunk after readPos into readAhead; false when nothing new was committed. One
   * read at a time: a caller that comes while one is on its way waits for that one.
   */
  private async readMore (): Promise<boolean> {
    // Caught up: a read would find nothing (at the head of the log, every acknowledgement and
    // commit would otherwise start one, with its promises and the buffer's read gate).
    if (this.reading === null && this.readPos >= this.options.log.lastCommittedPos) return false
    this.reading ??= this.readNext().finally(() => { this.reading = null })
    return await this.reading
  }

  private async readNext (): Promise<boolean> {
    const session = this.session
    const entries = await this.options.log.read(this.readPos, this.readChunk)
    if (session !== this.session) return true // the caller starts over
    this.backlogAhead = entries.length === this.readChunk
    // A range set aside while the read was on its way has been passed over already.
    let from = 0
    while (from < entries.length && entries[from].pos <= this.readPos) from++
    if (from === entries.length) return false
    for (let i = from; i < entries.length; i++) this.readAhead.push(entries[i])
    this.readPos = entries[entries.length - 1].pos
    return true
  }

  /**
   * With a backlog behind the read-ahead, reads the next chunk while the window drains: waiting
   * for LevelDB with the read-ahead empty left the window idle once per chunk (the drain of a
   * backlog ran 2 ms round trips with a 64-message window).
   */
  private readAheadEarly (): void {
    if (!this.backlogAhead || this.reading !== null || this.readAhead.length >= this.readChunk / 2) return
    this.readMore().catch((err: unknown) => {
      if (!this.stopping) this.options.logger.error({ err }, 'forwarder failed to read the buffer')
    })
  }

  private publish (entries: Entry[], message: UpstreamMessage, session: number): void {
    const last = entries[entries.length - 1]
    const readings = entries.filter((e) => e.kind === 'reading').length
    this.passOver(last.pos)
    this.linger = null
    const { message: slot, resent } = this.window.sent({
      firstPos: entries[0].pos,
      lastPos: last.pos,
      gap: isSetAsideGap(last),
      readings,
      events: entries.length - readings,
      sentAt: this.now()
    })
    this.bucket.take()
    if (resent) this.stats.resent += readings
    this.stats.published++
    this.options.upstream.publish(message, (err) => {
      if (err === undefined) return this.onAck(session, slot)
      if (session !== this.session) return
      if (err instanceof UpstreamRejection) this.onReject(slot, err)
      // Otherwise the connection dropped; its 'down' resets the window and the entry is resent.
    })
  }

  private onAck (session: number, slot: InFlightMessage): void {
    if (session !== this.session) return
    this.advanced(this.window.acknowledge(slot))
    if (this.recovering) this.recover()
    this.pump()
  }

  /** The ack cursor moved over the acknowledged prefix of the window: count it and persist it. */
  private advanced (advance: Advance | null): void {
    if (advance === null) return
    this.stats.forwarded += advance.readings
    this.stats.events += advance.events
    this.settled(advance.ackedPos)
    if (advance.drained) this.drained?.()
  }

  /** Everything up to `pos` is acknowledged or passed over: persist the cursor, forget suspicions. */
  private settled (pos: number): void {
    this.policy.acknowledged(pos)
    this.options.deadLetters.release(readingSeqAtOrBefore(pos))
    this.options.log.ack(pos).catch(this.ackFailed)
  }

  private readonly ackFailed = (err: unknown): void => {
    this.options.logger.error({ err }, 'could not persist the ack cursor')
  }

  private onReject (slot: InFlightMessage, err: UpstreamRejection): void {
    this.window.refuse(slot, err.reasonCode)
    this.stats.rejected++
    this.options.logger.warn({ firstPos: slot.firstPos, lastPos: slot.lastPos, reasonCode: err.reasonCode, reason: err.message },
      'the upstream refused a message')
    this.recovering = true
    this.recover()
  }

  /**
   * After a refusal: once every message in flight has its answer, go back to the refused one
   * (the oldest unacknowledged) and, one message at a time past what was in flight, retry it
   * after a backoff, or set it aside when it has been refused too often. Messages after it that
   * were acknowledged meanwhile are sent again (duplicates, as after a disconnect): resending from
   * the ack cursor keeps one rule for every recovery. With more than one message in flight, those
   * after the refused one reach the receiver before it (or before its gap event): the first-arrival
   * order of docs/guarantees.md §3 holds across a refusal only with `inflight: 1`.
   */
  private recover (): void {
    if (!this.window.allAnswered()) return
    const refused = this.window.firstRefused()
    this.recovering = false
    if (refused === undefined) return
    this.isolateUpTo = Math.max(this.isolateUpTo, this.window.lastPos ?? -1)
    const decision = this.policy.rejected(refused.firstPos)
    if (decision.action === 'set-aside') {
      this.setAsideRequest = { firstPos: refused.firstPos, lastPos: refused.lastPos, gap: refused.gap, reason: 'rejected', reasonCode: refused.rejected, attempts: decision.attempts }
    } else {
      const { min, max } = this.options.backoff
      this.holdUntil = this.now() + Math.min(max, min * 2 ** (decision.attempt - 1) * (1 + Math.random()))
    }
    // Every message in flight has its answer, so a new session on the same connection leaves
    // nothing of the old one pending at the upstream (its Receive Maximum counts those).
    this.reset()
    this.pump()
  }

  /**
   * Sets a message's readings aside (daemon/set-aside.ts): they are still the next entries to
   * send, and nextMessage() now finds them set aside and makes the gap event. A message without
   * readings of its own is passed over.
   */
  private async setAside (request: SetAsideRequest): Promise<void> {
    const { log, deadLetters, logger } = this.options
    const readings = await setAsideReadings(request, {
      read: async (after, limit) => await log.read(after, limit),
      add: async (letters) => { await deadLetters.add(letters) },
      clock: this.clock,
      chunk: this.readChunk,
      logger
    })
    if (readings === 0) this.skip(request)
    else this.stats.setAside += readings
    if (this.setAsideRequest === request) this.setAsideRequest = null
  }

  /** Treats a message that will never be sent as done, in its place in the window. */
  private skip (request: SetAsideRequest): void {
    if (request.lastPos <= this.window.ackedPos) return
    this.passOver(request.lastPos)
    this.advanced(this.window.passOver(request.firstPos, request.lastPos, this.now()))
  }

  /** The next message starts after `pos`: drop what the read-ahead holds up to there. */
  private passOver (pos: number): void {
    let n = 0
    while (n < this.readAhead.length && this.readAhead[n].pos <= pos) n++
    this.readAhead.splice(0, n)
    if (this.readPos < pos) this.readPos = pos
  }

  /**
   * Stops publishing, waits up to `graceMs` for in-flight messages to be acknowledged, and
   * persists the ack cursor. What is still unacknowledged is resent at the next start.
   */
  async stop (graceMs: number): Promise<void> {
    this.stopping = true
    const { upstream, log } = this.options
    upstream.off('up', this.onUp)
    upstream.off('down', this.onDown)
    log.off('committed', this.wake)
    // The pump in progress may set the wake-up timer again before it ends: clear it after.
    await this.pumping
    await this.reading?.catch(() => {})
    this.timer.clear()
    if (this.window.unacked > 0 && upstream.connected) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(finish, graceMs)
        const onDown = (): void => { finish() }
        upstream.once('down', onDown)
        this.drained = finish
        function finish (): void {
          clearTimeout(timer)
          upstream.off('down', onDown)
          resolve()
        }
      })
      this.drained = null
    }
    this.session++ // late acknowledgements no longer count
    await log.ack(this.window.ackedPos)
  }
}
