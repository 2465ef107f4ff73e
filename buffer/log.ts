import { EventEmitter } from 'node:events'
import { BufferError } from './errors.js'
import type { GapReason, LogEntry, ReadingInput } from './codec.js'
import { closedOps } from './meta.js'
import { openLog } from './opening.js'
import { GroupCommits } from './commits.js'
import { Reads } from './reads.js'
import { Acks } from './acks.js'
import { Room } from './room.js'
import { Repairs } from './repair.js'
import { Maintenance } from './maintenance.js'
import { LogState, type LogStatus, describe } from './state.js'
import type { AppendOptions, AppendResult, BufferHealth, DurableLogEvents, DurableLogOptions, OpenReport } from './types.js'

export type {
  AppendOptions, AppendResult, BufferHealth, CommitInfo, DropInfo, DurableLogEvents, DurableLogOptions, HealthReason, OpenReport
} from './types.js'

/**
 * The durable, append-only log of readings: sluice's buffer.
 *
 * - `append` gives a reading its seq at once (in call order) and resolves when the group commit
 *   that holds it is written: every append made while a commit is in flight joins the next one,
 *   so many readings from many clients share one LevelDB write.
 * - `read(after)` returns committed entries past a position, in order; nothing unwritten is read.
 * - `ack(upTo)` removes entries up to a position and persists that cursor.
 * - Opening reads a handful of meta keys and never scans the backlog.
 *
 * Bounds. Before a commit is written the log checks that it fits under
 * `buffer.maxBytes` and above `buffer.minFreeDisk` (bounds.ts measures the size the way the disk
 * sees it). When it does not, space acknowledged upstream is compacted back first; then the
 * overflow policy decides: `block` holds the commit (and with it the sensors' PUBACKs) until acks
 * free space; `drop-newest` writes the part of the commit that fits and a gap for the rest;
 * `drop-oldest` drops the oldest readings the forwarder has not read yet. Readings older than
 * the TTL are dropped the same way. A drop deletes the readings and writes a gap entry in their
 * place in one atomic batch, so delivered + announced = assigned holds across crashes too.
 *
 * A commit whose write fails (a full disk, an I/O error) is retried, the same batch with the same
 * seqs, until it succeeds, reopening LevelDB between attempts (LevelDB refuses every write after
 * a failed background flush until reopened). Meanwhile the log says it is not accepting.
 *
 * This class is the log's lifecycle and its public face; the work is done by its parts, each in
 * the file named for it: opening.ts (open, epochs, recovery at open), commits.ts (append, group
 * commits, sync), reads.ts, acks.ts, space.ts (what to do to stay inside the bounds) and room.ts
 * (doing it), dropping.ts (drop-oldest and TTL drops), repair.ts (damage found while running),
 * maintenance.ts (the periodic work). They share one LogState (state.ts); meta.ts alone knows the
 * meta records on disk.
 */
export class DurableLog extends EventEmitter<DurableLogEvents> {
  readonly path: string
  private readonly state: LogState
  private readonly room: Room
  private readonly acks: Acks
  private readonly commits: GroupCommits
  private readonly reads: Reads
  private readonly maintenance: Maintenance
  private closing: Promise<void> | null = null

  private constructor (options: DurableLogOptions) {
    super()
    this.path = options.path
    this.state = new LogState(options, this)
    const intervalMs = options.maintenanceIntervalMs ?? 1000
    this.room = new Room(this.state, intervalMs)
    this.acks = new Acks(this.state, this.room)
    this.commits = new GroupCommits(this.state, this.room, this.acks)
    this.reads = new Reads(this.state, new Repairs(this.state))
    this.maintenance = new Maintenance(this.state, this.room, intervalMs)
  }

  static async open (options: DurableLogOptions): Promise<DurableLog> {
    const log = new DurableLog(options)
    await log.openDb()
    return log
  }

  get status (): LogStatus { return this.state.status }
  /** what opening found: a new buffer, an unclean stop, a new epoch, a recovery */
  get report (): OpenReport { return this.state.report }
  /** the epoch new readings are written under */
  get epoch (): string { return this.state.epoch }
  /** the last seq handed out (written or not) */
  get lastSeq (): number { return this.state.lastSeq }
  /** the position of the last entry that is written and readable */
  get lastCommittedPos (): number { return this.state.lastCommittedPos }
  /** the highest seq that is written (as a reading or inside a gap) */
  get lastCommittedSeq (): number { return this.state.lastCommittedSeq }
  /** every entry at or before this position has been acknowledged upstream and removed */
  get ackPos (): number { return this.state.ackPos }
  /** whether the log accepts readings, and why not */
  get health (): BufferHealth { return this.state.health }
  /** readings dropped since the log opened, by reason */
  get dropped (): Readonly<Record<GapReason, number>> { return { ...this.state.drops } }
  /** the buffer's size on disk and the volume's free space, as last estimated, in bytes */
  get diskUsage (): { bytes: number, free: number, maxBytes: number, minFreeDisk: number } {
    const { usage, bounds } = this.state
    return { bytes: usage.bytes, free: usage.free, maxBytes: bounds.maxBytes, minFreeDisk: bounds.minFreeDisk }
  }

  /** the epoch a seq was written under */
  epochOf (seq: number): string {
    return this.state.epochOf(seq)
  }

  /**
   * A sublevel of the buffer's LevelDB for a neighbour store (the forwarder's dead letters): it
   * shares the directory, the lock and the lifecycle, and its keys ('!name!...') never mix with
   * the log's. Usable while the log is open.
   */
  sublevel (name: string) {
    const sub = this.state.db.sublevel<Buffer, Buffer>(name, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    // A sublevel closes with its parent; the log reopens LevelDB after a failed write or
    // a repair, and reopens the sublevels with it.
    this.state.sublevels.add(sub)
    return sub
  }

  private async openDb (): Promise<void> {
    await openLog(this.state)
    this.room.opened(this.state.ackPos)
    this.acks.opened()
    await this.state.usage.sample()
    this.state.status = 'open'
    this.commits.start()
    this.maintenance.start()
  }

  /**
   * Gives the reading the next seq and queues it for the next group commit. `durable` resolves
   * when the commit is written (and fsynced with `sync: 'always'`). While writes fail it waits,
   * the write being retried; it rejects only if the log closes first.
   */
  append (reading: ReadingInput, options: AppendOptions = {}): AppendResult {
    if (this.state.status !== 'open') {
      throw new BufferError('SLUICE_BUFFER_NOT_OPEN', `the buffer is ${this.state.status}`)
    }
    return this.commits.append(reading, options)
  }

  /**
   * Committed entries after position `after`, in order, at most `limit` of them. A reading whose
   * record cannot be decoded comes back as a one-seq gap with reason `corrupt`, so one bad record
   * never stalls the forwarder.
   */
  async read (after: number, limit: number): Promise<LogEntry[]> {
    return await this.reads.read(after, limit)
  }

  /**
   * Records that every entry up to `upTo` is acknowledged upstream: removes them and persists the
   * cursor. Calls coalesce; the promise resolves once the cursor is at least `upTo` on disk.
   */
  ack (upTo: number): Promise<void> {
    return this.acks.ack(upTo)
  }

  /** Drops the readings that have been in the buffer longer than the TTL (in buffer time, clock.ts). */
  async expire (): Promise<number> {
    return await this.maintenance.expire()
  }

  /** Forces everything written so far to disk. */
  async syncNow (): Promise<void> {
    await this.commits.syncNow()
  }

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
    const state = this.state
    if (state.status === 'closed') return
    state.status = 'closing'
    state.stopping.abort()
    this.maintenance.stop()
    await this.commits.finish()
    const ackFailure = await this.acks.settle()
    await this.maintenance.settle()
    if (state.db.status === 'open' && state.health.reason !== 'write-failed') {
      try {
        await state.db.batch(closedOps({ bootId: state.options.bootId, epochs: state.epochs, clock: state.ttlClock.save() }), { sync: true })
      } catch {
        // The next start sees an unclean stop: that costs nothing but a log line.
      }
    }
    await state.closeLevelQuietly()
    state.status = 'closed'
    if (ackFailure !== null) {
      throw new BufferError('SLUICE_BUFFER_WRITE_FAILED', `the ack cursor could not be saved while closing: ${describe(ackFailure)}`, { cause: ackFailure })
    }
  }
}
