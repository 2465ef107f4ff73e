import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { ClassicLevel } from 'classic-level'
import { BufferError } from './errors.js'
import { LOG_END, Slot, logKey, metaKey, position, positionOf, seqOf } from './keys.js'
import {
  type EpochEventData, type LogEntry, type ReadingInput,
  decodeEntry, decodeMeta, encodeEpochEvent, encodeMeta, encodeReading
} from './codec.js'

export interface DurableLogOptions {
  /** the LevelDB directory; created when missing */
  path: string
  /** `always`: every group commit is fsynced before it resolves; `interval`: fsync every `syncIntervalMs` */
  sync: 'always' | 'interval'
  /** milliseconds between fsyncs with `sync: 'interval'` */
  syncIntervalMs: number
  /**
   * Identifies the machine's current boot (the kernel's boot id). The log compares it with the one
   * stored at its last open: a different boot after an unclean stop means a power loss may have
   * taken unsynced writes, so the log begins a new epoch.
   */
  bootId: string
  /** milliseconds since 1970; injectable for tests */
  clock?: () => number
  /**
   * Called before each group commit is written, with the number of readings in it. A seam for
   * fault injection (a slow or failing disk); production code leaves it unset.
   */
  beforeCommit?: (readings: number) => Promise<void>
}

export interface OpenReport {
  /** the buffer did not exist and was created (with a fresh epoch) */
  created: boolean
  /** set when the log began a new epoch because the machine rebooted after an unclean stop */
  newEpoch?: EpochEventData
  /** the previous run did not close the log (a crash or a power loss) */
  uncleanStop: boolean
}

interface EpochSpan { epoch: string, from: number }
interface RunState { bootId: string, running: boolean }
interface PendingCommit { ops: Array<{ type: 'put', key: Buffer, value: Buffer }>, readings: number, lastSeq: number, done: Deferred }

type LogStatus = 'opening' | 'open' | 'closing' | 'closed'

/**
 * The durable, append-only log of readings: sluice's buffer.
 *
 * - `append` gives a reading its seq at once (in call order) and resolves when the group commit
 *   that holds it is written: every append made while a commit is in flight joins the next one,
 *   so many readings from many clients share one LevelDB write.
 * - `read(after)` returns committed entries past a position, in order; nothing unwritten is read.
 * - `ack(upTo)` removes entries up to a position and persists that cursor.
 * - Opening reads a handful of meta keys and never scans the backlog.
 */
export interface CommitInfo {
  /** readings in the group commit */
  readings: number
  /** bytes handed to LevelDB (keys and values): the flash-wear figure before LevelDB's own overhead */
  bytes: number
  /** milliseconds from the start of the write to its completion */
  durationMs: number
}

export interface DurableLogEvents {
  /** entries up to `lastPos` are written and readable */
  committed: [lastPos: number]
  /** one group commit finished */
  commit: [info: CommitInfo]
}

export class DurableLog extends EventEmitter<DurableLogEvents> {
  readonly path: string
  private readonly db: ClassicLevel<Buffer, Buffer>
  private readonly options: DurableLogOptions
  private readonly clock: () => number
  private _status: LogStatus = 'opening'
  private epochs: EpochSpan[] = []
  private _lastSeq = 0
  private _lastCommittedPos = 0
  private _ackPos = 0
  private pending: PendingCommit | null = null
  private writing: Promise<void> | null = null
  private writeError: Error | null = null
  private unsyncedWrites = false
  private syncTimer: NodeJS.Timeout | null = null
  private ackTarget = 0 // the highest position asked to be acknowledged
  private acking: Promise<void> | null = null
  private closing: Promise<void> | null = null
  report: OpenReport = { created: false, uncleanStop: false }

  private constructor (options: DurableLogOptions) {
    super()
    this.options = options
    this.path = options.path
    this.clock = options.clock ?? Date.now
    this.db = new ClassicLevel<Buffer, Buffer>(options.path, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  }

  static async open (options: DurableLogOptions): Promise<DurableLog> {
    const log = new DurableLog(options)
    await log.openDb()
    return log
  }

  get status (): LogStatus { return this._status }
  /** the epoch new readings are written under */
  get epoch (): string { return this.epochs[this.epochs.length - 1].epoch }
  /** the last seq handed out (written or not) */
  get lastSeq (): number { return this._lastSeq }
  /** the position of the last entry that is written and readable */
  get lastCommittedPos (): number { return this._lastCommittedPos }
  /** every entry at or before this position has been acknowledged upstream and removed */
  get ackPos (): number { return this._ackPos }

  private async openDb (): Promise<void> {
    await mkdir(this.path, { recursive: true })
    try {
      await this.db.open()
    } catch (cause) {
      const code = (cause as { cause?: { code?: string } }).cause?.code
      if (code === 'LEVEL_LOCKED') {
        throw new BufferError('SLUICE_BUFFER_LOCKED', `the buffer at ${this.path} is in use by another process`, { cause })
      }
      throw new BufferError('SLUICE_BUFFER_OPEN_FAILED', `cannot open the buffer at ${this.path}`, { cause })
    }
    try {
      await this.loadMeta()
    } catch (err) {
      await this.db.close()
      throw err
    }
    this._status = 'open'
    if (this.options.sync === 'interval') {
      this.syncTimer = setInterval(() => { this.syncNow().catch(() => {}) }, this.options.syncIntervalMs)
      this.syncTimer.unref()
    }
  }

  private async loadMeta (): Promise<void> {
    const [epochs, last, ack, state] = await this.db.getMany(
      [metaKey('epochs'), metaKey('last'), metaKey('ack'), metaKey('state')])
    const bootId = this.options.bootId
    if (epochs === undefined) {
      this.epochs = [{ epoch: newEpoch(), from: 1 }]
      this.report = { created: true, uncleanStop: false }
    } else {
      this.epochs = decodeMeta<EpochSpan[]>(epochs)
      this._lastSeq = last === undefined ? 0 : decodeMeta<number>(last)
      this._ackPos = ack === undefined ? 0 : decodeMeta<number>(ack)
      const previous = state === undefined ? undefined : decodeMeta<RunState>(state)
      const uncleanStop = previous?.running === true
      this.report = { created: false, uncleanStop }
      // [SPEC 2.2] A process crash loses nothing LevelDB was given, so the epoch stays. A reboot
      // after an unclean stop may have lost unsynced writes that were already forwarded: their seqs
      // could be handed out again for other readings, so new readings start a new epoch.
      if (uncleanStop && previous.bootId !== bootId) {
        const data: EpochEventData = {
          epoch: newEpoch(),
          previous: this.epoch,
          lastDurableSeq: this._lastSeq,
          reason: 'power-loss'
        }
        const from = this._lastSeq + 1
        this.epochs = [...this.epochs, { epoch: data.epoch, from }]
        this.report.newEpoch = data
        await this.db.put(logKey(position(from, Slot.Epoch)), encodeEpochEvent(this.clock(), data))
      }
    }
    this.pruneEpochs()
    this._lastCommittedPos = await this.lastPosition()
    this.ackTarget = this._ackPos
    await this.db.batch([
      { type: 'put', key: metaKey('epochs'), value: encodeMeta(this.epochs) },
      { type: 'put', key: metaKey('state'), value: encodeMeta({ bootId, running: true } satisfies RunState) }
    ], { sync: true })
  }

  /** The position of the last entry on disk (a seek, not a scan), or the ack cursor when none is. */
  private async lastPosition (): Promise<number> {
    for await (const key of this.db.keys({ gt: logKey(this._ackPos), lt: LOG_END, reverse: true, limit: 1 })) {
      return positionOf(key)
    }
    return this._ackPos
  }

  /** Drops epoch spans that no unacknowledged entry belongs to any more (keeps the current one). */
  private pruneEpochs (): void {
    const firstUnacked = seqOf(this._ackPos) + 1
    while (this.epochs.length > 1 && this.epochs[1].from <= firstUnacked) this.epochs.shift()
  }

  epochOf (seq: number): string {
    for (let i = this.epochs.length - 1; i > 0; i--) {
      if (seq >= this.epochs[i].from) return this.epochs[i].epoch
    }
    return this.epochs[0].epoch
  }

  /**
   * Gives the reading the next seq and queues it for the next group commit. `durable` resolves
   * when the commit is written (and fsynced with `sync: 'always'`); it rejects if the write fails.
   */
  append (reading: ReadingInput): { seq: number, durable: Promise<void> } {
    if (this._status !== 'open') {
      throw new BufferError('SLUICE_BUFFER_NOT_OPEN', `the buffer is ${this._status}`)
    }
    const seq = ++this._lastSeq
    if (this.pending === null) {
      this.pending = { ops: [], readings: 0, lastSeq: 0, done: deferred() }
      // Starting the commit on the next tick lets every append of this tick (aedes handles a whole
      // socket read at once) share the write.
      if (this.writing === null) queueMicrotask(() => { this.startCommit() })
    }
    this.pending.ops.push({ type: 'put', key: logKey(position(seq, Slot.Reading)), value: encodeReading(reading) })
    this.pending.readings++
    this.pending.lastSeq = seq
    return { seq, durable: this.pending.done.promise }
  }

  private startCommit (): void {
    const commit = this.pending
    if (commit === null || this.writing !== null) return
    this.pending = null
    this.writing = this.writeCommit(commit).finally(() => {
      this.writing = null
      this.startCommit()
    })
  }

  private async writeCommit (commit: PendingCommit): Promise<void> {
    try {
      if (this.writeError !== null) throw this.writeError
      await this.options.beforeCommit?.(commit.readings)
      commit.ops.push({ type: 'put', key: metaKey('last'), value: encodeMeta(commit.lastSeq) })
      const sync = this.options.sync === 'always'
      const started = performance.now()
      await this.db.batch(commit.ops, { sync })
      const durationMs = performance.now() - started
      this.unsyncedWrites = !sync
      this._lastCommittedPos = position(commit.lastSeq, Slot.Reading)
      commit.done.resolve()
      this.emit('committed', this._lastCommittedPos)
      let bytes = 0
      for (const op of commit.ops) bytes += op.key.length + op.value.length
      this.emit('commit', { readings: commit.readings, bytes, durationMs })
    } catch (cause) {
      // Seqs already handed out for this commit can't be reused: a later commit would leave a gap
      // the receiver is never told of. So a failed write stops the log until it is reopened.
      this.writeError ??= new BufferError('SLUICE_BUFFER_WRITE_FAILED', 'a write to the buffer failed', { cause })
      commit.done.reject(this.writeError)
    }
  }

  /** Forces everything written so far to disk. */
  async syncNow (): Promise<void> {
    if (!this.unsyncedWrites || this._status !== 'open') return
    this.unsyncedWrites = false
    // A synced write fsyncs LevelDB's log file, and with it every earlier unsynced write.
    const state: RunState = { bootId: this.options.bootId, running: true }
    await this.db.put(metaKey('state'), encodeMeta(state), { sync: true })
  }

  /** Committed entries after position `after`, in order, at most `limit` of them. */
  async read (after: number, limit: number): Promise<LogEntry[]> {
    if (this._status !== 'open' && this._status !== 'closing') {
      throw new BufferError('SLUICE_BUFFER_NOT_OPEN', `the buffer is ${this._status}`)
    }
    if (after >= this._lastCommittedPos) return []
    const entries: LogEntry[] = []
    // Only committed entries are ever in LevelDB, so the scan needs no upper bound of its own.
    for await (const [key, value] of this.db.iterator({ gt: logKey(after), lt: LOG_END, limit })) {
      const pos = positionOf(key)
      const seq = seqOf(pos)
      entries.push(decodeEntry(pos, seq, this.epochOf(seq), value))
    }
    return entries
  }

  /**
   * Records that every entry up to `upTo` is acknowledged upstream: removes them and persists the
   * cursor. Calls coalesce; the promise resolves once the cursor is at least `upTo` on disk.
   */
  async ack (upTo: number): Promise<void> {
    if (upTo > this.ackTarget) this.ackTarget = upTo
    while (this._ackPos < upTo) {
      this.acking ??= this.writeAck(this.ackTarget).finally(() => { this.acking = null })
      await this.acking
    }
  }

  private async writeAck (upTo: number): Promise<void> {
    // Delete first, then move the cursor: a crash in between leaves the cursor behind, which
    // only means entries already gone are looked for again, never a record left behind for good.
    await this.db.clear({ gt: logKey(this._ackPos), lte: logKey(upTo) })
    await this.db.put(metaKey('ack'), encodeMeta(upTo))
    this._ackPos = upTo
    const before = this.epochs.length
    this.pruneEpochs()
    if (this.epochs.length !== before) await this.db.put(metaKey('epochs'), encodeMeta(this.epochs))
  }

  /**
   * Finishes the commit in progress and any queued one, persists the ack cursor, fsyncs, marks a
   * clean stop and closes LevelDB. Safe to call more than once.
   */
  async close (): Promise<void> {
    if (this.closing !== null) return await this.closing
    this.closing = this.closeDb()
    return await this.closing
  }

  private async closeDb (): Promise<void> {
    if (this._status === 'closed') return
    this._status = 'closing'
    if (this.syncTimer !== null) clearInterval(this.syncTimer)
    while (this.writing !== null || this.pending !== null) {
      if (this.writing === null) this.startCommit()
      await this.writing
    }
    while (this.acking !== null) await this.acking
    if (this.writeError === null) {
      await this.db.put(metaKey('state'), encodeMeta({ bootId: this.options.bootId, running: false } satisfies RunState), { sync: true })
    }
    await this.db.close()
    this._status = 'closed'
  }
}

function newEpoch (): string {
  return randomBytes(16).toString('hex')
}

interface Deferred { promise: Promise<void>, resolve: () => void, reject: (err: Error) => void }

function deferred (): Deferred {
  let resolve!: () => void
  let reject!: (err: Error) => void
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  // A commit nobody awaits (QoS 0 readings) must not become an unhandled rejection.
  promise.catch(() => {})
  return { promise, resolve, reject }
}
