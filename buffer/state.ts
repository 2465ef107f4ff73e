import type { EventEmitter } from 'node:events'
import { ClassicLevel } from 'classic-level'
import { BufferError, levelCode } from './errors.js'
import { seqOf } from './keys.js'
import { GAP_REASONS, type GapData, type GapReason } from './codec.js'
import { type BufferBounds, DiskUsage, UNBOUNDED, levelSizes, parseSstables } from './bounds.js'
import type { BufferClock } from './clock.js'
import { Gate } from './gate.js'
import type { EpochSpan } from './meta.js'
import type { BufferHealth, DropInfo, DurableLogEvents, DurableLogOptions, OpenReport } from './types.js'

export type LogStatus = 'opening' | 'open' | 'closing' | 'closed'

export const OK: BufferHealth = { accepting: true, reason: null }

/**
 * What the parts of the durable log share: the LevelDB handle and the gate over it, where the log
 * stands, and the few steps every part takes (reporting health and drops, reopening LevelDB).
 * DurableLog (log.ts) makes one and hands it to its parts: opening.ts and repair.ts set where the
 * log stands from disk, commits.ts appends, reads.ts reads, acks.ts acknowledges, dropping.ts and
 * room.ts keep the bounds, maintenance.ts runs the periodic work.
 */
export class LogState {
  readonly path: string
  readonly options: DurableLogOptions
  /** milliseconds since 1970, for the time of events the log writes itself */
  readonly clock: () => number
  readonly bounds: BufferBounds
  readonly db: ClassicLevel<Buffer, Buffer>
  /** shared and exclusive sections over `db` (gate.ts) */
  readonly gate = new Gate()
  /** the buffer's size on disk and the volume's free space (bounds.ts) */
  readonly usage: DiskUsage
  /** the neighbour stores on the same LevelDB (DurableLog.sublevel), reopened with it */
  readonly sublevels = new Set<{ open: () => Promise<void> }>()
  /** aborts waits for space and write retries when the log closes */
  readonly stopping = new AbortController()
  /** the log's events go out through the log itself */
  readonly events: EventEmitter<DurableLogEvents>
  /** buffer time, which the TTL is measured on (clock.ts); set at open */
  ttlClock!: BufferClock
  status: LogStatus = 'opening'
  report: OpenReport = { created: false, uncleanStop: false }
  /** the epochs that unacknowledged entries belong to, oldest first; the last is the current one */
  epochs: EpochSpan[] = []
  /** the last seq handed out (written or not) */
  lastSeq = 0
  /** the position of the last entry that is written and readable */
  lastCommittedPos = 0
  /** the highest seq that is written (as a reading or inside a gap) */
  lastCommittedSeq = 0
  /** every entry at or before this position has been acknowledged upstream and removed */
  ackPos = 0
  health: BufferHealth = OK
  /**
   * The highest position any read has returned. Drops never touch entries at or before it: the
   * forwarder may hold them in flight or in its read-ahead, and a reading that is both delivered
   * and announced as dropped would break the count (docs/guarantees.md §4).
   */
  readHigh = 0
  /** reads stop before this position while a commit that rewrites the entry there is written */
  readFence: number | null = null
  /** the gap entry that is the last entry of the log, while it is (drop-newest extends it in place) */
  tailGap: { pos: number, gap: GapData } | null = null
  /** bytes a reading takes on disk, a running average: what an acknowledged one leaves as garbage */
  bytesPerReading = 100
  /** readings dropped since the log opened, by reason */
  readonly drops = Object.fromEntries(GAP_REASONS.map((r) => [r, 0])) as Record<GapReason, number>

  constructor (options: DurableLogOptions, events: EventEmitter<DurableLogEvents>) {
    this.options = options
    this.events = events
    this.path = options.path
    this.clock = options.clock ?? Date.now
    this.bounds = options.bounds ?? UNBOUNDED
    this.db = new ClassicLevel<Buffer, Buffer>(options.path, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
      ...levelSizes(this.bounds.maxBytes)
    })
    this.usage = new DiskUsage(options.path, this.bounds, () => this.liveTables())
  }

  /** the epoch new readings are written under */
  get epoch (): string { return this.epochs[this.epochs.length - 1].epoch }

  epochOf (seq: number): string {
    for (let i = this.epochs.length - 1; i > 0; i--) {
      if (seq >= this.epochs[i].from) return this.epochs[i].epoch
    }
    return this.epochs[0].epoch
  }

  /** Drops epoch spans that no unacknowledged entry belongs to any more (keeps the current one). */
  pruneEpochs (): void {
    const firstUnacked = seqOf(this.ackPos) + 1
    while (this.epochs.length > 1 && this.epochs[1].from <= firstUnacked) this.epochs.shift()
  }

  setHealth (health: BufferHealth): void {
    if (health.accepting === this.health.accepting && health.reason === this.health.reason) return
    this.health = health
    this.events.emit('health', health)
  }

  countDrop (info: DropInfo): void {
    this.drops[info.reason] += info.count
    this.events.emit('dropped', info)
  }

  async openLevel (): Promise<void> {
    try {
      await this.db.open()
    } catch (cause) {
      if (levelCode(cause) === 'LEVEL_LOCKED') {
        throw new BufferError('SLUICE_BUFFER_LOCKED', `the buffer at ${this.path} is in use by another process`, { cause })
      }
      throw cause
    }
  }

  async closeLevelQuietly (): Promise<void> {
    try {
      await this.db.close()
    } catch {}
  }

  /** Closes and reopens LevelDB (and the sublevels on it), which clears a failed write's lasting error. */
  async reopen (): Promise<void> {
    await this.gate.exclusive(async () => {
      await this.closeLevelQuietly()
      await this.db.open()
      for (const sub of this.sublevels) await sub.open().catch(() => {})
    })
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
}

/** The innermost message of an error, for a log line or a report. */
export function describe (err: unknown): string {
  const e = err as { message?: string, cause?: { message?: string } } | null
  const inner = e?.cause?.message
  return inner !== undefined && inner !== '' ? inner : String(e?.message ?? err)
}
