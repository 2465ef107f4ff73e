import type { ClassicLevel } from 'classic-level'
import { BufferError } from './errors.js'
import { LOG_END, logKey } from './keys.js'
import { type BufferBounds, DiskUsage, PER_OP_OVERHEAD, dropAllowance } from './bounds.js'
import type { Gate } from './gate.js'
import type { PendingCommit } from './pending.js'
import type { DropPredicate } from './retention.js'
import type { BufferHealth, DropInfo } from './types.js'

/** how old a size sample may be when a commit looks like it does not fit */
const SAMPLE_WHEN_SHORT_MS = 50
/** how long drop-oldest must not have dropped before the maintenance compacts what it dropped */
const DROP_IDLE_MS = 5000
/** a key range that holds nothing (log keys start with 'l', meta with 'm', sublevels with '!') */
const EMPTY_RANGE = [Buffer.from([0x00]), Buffer.from([0x01])] as const

/** What one drop deleted: its key range (for the compaction that gives the space back) and bytes. */
export interface DropResult { firstKey: Buffer, lastKey: Buffer, bytes: number }

/** What the space keeper needs of the log it keeps inside its bounds. */
export interface SpaceHost {
  readonly db: ClassicLevel<Buffer, Buffer>
  /** runs LevelDB calls against a reopen */
  readonly gate: Gate
  /** everything up to this position is acknowledged upstream */
  readonly ackPos: number
  /** the highest position the forwarder has read: drops never reach it */
  readonly readHigh: number
  readonly health: BufferHealth
  setHealth: (health: BufferHealth) => void
  /** drops the oldest unread readings while `keep` says so, announcing them by a gap entry */
  dropOldest: (keep: DropPredicate) => Promise<DropResult | null>
  /** counts readings dropped from a commit before it was written (drop-newest) */
  countDrop: (info: DropInfo) => void
  /** aborted when the log closes: waits for space end */
  readonly stopping: AbortSignal
}

const OK: BufferHealth = { accepting: true, reason: null }

/**
 * Keeps the buffer inside `buffer.maxBytes` and `buffer.minFreeDisk` (docs/guarantees.md §5-§6):
 * before each commit, makes room for it or applies the overflow policy; gives the space of
 * acknowledged and dropped readings back by compacting them away (LevelDB deletes by writing
 * tombstones: only a compaction returns the bytes); and measures the directory (DiskUsage).
 */
export class SpaceKeeper {
  readonly usage: DiskUsage
  private readonly bounds: BufferBounds
  private readonly host: SpaceHost
  private readonly waitMs: number
  private waiter: (() => void) | null = null
  /** the ack cursor when acknowledged entries were last compacted away */
  private compactedPos = 0
  /** bytes of readings acknowledged since the last compaction, estimated */
  private deadBytes = 0
  /** when acknowledged entries were last compacted away (performance.now) */
  private lastCompaction = 0
  /** the key range drop-oldest deleted and no compaction has reclaimed yet (DiskUsage.credit) */
  private unreclaimed: { first: Buffer, last: Buffer } | null = null
  /** when drop-oldest last dropped (performance.now) */
  private lastDropAt = 0
  /** whether drop-oldest has looked for an earlier run's dropped readings (reclaimEarlierDrops) */
  private reclaimedSinceOpen = false

  /**
   * `liveTables` lists LevelDB's current table files (DiskUsage); `waitMs` is the longest a full
   * buffer waits before it looks again (the maintenance interval).
   */
  constructor (path: string, bounds: BufferBounds, host: SpaceHost, liveTables: () => Map<number, number> | null, waitMs: number) {
    this.bounds = bounds
    this.host = host
    this.waitMs = waitMs
    this.usage = new DiskUsage(path, bounds, liveTables)
  }

  /** The log opened with its ack cursor at `ackPos`: what lies before it is compacted already. */
  opened (ackPos: number): void {
    this.compactedPos = ackPos
  }

  /**
   * The log acknowledged `readings` more, about `bytesPerReading` each: garbage until compacted.
   * (The log wakes a full buffer once its ack cursor has moved: `wake`.)
   */
  acknowledged (readings: number, bytesPerReading: number): void {
    this.usage.noteWritten(readings * (9 + PER_OP_OVERHEAD))
    this.deadBytes += readings * bytesPerReading
  }

  /**
   * Waits until the commit fits under the bounds, or applies the overflow policy. Compacting what
   * the upstream acknowledged comes first: it drops nothing.
   */
  async makeRoom (commit: PendingCommit): Promise<void> {
    if (!Number.isFinite(this.bounds.maxBytes) && this.bounds.minFreeDisk === 0) return
    let collected = false
    for (;;) {
      if (this.usage.room().bytes < commit.bytes) await this.usage.sampleIfOlder(SAMPLE_WHEN_SHORT_MS)
      const room = this.usage.room()
      if (room.bytes >= commit.bytes) break
      if (await this.compactAcknowledged()) continue
      if (!collected && this.usage.lingeringBytes > 0) {
        // Obsolete tables an iterator held when their compaction ended stay until LevelDB's next
        // compaction: have one (of an empty key range: it only deletes them) before dropping.
        collected = true
        await this.compact(EMPTY_RANGE[0], EMPTY_RANGE[1])
        continue
      }
      if (this.bounds.overflow === 'drop-newest') {
        const { dropped, gap } = commit.keepPrefix(room.bytes)
        if (gap !== null && dropped > 0) this.host.countDrop({ reason: 'overflow', from: gap.from, to: gap.to, count: dropped })
        break
      }
      if (this.bounds.overflow === 'drop-oldest') {
        if (!this.reclaimedSinceOpen) {
          this.reclaimedSinceOpen = true
          if (await this.reclaimEarlierDrops()) continue
        }
        if (await this.dropOldest(commit.bytes - room.bytes)) continue
      }
      if (this.host.health.reason !== room.shortage) {
        this.host.setHealth({
          accepting: false,
          reason: room.shortage,
          code: 'SLUICE_BUFFER_FULL',
          detail: room.shortage === 'full'
            ? `the buffer is full (buffer.maxBytes ${this.bounds.maxBytes} bytes); PUBACKs are held back until the upstream acknowledges readings`
            : `the disk is nearly full (less than buffer.minFreeDisk ${this.bounds.minFreeDisk} bytes free); readings are held back`
        })
      }
      await this.waitForSpace()
    }
    if (this.host.health.reason === 'full' || this.host.health.reason === 'disk-low') this.host.setHealth(OK)
  }

  /** Space may have been freed (an ack, a drop, a compaction): a full buffer looks again. */
  wake (): void {
    this.waiter?.()
  }

  /**
   * The maintenance round's part (once a second): measures the directory when it changed,
   * collects obsolete tables, compacts away what drop-oldest dropped once it has stopped
   * dropping, and acknowledged garbage once it is worth it.
   */
  async maintain (now: number): Promise<void> {
    if (this.usage.written > 0 || now - this.usage.sampledAt > 10_000) await this.usage.sample()
    // Obsolete tables LevelDB kept for an iterator go at its next compaction: have one now (of an
    // empty key range: it only flushes the small write buffer and deletes them).
    if (this.usage.lingeringBytes > 0 && Number.isFinite(this.bounds.maxBytes)) await this.compact(EMPTY_RANGE[0], EMPTY_RANGE[1])
    // Readings drop-oldest deleted are compacted away once it has not dropped for a while: the
    // space is counted as free meanwhile, but a restart would not know that.
    if (this.unreclaimed !== null && now - this.lastDropAt >= DROP_IDLE_MS) await this.reclaimDropped()
    // Compaction rewrites tables (flash wear), so it waits until the acknowledged garbage is worth
    // it (a quarter of the bound, or 64 MiB), or 30 rounds (half a minute) have passed: garbage
    // never sits for long, and a steady flow compacts twice a minute. A buffer that fills
    // compacts at once (makeRoom).
    const worth = this.deadBytes >= Math.min(this.bounds.maxBytes / 4, 64 * 1024 * 1024)
    const due = this.deadBytes > 0 && now - this.lastCompaction >= 30 * this.waitMs
    if (Number.isFinite(this.bounds.maxBytes) && (worth || due)) await this.compactAcknowledged()
    this.wake()
  }

  /** Compacts a key range, then measures the directory: what the compaction gave back shows. */
  async compact (start: Buffer, end: Buffer): Promise<void> {
    try {
      await this.host.gate.shared(async () => { await this.host.db.compactRange(start, end) })
    } catch {
      // A failed compaction only delays getting the space back; the write path reports real faults.
    }
    await this.usage.sample()
  }

  /** Resolves when space may have been freed (an ack, a drop, the next maintenance round). */
  private async waitForSpace (): Promise<void> {
    const { stopping } = this.host
    if (stopping.aborted) throw new BufferError('SLUICE_BUFFER_NOT_OPEN', 'the buffer closed while it was full')
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { done(); reject(new BufferError('SLUICE_BUFFER_NOT_OPEN', 'the buffer closed while it was full')) }
      const timer = setTimeout(() => { done(); resolve() }, this.waitMs)
      const done = (): void => {
        clearTimeout(timer)
        stopping.removeEventListener('abort', onAbort)
        this.waiter = null
      }
      this.waiter = () => { done(); resolve() }
      stopping.addEventListener('abort', onAbort)
    })
  }

  /**
   * Gives back the space of entries acknowledged upstream: a compaction over the acknowledged
   * range. Returns whether there was anything to do.
   */
  private async compactAcknowledged (): Promise<boolean> {
    const from = this.compactedPos
    const to = this.host.ackPos
    if (to <= from) return false
    this.compactedPos = to
    this.deadBytes = 0
    this.lastCompaction = performance.now()
    await this.compact(logKey(from), logKey(to))
    return true
  }

  /**
   * drop-oldest: drops the oldest readings the forwarder has not read that hold `deficit` bytes,
   * and not one more. Their space comes back only when LevelDB compacts them, and a
   * compaction per commit would wear the flash: they wait, counted as free (DiskUsage.credit),
   * until they reach the allowance kept for them below the bound, and one compaction then takes
   * them all. Returns false when there is nothing to drop.
   */
  private async dropOldest (deficit: number): Promise<boolean> {
    const allowance = dropAllowance(this.bounds.maxBytes)
    if (this.usage.credit > 0 && this.usage.credit + deficit > allowance) {
      await this.reclaimDropped()
      return true
    }
    // Exactly the readings that hold `deficit` bytes: the last one dropped crosses it.
    const dropped = await this.host.dropOldest((_reading, bytes) => bytes < deficit)
    if (dropped === null) return false
    this.usage.credit += dropped.bytes
    this.lastDropAt = performance.now()
    this.unreclaimed = { first: this.unreclaimed?.first ?? dropped.firstKey, last: dropped.lastKey }
    if (this.usage.credit > allowance) await this.reclaimDropped()
    return true
  }

  /**
   * Readings an earlier run dropped and did not compact away still take space, and this run has
   * no credit for them: before its first drop, the keeper compacts the stretch they can be in,
   * from the ack cursor to the first entry still to be sent (drops take the oldest unsent
   * readings, so that stretch holds only deleted readings, gap entries and what the forwarder has
   * in flight). False when there is nothing to send.
   */
  private async reclaimEarlierDrops (): Promise<boolean> {
    const { db, gate, ackPos, readHigh } = this.host
    const next = await gate.shared(async () => {
      for await (const key of db.keys({ gt: logKey(Math.max(ackPos, readHigh)), lt: LOG_END, limit: 1 })) return key
      return undefined
    })
    if (next === undefined) return false
    await this.compact(logKey(ackPos), next)
    return true
  }

  /**
   * Compacts away the readings drop-oldest deleted: what the compaction gave back is now real
   * free space, no longer credit. Drops made meanwhile keep their credit and start a range of
   * their own.
   */
  private async reclaimDropped (): Promise<void> {
    const range = this.unreclaimed
    if (range === null) return
    this.unreclaimed = null
    const credit = this.usage.credit
    await this.compact(range.first, range.last) // and measures the directory again
    this.usage.credit = Math.max(0, this.usage.credit - credit)
  }
}
