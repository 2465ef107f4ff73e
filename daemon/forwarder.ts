import type { Logger } from 'pino'
import type { LogEntry } from '../buffer/index.js'
import type { UpstreamAdapter, UpstreamFormat } from '../adapters/contract.js'

/** What the forwarder needs of the buffer. */
export interface ForwarderLog {
  readonly ackPos: number
  read: (after: number, limit: number) => Promise<LogEntry[]>
  ack: (upTo: number) => Promise<void>
  on: (event: 'committed', listener: (lastPos: number) => void) => unknown
  off: (event: 'committed', listener: (lastPos: number) => void) => unknown
}

export interface ForwarderOptions {
  log: ForwarderLog
  upstream: UpstreamAdapter
  format: UpstreamFormat
  /** messages published and not yet acknowledged, at most */
  inflight: number
  logger: Logger
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
}

interface InFlight { lastPos: number, readings: number, events: number, acked: boolean }

/**
 * Moves entries from the buffer to the upstream, in position order, at least once [SPEC 2.3].
 *
 * Up to `inflight` messages are published before the first is acknowledged. Acknowledgements may
 * come in any order; the ack cursor only moves over a contiguous acknowledged prefix, so after a
 * disconnect the forwarder resends from the oldest unacknowledged entry: a receiver sees at most
 * a resent suffix, never a reading out of order. The backlog is read from disk a chunk at a time;
 * the heap holds only the window and one chunk, however large the backlog.
 */
export class Forwarder {
  readonly stats: ForwarderStats = { forwarded: 0, events: 0, resent: 0, published: 0 }
  private readonly options: ForwarderOptions
  private readonly readChunk: number
  /** bumped on every (re)connect; replies from an older connection are ignored */
  private session = 0
  /** the entries up to here are acknowledged upstream (maybe not yet persisted by the log) */
  private ackedPos: number
  /** the next read starts after this position */
  private cursor: number
  /** the highest position ever published, to count resends */
  private sentPos: number
  private window: InFlight[] = []
  private readAhead: LogEntry[] = []
  private pumping = false
  private wakeAgain = false
  private stopping = false
  private drained: (() => void) | null = null
  private readonly wake = (): void => { this.pump() }
  private readonly onUp = (): void => { this.reset(); this.pump() }
  private readonly onDown = (): void => { this.reset() }

  constructor (options: ForwarderOptions) {
    this.options = options
    this.ackedPos = options.log.ackPos
    this.cursor = this.ackedPos
    this.sentPos = this.ackedPos
    // Enough read-ahead to keep the window full without holding much of the backlog in memory.
    this.readChunk = Math.min(1000, Math.max(64, options.inflight * 2))
  }

  start (): void {
    const { upstream, log } = this.options
    upstream.on('up', this.onUp)
    upstream.on('down', this.onDown)
    log.on('committed', this.wake)
    if (upstream.connected) this.onUp()
  }

  /** Entries published and not yet acknowledged. */
  get inFlight (): number { return this.window.length }

  /** The position up to which the upstream has acknowledged everything. */
  get acknowledged (): number { return this.ackedPos }

  /** After a (re)connect or a disconnect: forget the window and resume after the ack cursor. */
  private reset (): void {
    this.session++
    this.window = []
    this.readAhead = []
    this.cursor = this.ackedPos
    this.drained?.()
  }

  private pump (): void {
    if (this.pumping) {
      this.wakeAgain = true
      return
    }
    this.pumping = true
    this.fill().catch((err: unknown) => {
      this.options.logger.error({ err }, 'forwarder failed to read the buffer')
    }).finally(() => {
      this.pumping = false
      if (this.wakeAgain) {
        this.wakeAgain = false
        this.pump()
      }
    })
  }

  private async fill (): Promise<void> {
    const { upstream, log, format, inflight } = this.options
    while (!this.stopping && upstream.connected && this.window.length < inflight) {
      const session = this.session
      if (this.readAhead.length === 0) {
        const entries = await log.read(this.cursor, this.readChunk)
        if (session !== this.session) continue
        if (entries.length === 0) return
        this.readAhead = entries
      }
      const count = Math.max(1, format.take(this.readAhead))
      const batch = this.readAhead.splice(0, count)
      const lastPos = batch[batch.length - 1].pos
      const message = format.encode(batch)
      const readings = batch.filter((e) => e.kind === 'reading').length
      const slot: InFlight = { lastPos, readings, events: batch.length - readings, acked: false }
      this.cursor = lastPos
      this.window.push(slot)
      if (lastPos <= this.sentPos) this.stats.resent += readings
      else this.sentPos = lastPos
      this.stats.published++
      upstream.publish(message).then(() => { this.onAck(session, slot) }, () => {
        // The connection dropped; its 'down' resets the window and the entry is resent.
      })
    }
  }

  private onAck (session: number, slot: InFlight): void {
    if (session !== this.session) return
    slot.acked = true
    let advanced = false
    while (this.window.length > 0 && this.window[0].acked) {
      const done = this.window.shift() as InFlight
      this.ackedPos = done.lastPos
      this.stats.forwarded += done.readings
      this.stats.events += done.events
      advanced = true
    }
    if (advanced) {
      this.options.log.ack(this.ackedPos).catch((err: unknown) => {
        this.options.logger.error({ err }, 'could not persist the ack cursor')
      })
    }
    if (this.window.length === 0) this.drained?.()
    this.pump()
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
    if (this.window.length > 0 && upstream.connected) {
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
    await log.ack(this.ackedPos)
  }
}
