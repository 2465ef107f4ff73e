import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { uptime as osUptime } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { ClassicLevel } from 'classic-level'
import { BufferError, isDamage, levelCode } from './errors.js'
import { LOG_END, Slot, logKey, metaKey, position, positionOf, readingSeqAtOrBefore, seqOf, slotOf } from './keys.js'
import {
  type EpochEventData, type EpochReason, GAP_REASONS, type GapData, type GapReason, type LogEntry, type ReadingInput,
  decodeEntry, decodeMeta, encodeEpochEvent, encodeGap, encodeMeta, encodeReading
} from './codec.js'
import { type BufferBounds, PER_OP_OVERHEAD, UNBOUNDED, journalLimit, levelSizes, parseSstables } from './bounds.js'
import { BufferClock, type StoredClock } from './clock.js'
import { Gate } from './gate.js'
import { PendingCommit, type WriteOp } from './pending.js'
import { type DropPredicate, findHoles, planDrop } from './retention.js'
import { type DropResult, SpaceKeeper } from './space.js'
import { type RecoveryReport, discardBeforeRepair, recoveryDrops, repairDatabase, setAside } from './recover.js'
import type {
  AppendOptions, AppendResult, BufferHealth, DropInfo, DurableLogEvents, DurableLogOptions, OpenReport
} from './types.js'

export type {
  AppendOptions, AppendResult, BufferHealth, CommitInfo, DropInfo, DurableLogEvents, DurableLogOptions, HealthReason, OpenReport
} from './types.js'

interface EpochSpan { epoch: string, from: number }
interface RunState { bootId: string, running: boolean }

type LogStatus = 'opening' | 'open' | 'closing' | 'closed'

const OK: BufferHealth = { accepting: true, reason: null }
/** entries one drop decision looks at, at most: it holds their keys until its batch is written */
const DROP_SCAN_LIMIT = 10_000
/** retries of a failed write: the first after this, doubling up to the max */
const RETRY_MIN_MS = 250
const RETRY_MAX_MS = 10_000
/**
 * how long acknowledgements gather before the cursor is written: at 5,000 readings/s acknowledged
 * one by one, 200 writes a second instead of 5,000 (see ack)
 */
const ACK_COALESCE_MS = 5
/** how often the TTL clock is saved, so a crash loses little buffer time */
const CLOCK_SAVE_MS = 10_000

export class DurableLog extends EventEmitter<DurableLogEvents> {
  readonly path: string
  private readonly db: ClassicLevel<Buffer, Buffer>
  private readonly options: DurableLogOptions
  private readonly clock: () => number
  private readonly bounds: BufferBounds
  private readonly space: SpaceKeeper
  private readonly gate = new Gate()
  private readonly sublevels = new Set<ReturnType<DurableLog['sublevel']>>()
  private ttlClock!: BufferClock
  private _status: LogStatus = 'opening'
  private epochs: EpochSpan[] = []
  private _lastSeq = 0
  private _lastCommittedPos = 0
  private _lastCommittedSeq = 0
  private _ackPos = 0
  private _health: BufferHealth = OK
  /** commits waiting to be written, oldest first; appends join the last one */
  private queue: PendingCommit[] = []
  private writing: Promise<void> | null = null
  private unsyncedWrites = false
  private syncTimer: NodeJS.Timeout | null = null
  private maintenanceTimer: NodeJS.Timeout | null = null
  private maintaining: Promise<void> | null = null
  private lastClockSave = 0
  private lastTtlSweep = Number.NEGATIVE_INFINITY
  private ackTarget = 0 // the highest position asked to be acknowledged
  private acking: Promise<void> | null = null
  private closing: Promise<void> | null = null
  /** aborts waits for space and write retries when the log closes */
  private readonly stopping = new AbortController()
  private repairing: Promise<void> | null = null
  /** set when a commit was abandoned (only while closing): later commits are abandoned with it */
  private abandoned: BufferError | null = null
  /**
   * The highest position any read has returned. Drops never touch entries at or before it: the
   * forwarder may hold them in flight or in its read-ahead, and a reading that is both delivered
   * and announced as dropped would break the count.
   */
  private readHigh = 0
  /** reads stop before this position while a commit that rewrites the entry there is written */
  private readFence: number | null = null
  /** the gap entry that is the last entry of the log, while it is (drop-newest extends it in place) */
  private tailGap: { pos: number, gap: GapData } | null = null
  private bytesPerReading = 100
  private readonly drops = Object.fromEntries(GAP_REASONS.map((r) => [r, 0])) as Record<GapReason, number>
  report: OpenReport = { created: false, uncleanStop: false }

  private constructor (options: DurableLogOptions) {
    super()
    this.options = options
    this.path = options.path
    this.clock = options.clock ?? Date.now
    this.bounds = options.bounds ?? UNBOUNDED
    this.db = new ClassicLevel<Buffer, Buffer>(options.path, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
      ...levelSizes(this.bounds.maxBytes)
    })
    const log = this // the host's getters read the log's live state
    this.space = new SpaceKeeper(options.path, this.bounds, {
      db: this.db,
      gate: this.gate,
      get ackPos () { return log._ackPos },
      get readHigh () { return log.readHigh },
      get health () { return log._health },
      setHealth: (health) => { this.setHealth(health) },
      dropOldest: async (keep) => await this.drop('overflow', keep),
      countDrop: (info) => { this.countDrop(info) },
      stopping: this.stopping.signal
    }, () => this.liveTables(), options.maintenanceIntervalMs ?? 1000)
  }

  /** The table files of LevelDB's current version, or null while it is not open. */
  private liveTables (): Map<number, number> | null {
    if (this.db.status !== 'open') return null
    try {
      return parseSstables(this.db.getProperty('leveldb.sstables'))
    } catch {
      return null
    }
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
  /** the highest seq that is written (as a reading or inside a gap) */
  get lastCommittedSeq (): number { return this._lastCommittedSeq }
  /** every entry at or before this position has been acknowledged upstream and removed */
  get ackPos (): number { return this._ackPos }
  /** whether the log accepts readings, and why not */
  get health (): BufferHealth { return this._health }
  /** readings dropped since the log opened, by reason */
  get dropped (): Readonly<Record<GapReason, number>> { return { ...this.drops } }
  /** the buffer's size on disk and the volume's free space, as last estimated, in bytes */
  get diskUsage (): { bytes: number, free: number, maxBytes: number, minFreeDisk: number } {
    return { bytes: this.space.usage.bytes, free: this.space.usage.free, maxBytes: this.bounds.maxBytes, minFreeDisk: this.bounds.minFreeDisk }
  }

  // ---- upstream: a neighbour store in the same database
  /**
   * A sublevel of the buffer's LevelDB for a neighbour store (the forwarder's dead letters): it
   * shares the directory, the lock and the lifecycle, and its keys ('!name!...') never mix with
   * the log's. Usable while the log is open.
   */
  sublevel (name: string) {
    const sub = this.db.sublevel<Buffer, Buffer>(name, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    // A sublevel closes with its parent; the log reopens LevelDB after a failed write or
    // a repair, and reopens the sublevels with it.
    this.sublevels.add(sub)
    return sub
  }
  // ---- end upstream

  // ------------------------------------------------------------------ opening

  private async openDb (): Promise<void> {
    await mkdir(this.path, { recursive: true })
    try {
      await this.openLevel()
      // LevelDB replays its write-ahead log at open and skips records that fail their checksum,
      // saying so only in its info log: what it skipped were readings, so they are looked for.
      const dropped = await recoveryDrops(this.path)
      await this.loadMeta({ repaired: dropped !== null })
      if (dropped !== null) {
        const problem = `LevelDB found its write-ahead log damaged and skipped part of it: ${dropped}`
        const lostSeqs = await this.announceHoles(this.epochs[this.epochs.length - 1].from - 1)
        this.report.recovery = { problem, action: 'repaired', files: 0, bytes: 0, lostSeqs }
      }
    } catch (err) {
      await this.closeLevelQuietly()
      if (!isDamage(err)) throw asOpenError(err, this.path)
      // loadMeta (inside) replaces this.report: take the result first, then attach it.
      const recovery = await this.recoverAtOpen(err)
      this.report.recovery = recovery
    }
    await this.space.usage.sample()
    this._status = 'open'
    if (this.options.sync === 'interval') {
      this.syncTimer = setInterval(() => { this.syncNow().catch(() => {}) }, this.options.syncIntervalMs)
      this.syncTimer.unref()
    }
    this.maintenanceTimer = setInterval(() => { this.maintain() }, this.options.maintenanceIntervalMs ?? 1000)
    this.maintenanceTimer.unref()
  }

  private async openLevel (): Promise<void> {
    try {
      await this.db.open()
    } catch (cause) {
      if (levelCode(cause) === 'LEVEL_LOCKED') {
        throw new BufferError('SLUICE_BUFFER_LOCKED', `the buffer at ${this.path} is in use by another process`, { cause })
      }
      throw cause
    }
  }

  private async closeLevelQuietly (): Promise<void> {
    try {
      await this.db.close()
    } catch {}
  }

  /**
   * The buffer could not be opened or read at start because its files are damaged. LevelDB's
   * repairer is tried first; if it fails, or leaves no usable buffer (its meta records lost), the
   * directory is set aside whole and a fresh buffer starts. A repaired buffer continues under a
   * new epoch (its last seq may be lost), and the seqs the repair could not save are announced as
   * gaps with reason `corrupt`.
   */
  private async recoverAtOpen (problem: unknown): Promise<RecoveryReport> {
    const report: RecoveryReport = { problem: describe(problem), action: 'repaired', files: 0, bytes: 0, lostSeqs: 0 }
    const repair = await repairDatabase(this.path)
    /** what the damaged buffer still says of itself, for the epoch event of a fresh one */
    let previous: { epoch: string | null, lastSeq: number | null } = { epoch: null, lastSeq: null }
    if (repair.ok) {
      try {
        await this.openLevel()
        previous = await this.readPrevious()
        await this.loadMeta({ repaired: true })
        report.lostSeqs = await this.announceHoles(this.epochs[this.epochs.length - 1].from - 1)
        await discardBeforeRepair(this.path)
        return report
      } catch (err) {
        if ((err as BufferError).code === 'SLUICE_BUFFER_LOCKED') throw err
        await this.closeLevelQuietly()
        report.problem += `; after a repair: ${describe(err)}`
      }
    } else {
      report.problem += `; the repair failed: ${repair.error ?? 'unknown error'}`
    }
    const aside = await setAside(this.path)
    Object.assign(report, { action: 'set-aside', setAsideTo: aside.to, files: aside.files, bytes: aside.bytes })
    this.epochs = []
    this._lastSeq = 0
    this._ackPos = 0
    await this.openLevel()
    await this.loadMeta()
    await this.announceSetAside(previous)
    return report
  }

  /** The epoch and last seq a damaged (repaired) buffer still holds, each null when unreadable. */
  private async readPrevious (): Promise<{ epoch: string | null, lastSeq: number | null }> {
    const read = async <T>(name: 'epochs' | 'last'): Promise<T | null> => {
      try {
        const value = await this.db.get(metaKey(name))
        return value === undefined ? null : decodeMeta<T>(value)
      } catch {
        return null
      }
    }
    const epochs = await read<EpochSpan[]>('epochs')
    const lastSeq = await read<number>('last')
    const epoch = Array.isArray(epochs) && typeof epochs[epochs.length - 1]?.epoch === 'string' ? epochs[epochs.length - 1].epoch : null
    return { epoch, lastSeq: typeof lastSeq === 'number' ? lastSeq : null }
  }

  /**
   * A fresh buffer that replaces one set aside: its first entry is an epoch event (reason
   * `set-aside`) naming the old epoch and last seq where they could still be read, so a receiver
   * can tell a lost backlog from a new gateway [README: What goes upstream].
   */
  private async announceSetAside (previous: { epoch: string | null, lastSeq: number | null }): Promise<void> {
    const data: EpochEventData = { epoch: this.epoch, previous: previous.epoch, lastDurableSeq: previous.lastSeq, reason: 'set-aside' }
    const pos = position(this._lastSeq + 1, Slot.Epoch)
    await this.db.put(logKey(pos), encodeEpochEvent(this.clock(), data), { sync: true })
    this._lastCommittedPos = Math.max(this._lastCommittedPos, pos)
    this.report.newEpoch = data
  }

  private async loadMeta (opts: { repaired?: boolean } = {}): Promise<void> {
    const [epochs, last, ack, state, clock] = await this.db.getMany(
      [metaKey('epochs'), metaKey('last'), metaKey('ack'), metaKey('state'), metaKey('clock')])
    const bootId = this.options.bootId
    let epochReason: EpochReason | null = null
    if (epochs === undefined) {
      if (opts.repaired === true) {
        throw new BufferError('SLUICE_BUFFER_CORRUPT', 'the repaired buffer has lost its epoch record')
      }
      this.epochs = [{ epoch: newEpoch(), from: 1 }]
      this.report = { created: true, uncleanStop: false }
    } else {
      this.epochs = decodeMeta<EpochSpan[]>(epochs)
      this._lastSeq = last === undefined ? 0 : decodeMeta<number>(last)
      this._ackPos = ack === undefined ? 0 : decodeMeta<number>(ack)
      const previous = state === undefined ? undefined : decodeMeta<RunState>(state)
      const uncleanStop = previous?.running === true
      this.report = { created: false, uncleanStop }
      // (docs/guarantees.md §2) A process crash loses nothing LevelDB was given, so the epoch stays. A reboot
      // after an unclean stop may have lost unsynced writes that were already forwarded: their seqs
      // could be handed out again for other readings, so new readings start a new epoch. A repair
      // may have lost the last records too.
      if (opts.repaired === true) epochReason = 'repaired'
      else if (uncleanStop && previous.bootId !== bootId) epochReason = 'power-loss'
    }
    this.pruneEpochs()
    const lastEntry = await this.lastEntry()
    this._lastCommittedPos = lastEntry.pos
    if (epochReason === 'repaired') {
      // A repair can leave entries past the recorded last seq (the record of it was lost): the
      // new epoch begins after every seq still on disk.
      this._lastSeq = Math.max(this._lastSeq, readingSeqAtOrBefore(this._lastCommittedPos))
    }
    this._lastCommittedSeq = this._lastSeq
    if (epochReason !== null) await this.beginEpoch(epochReason)
    this.ackTarget = this._ackPos
    this.space.opened(this._ackPos)
    this.readHigh = this._ackPos
    this.ttlClock = new BufferClock(clock === undefined ? undefined : decodeMeta<StoredClock>(clock), {
      bootId,
      uptime: this.options.uptime ?? osUptime,
      monotonic: this.options.monotonic ?? (() => performance.now())
    }, lastEntry.storedAt)
    await this.db.batch([
      this.epochsOp(),
      { type: 'put', key: metaKey('state'), value: encodeMeta({ bootId, running: true } satisfies RunState) },
      { type: 'put', key: metaKey('clock'), value: encodeMeta(this.ttlClock.save()) }
    ], { sync: true })
  }

  private async beginEpoch (reason: EpochReason): Promise<void> {
    const data: EpochEventData = { epoch: newEpoch(), previous: this.epoch, lastDurableSeq: this._lastSeq, reason }
    const from = this._lastSeq + 1
    // An epoch that never got a durable reading (power lost again soon after a boot) starts at the
    // same seq as this one: this one takes its place, and its announcement the same position.
    const spans = this.epochs.at(-1)?.from === from ? this.epochs.slice(0, -1) : this.epochs
    this.epochs = [...spans, { epoch: data.epoch, from }]
    this.report.newEpoch = data
    const pos = position(from, Slot.Epoch)
    await this.db.put(logKey(pos), encodeEpochEvent(this.clock(), data))
    if (this._ackPos >= pos) {
      // That position's previous announcement was already acknowledged upstream: move the cursor
      // back over it so this one is sent too (everything before it stays acknowledged).
      this._ackPos = pos - 1
      await this.db.put(metaKey('ack'), encodeMeta(this._ackPos))
    }
    this._lastCommittedPos = Math.max(this._lastCommittedPos, pos)
  }

  /**
   * After a repair: finds the seqs past the ack cursor that no entry covers any more and writes a
   * `corrupt` gap for each run of them, so the receiver is told (docs/guarantees.md §4). Scans the backlog once.
   */
  private async announceHoles (upToSeq: number): Promise<number> {
    const firstSeq = slotOf(this._ackPos) === Slot.Reading || this._ackPos === 0 ? seqOf(this._ackPos) + 1 : null
    const { holes } = await findHoles(
      this.db.iterator({ gt: logKey(this._ackPos), lt: logKey(position(upToSeq + 1, Slot.Epoch)) }),
      firstSeq,
      upToSeq
    )
    if (holes.length === 0) return 0
    const now = this.clock()
    let lost = 0
    const ops = holes.map((hole) => {
      const gap: GapData = { from: hole.from, to: hole.to, count: hole.to - hole.from + 1, reason: 'corrupt' }
      lost += gap.count
      return { type: 'put' as const, key: logKey(position(hole.from, Slot.Gap)), value: encodeGap(now, gap) }
    })
    await this.db.batch(ops, { sync: true })
    this._lastCommittedPos = Math.max(this._lastCommittedPos, ...holes.map((h) => position(h.from, Slot.Gap)))
    this.drops.corrupt += lost
    return lost
  }

  /**
   * The position of the last entry on disk (a seek, not a scan), or the ack cursor when none is,
   * and when it is a reading, its buffer time: the TTL clock never starts behind it.
   */
  private async lastEntry (): Promise<{ pos: number, storedAt: number }> {
    for await (const [key, value] of this.db.iterator({ gt: logKey(this._ackPos), lt: LOG_END, reverse: true, limit: 1 })) {
      const pos = positionOf(key)
      let storedAt = 0
      try {
        const entry = decodeEntry(pos, seqOf(pos), '', value)
        if (entry.kind === 'reading') storedAt = entry.storedAt
      } catch {}
      return { pos, storedAt }
    }
    return { pos: this._ackPos, storedAt: 0 }
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

  // ------------------------------------------------------------------ appending

  /**
   * Gives the reading the next seq and queues it for the next group commit. `durable` resolves
   * when the commit is written (and fsynced with `sync: 'always'`). While writes fail it waits,
   * the write being retried; it rejects only if the log closes first.
   */
  append (reading: ReadingInput, options: AppendOptions = {}): AppendResult {
    if (this._status !== 'open') {
      throw new BufferError('SLUICE_BUFFER_NOT_OPEN', `the buffer is ${this._status}`)
    }
    const seq = ++this._lastSeq
    const commit = this.openCommit()
    // (docs/guarantees.md §6) A sender MQTT cannot slow down meets a buffer that holds commits back: queueing
    // its reading would grow memory without bound, so it is dropped, its seq announced by a gap.
    if (options.canWait === false && !this._health.accepting) {
      commit.addDropped(seq)
      this.countDrop({ reason: 'overflow', from: seq, to: seq, count: 1 })
      return { seq, durable: commit.done.promise, dropped: true }
    }
    commit.addReading(seq, encodeReading(reading, this.ttlClock.now()))
    return { seq, durable: commit.done.promise, dropped: false }
  }

  /** The commit appends join: the last queued one, unless it is full. */
  private openCommit (): PendingCommit {
    let commit = this.queue[this.queue.length - 1]
    // A commit is capped so that one always fits in a small buffer and a blocked buffer resumes
    // as soon as a commit's worth of space is free.
    if (commit === undefined || commit.bytes >= this.commitCap()) {
      commit = new PendingCommit()
      this.queue.push(commit)
      // Starting the commit on the next tick lets every append of this tick (aedes handles a whole
      // socket read at once) share the write.
      if (this.writing === null) queueMicrotask(() => { this.startCommit() })
    }
    return commit
  }

  private commitCap (): number {
    const max = this.bounds.maxBytes
    return Number.isFinite(max) ? Math.min(4 * 1024 * 1024, Math.max(16 * 1024, Math.floor(max / 32))) : 4 * 1024 * 1024
  }

  private startCommit (): void {
    if (this.writing !== null || this.queue.length === 0) return
    const commit = this.queue.shift() as PendingCommit
    this.writing = this.writeCommit(commit).finally(() => {
      this.writing = null
      this.startCommit()
    })
  }

  private async writeCommit (commit: PendingCommit): Promise<void> {
    try {
      // Seqs are contiguous on disk: once a commit is abandoned (closing while it was held back),
      // every later one is too, or the log would have a hole nobody announces.
      if (this.abandoned !== null) throw this.abandoned
      await this.space.makeRoom(commit)
      const merge = await this.mergeTarget(commit)
      const ops = commit.ops(this.clock(), merge)
      const bytes = ops.reduce((sum, op) => sum + op.key.length + (op.type === 'put' ? op.value.length : 0) + PER_OP_OVERHEAD, 0)
      const durationMs = await this.writeWithRetry(ops, commit.readings)
      this.readFence = null
      this.unsyncedWrites = this.options.sync !== 'always'
      this.space.usage.noteWritten(bytes)
      const last = commit.lastEntry(merge)
      this.tailGap = last.gap === null ? null : { pos: last.pos, gap: last.gap }
      this._lastCommittedPos = Math.max(this._lastCommittedPos, last.pos)
      this._lastCommittedSeq = commit.lastSeq
      if (commit.readings > 0) this.bytesPerReading = Math.round(0.9 * this.bytesPerReading + 0.1 * (bytes / commit.readings))
      commit.done.resolve()
      this.emit('committed', this._lastCommittedPos)
      this.emit('commit', { readings: commit.readings, bytes, durationMs })
    } catch (cause) {
      this.readFence = null
      // Only closing ends a commit unwritten: its readings were never acknowledged to anyone.
      const err = cause instanceof BufferError ? cause : new BufferError('SLUICE_BUFFER_WRITE_FAILED', 'a write to the buffer failed', { cause })
      this.abandoned ??= err
      commit.done.reject(err)
    }
  }

  /**
   * Writes one commit's batch; on failure retries the very same batch (same seqs) with backoff,
   * reopening LevelDB before each retry, until it is written or the log closes. Resolves with the
   * duration of the write that succeeded.
   */
  private async writeWithRetry (ops: WriteOp[], readings: number): Promise<number> {
    const sync = this.options.sync === 'always'
    let delay = RETRY_MIN_MS
    for (let attempt = 0; ; attempt++) {
      try {
        if (attempt > 0) await this.reopen()
        await this.options.beforeCommit?.(readings)
        const started = performance.now()
        await this.gate.shared(async () => { await writeChained(this.db, ops, sync) })
        const durationMs = performance.now() - started
        if (this._health.reason === 'write-failed') {
          this.setHealth(OK)
          if (this.ackTarget > this._ackPos) this.ack(this.ackTarget).catch(() => {})
        }
        return durationMs
      } catch (err) {
        if (this.stopping.signal.aborted) throw err
        if (this._health.reason !== 'write-failed') {
          this.setHealth({
            accepting: false,
            reason: 'write-failed',
            code: 'SLUICE_BUFFER_WRITE_FAILED',
            detail: `writes to the buffer fail: ${describe(err)}; retrying, readings are held back meanwhile`
          })
        }
        try {
          await sleep(delay, undefined, { signal: this.stopping.signal })
        } catch {
          throw err
        }
        delay = Math.min(RETRY_MAX_MS, delay * 2)
      }
    }
  }

  /** Closes and reopens LevelDB (and the sublevels on it), which clears a failed write's lasting error. */
  private async reopen (): Promise<void> {
    await this.gate.exclusive(async () => {
      await this.closeLevelQuietly()
      await this.db.open()
      for (const sub of this.sublevels) await sub.open().catch(() => {})
    })
  }

  /**
   * A commit that begins with dropped seqs right after the gap that ends the log extends that gap
   * in place, so that a buffer that stays full writes one gap, not one per commit. Only while the
   * forwarder has not read that gap: reads are fenced off it until the commit is written.
   */
  private async mergeTarget (commit: PendingCommit): Promise<{ pos: number, gap: GapData } | null> {
    const lead = commit.leadingGap
    const tail = this.tailGap
    if (lead === null || tail === null || tail.gap.reason !== lead.reason || tail.gap.to + 1 !== lead.from) return null
    return await this.gate.exclusive(async () => {
      if (this.tailGap !== tail || tail.pos <= this.readHigh) return null
      this.readFence = tail.pos
      return tail
    })
  }

  // ------------------------------------------------------------------ drops (bounds: space.ts)

  /**
   * Drops one run of readings past what the forwarder has read (retention.ts plans it), writing
   * their deletion and the gap entry in one batch. Runs exclusive of reads.
   */
  private async drop (reason: GapReason, keep: DropPredicate): Promise<DropResult | null> {
    return await this.gate.exclusive(async () => {
      const start = Math.max(this._ackPos, this.readHigh)
      const end = this.readFence === null ? LOG_END : logKey(this.readFence)
      const plan = await planDrop(this.db.iterator({ gt: logKey(start), lt: end, limit: DROP_SCAN_LIMIT }), reason, keep, this.clock())
      if (plan === null) return null
      await this.db.batch(plan.ops)
      this.space.usage.noteWritten(plan.ops.length * (9 + PER_OP_OVERHEAD) + 64)
      if (this.tailGap !== null && plan.absorbed.includes(this.tailGap.pos)) this.tailGap = null
      this._lastCommittedPos = Math.max(this._lastCommittedPos, plan.gapPos)
      this.countDrop({ reason, from: plan.gap.from, to: plan.gap.to, count: plan.readings })
      return { firstKey: plan.firstKey, lastKey: plan.lastKey, bytes: plan.bytes }
    })
  }

  private countDrop (info: DropInfo): void {
    this.drops[info.reason] += info.count
    this.emit('dropped', info)
  }

  private setHealth (health: BufferHealth): void {
    if (health.accepting === this._health.accepting && health.reason === this._health.reason) return
    this._health = health
    this.emit('health', health)
  }

  // ------------------------------------------------------------------ maintenance

  /**
   * Once a second: samples the size, saves the TTL clock, drops expired readings, and compacts
   * acknowledged entries away once they hold a good part of the bound. Rounds never overlap.
   */
  private maintain (): void {
    if (this.maintaining !== null || this._status !== 'open') return
    this.maintaining = this.maintenanceRound().catch(() => {}).finally(() => { this.maintaining = null })
  }

  private async maintenanceRound (): Promise<void> {
    const now = performance.now()
    await this.space.maintain(now)
    // LevelDB's LOG and MANIFEST grow with every compaction until the database is reopened.
    if (this.space.usage.journalBytes > journalLimit(this.bounds.maxBytes)) {
      await this.reopen()
      await this.space.usage.sample()
    }
    if (now - this.lastClockSave >= CLOCK_SAVE_MS) {
      this.lastClockSave = now
      await this.gate.shared(async () => {
        await this.db.batch([
          { type: 'put', key: metaKey('clock'), value: encodeMeta(this.ttlClock.save()) },
          this.epochsOp()
        ])
      })
    }
    if (this.bounds.ttlMs > 0 && now - this.lastTtlSweep >= ttlSweepInterval(this.bounds.ttlMs)) {
      this.lastTtlSweep = now
      await this.expire()
    }
  }

  /** Drops the readings that have been in the buffer longer than the TTL (in buffer time, clock.ts). */
  async expire (): Promise<number> {
    const cutoff = this.ttlClock.now() - this.bounds.ttlMs
    let dropped = 0
    let first: Buffer | null = null
    let last: Buffer | null = null
    for (;;) {
      const before = this.drops.ttl
      const plan = await this.drop('ttl', (reading) => reading.storedAt <= cutoff)
      if (plan === null) break
      dropped += this.drops.ttl - before
      first ??= plan.firstKey
      last = plan.lastKey
    }
    if (first !== null && last !== null) {
      await this.space.compact(first, last)
      this.space.wake()
    }
    return dropped
  }

  // ------------------------------------------------------------------ reading and acknowledging

  /** Forces everything written so far to disk. */
  async syncNow (): Promise<void> {
    if (!this.unsyncedWrites || this._status !== 'open') return
    this.unsyncedWrites = false
    // A synced write fsyncs LevelDB's log file, and with it every earlier unsynced write.
    const state: RunState = { bootId: this.options.bootId, running: true }
    // The epoch record rides along (epochsOp).
    await this.gate.shared(async () => {
      await this.db.batch([
        { type: 'put', key: metaKey('state'), value: encodeMeta(state) },
        this.epochsOp()
      ], { sync: true })
    })
  }

  /**
   * Committed entries after position `after`, in order, at most `limit` of them. A reading whose
   * record cannot be decoded comes back as a one-seq gap with reason `corrupt`, so one bad record
   * never stalls the forwarder.
   */
  async read (after: number, limit: number): Promise<LogEntry[]> {
    if (this._status !== 'open' && this._status !== 'closing') {
      throw new BufferError('SLUICE_BUFFER_NOT_OPEN', `the buffer is ${this._status}`)
    }
    if (after >= this._lastCommittedPos) return []
    try {
      return await this.readEntries(after, limit)
    } catch (err) {
      if (!isDamage(err) || this._status !== 'open') throw err
      this.repairing ??= this.repairRunning(err).finally(() => { this.repairing = null })
      await this.repairing
      return await this.readEntries(after, limit)
    }
  }

  private async readEntries (after: number, limit: number): Promise<LogEntry[]> {
    return await this.gate.shared(async () => {
      const entries: LogEntry[] = []
      const end = this.readFence === null ? LOG_END : logKey(this.readFence)
      // Only committed entries are ever in LevelDB, so the scan needs no upper bound of its own.
      // all(): the chunk in one native read, not an awaited step per entry.
      for (const [key, value] of await this.db.iterator({ gt: logKey(after), lt: end, limit }).all()) {
        const pos = positionOf(key)
        const seq = seqOf(pos)
        try {
          entries.push(decodeEntry(pos, seq, this.epochOf(seq), value))
        } catch {
          if (slotOf(pos) !== Slot.Reading) continue
          const data: GapData = { from: seq, to: seq, count: 1, reason: 'corrupt' }
          entries.push({ kind: 'gap', pos, seq, epoch: this.epochOf(seq), time: this.clock(), data })
          if (pos > this.readHigh) this.countDrop({ reason: 'corrupt', from: seq, to: seq, count: 1 })
        }
      }
      if (entries.length > 0) this.readHigh = Math.max(this.readHigh, entries[entries.length - 1].pos)
      return entries
    })
  }

  /**
   * LevelDB reported damage while running (a table that cannot be read). Repairs it in place,
   * announcing what the repair lost; if the repair fails, sets the directory aside and goes on
   * with a fresh database under the same epoch and seqs, announcing the whole unacknowledged
   * backlog as lost. Either way the log keeps running (docs/guarantees.md §8: no crash loop).
   */
  private async repairRunning (problem: unknown): Promise<void> {
    const report: RecoveryReport = { problem: describe(problem), action: 'repaired', files: 0, bytes: 0, lostSeqs: 0 }
    this.setHealth({ accepting: false, reason: 'repairing', code: 'SLUICE_BUFFER_CORRUPT', detail: `the buffer is damaged and being repaired: ${report.problem}` })
    await this.gate.exclusive(async () => {
      await this.closeLevelQuietly()
      const repair = await repairDatabase(this.path)
      let repaired = repair.ok
      if (repaired) {
        try {
          await this.db.open()
          report.lostSeqs = await this.announceHoles(this._lastCommittedSeq)
          await this.db.batch(this.metaOps(), { sync: true })
          await discardBeforeRepair(this.path)
        } catch (err) {
          repaired = false
          report.problem += `; after a repair: ${describe(err)}`
          await this.closeLevelQuietly()
        }
      }
      if (!repaired) {
        const aside = await setAside(this.path)
        Object.assign(report, { action: 'set-aside', setAsideTo: aside.to, files: aside.files, bytes: aside.bytes })
        await this.db.open()
        // The fresh database carries the log on: same epochs and seqs, the lost backlog announced.
        const first = readingSeqAtOrBefore(this._ackPos) + 1
        const ops = this.metaOps()
        if (this._lastCommittedSeq >= first) {
          const gap: GapData = { from: first, to: this._lastCommittedSeq, count: this._lastCommittedSeq - first + 1, reason: 'corrupt' }
          ops.push({ type: 'put', key: logKey(position(first, Slot.Gap)), value: encodeGap(this.clock(), gap) })
          report.lostSeqs = gap.count
          this.drops.corrupt += gap.count
        }
        await this.db.batch(ops, { sync: true })
        this.readHigh = this._ackPos
        this.tailGap = null
      }
      for (const sub of this.sublevels) await sub.open().catch(() => {})
    })
    this.setHealth(OK)
    this.emit('recovered', report)
    this.emit('committed', this._lastCommittedPos)
  }

  /** The meta records as the running log knows them, to rewrite after a repair may have lost them. */
  /**
   * The epoch record, written with every sync, clock save and clean close as well as when it
   * changes: LevelDB keeps a key where it was last written, so a record written once would sit in
   * the oldest table, and a repair that loses that table would lose every epoch with it.
   */
  private epochsOp (): WriteOp {
    return { type: 'put', key: metaKey('epochs'), value: encodeMeta(this.epochs) }
  }

  private metaOps (): WriteOp[] {
    return [
      this.epochsOp(),
      { type: 'put', key: metaKey('last'), value: encodeMeta(this._lastCommittedSeq) },
      { type: 'put', key: metaKey('ack'), value: encodeMeta(this._ackPos) },
      { type: 'put', key: metaKey('state'), value: encodeMeta({ bootId: this.options.bootId, running: true } satisfies RunState) },
      { type: 'put', key: metaKey('clock'), value: encodeMeta(this.ttlClock.save()) }
    ]
  }

  /**
   * Records that every entry up to `upTo` is acknowledged upstream: removes them and persists the
   * cursor. Calls coalesce; the promise resolves once the cursor is at least `upTo` on disk.
   * While writes fail, the cursor is kept in memory and written once they succeed again (until
   * then a restart resends those entries, which is safe).
   */
  async ack (upTo: number): Promise<void> {
    if (upTo > this.ackTarget) this.ackTarget = upTo
    while (this._ackPos < upTo) {
      if (this._health.reason === 'write-failed') return
      this.acking ??= this.coalesceAcks().finally(() => { this.acking = null })
      await this.acking
    }
  }

  /**
   * Waits ACK_COALESCE_MS for more acknowledgements (not while closing), then writes the cursor
   * once for all of them: each write is a range delete and a put, and the forwarder acknowledges
   * a message or a few at a time. A cursor on disk a few milliseconds behind only means a few
   * more readings resent after a crash.
   */
  private async coalesceAcks (): Promise<void> {
    if (this._status === 'open') await new Promise((resolve) => { setTimeout(resolve, ACK_COALESCE_MS) })
    await this.writeAck(this.ackTarget)
  }

  private async writeAck (upTo: number): Promise<void> {
    await this.options.beforeAck?.(upTo)
    await this.gate.shared(async () => {
      // Delete first, then move the cursor: a crash in between leaves the cursor behind, which
      // only means entries already gone are looked for again, never a record left behind for good.
      await this.db.clear({ gt: logKey(this._ackPos), lte: logKey(upTo) })
      await this.db.put(metaKey('ack'), encodeMeta(upTo))
    })
    const seqs = Math.max(0, readingSeqAtOrBefore(upTo) - readingSeqAtOrBefore(this._ackPos))
    this.space.acknowledged(seqs, this.bytesPerReading)
    this._ackPos = upTo
    if (upTo > this.readHigh) this.readHigh = upTo
    const before = this.epochs.length
    this.pruneEpochs()
    if (this.epochs.length !== before) {
      await this.gate.shared(async () => { await this.db.batch([this.epochsOp()]) })
    }
    this.space.wake()
  }

  // ------------------------------------------------------------------ closing

  /**
   * Finishes the commit in progress and any queued one, persists the ack cursor, fsyncs, marks a
   * clean stop and closes LevelDB. Commits held back by a full buffer or by failing writes are
   * abandoned (their readings were never acknowledged to a sensor). Safe to call more than once.
   */
  async close (): Promise<void> {
    if (this.closing !== null) return await this.closing
    this.closing = this.closeDb()
    return await this.closing
  }

  private async closeDb (): Promise<void> {
    if (this._status === 'closed') return
    this._status = 'closing'
    this.stopping.abort()
    if (this.syncTimer !== null) clearInterval(this.syncTimer)
    if (this.maintenanceTimer !== null) clearInterval(this.maintenanceTimer)
    while (this.writing !== null || this.queue.length > 0) {
      if (this.writing === null) this.startCommit()
      await this.writing
    }
    // A failed last ack write must not keep LevelDB open: it is reported once LevelDB is closed
    // (the cursor on disk is then behind, which only means a resend at the next start).
    let ackFailure: unknown = null
    while (this.acking !== null) {
      try {
        await this.acking
      } catch (err) {
        ackFailure ??= err
      }
    }
    while (this.maintaining !== null) await this.maintaining
    if (this.db.status === 'open' && this._health.reason !== 'write-failed') {
      try {
        await this.db.batch([
          { type: 'put', key: metaKey('clock'), value: encodeMeta(this.ttlClock.save()) },
          this.epochsOp(),
          { type: 'put', key: metaKey('state'), value: encodeMeta({ bootId: this.options.bootId, running: false } satisfies RunState) }
        ], { sync: true })
      } catch {
        // The next start sees an unclean stop: that costs nothing but a log line.
      }
    }
    await this.closeLevelQuietly()
    this._status = 'closed'
    if (ackFailure !== null) {
      throw new BufferError('SLUICE_BUFFER_WRITE_FAILED', `the ack cursor could not be saved while closing: ${describe(ackFailure)}`, { cause: ackFailure })
    }
  }
}

/**
 * Writes a commit's operations as a chained batch: classic-level takes those op by op, where an
 * array batch first copies and checks every operation in abstract-level. Measured here, 100-op
 * batches of 100-byte puts: 2.4 µs of CPU per op chained, 10-13 µs as an array.
 */
async function writeChained (db: ClassicLevel<Buffer, Buffer>, ops: WriteOp[], sync: boolean): Promise<void> {
  const batch = db.batch()
  try {
    for (const op of ops) {
      if (op.type === 'put') batch.put(op.key, op.value)
      else batch.del(op.key)
    }
  } catch (err) {
    await batch.close()
    throw err
  }
  await batch.write({ sync })
}

/** How often expired readings are looked for: a twentieth of the TTL, between 1 s and 60 s. */
function ttlSweepInterval (ttlMs: number): number {
  return Math.min(60_000, Math.max(1000, Math.floor(ttlMs / 20)))
}

function asOpenError (err: unknown, path: string): Error {
  if (err instanceof BufferError) return err
  return new BufferError('SLUICE_BUFFER_OPEN_FAILED', `cannot open the buffer at ${path}: ${describe(err)}`, { cause: err })
}

function describe (err: unknown): string {
  const e = err as { message?: string, cause?: { message?: string } } | null
  const inner = e?.cause?.message
  return inner !== undefined && inner !== '' ? inner : String(e?.message ?? err)
}

function newEpoch (): string {
  return randomBytes(16).toString('hex')
}
