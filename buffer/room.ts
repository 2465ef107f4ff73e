/**
 * Making room, carried out: before each group commit, and once a second, the log asks space.ts
 * what to do to stay inside its bounds and does it here: compacting acknowledged or dropped
 * entries away (LevelDB deletes by writing tombstones: only a compaction returns the bytes),
 * dropping readings (dropping.ts), or holding the commit back until space returns.
 */
import { BufferError } from './errors.js'
import { LOG_END, logKey } from './keys.js'
import { PER_OP_OVERHEAD, type Shortage, dropAllowance } from './bounds.js'
import type { PendingCommit } from './pending.js'
import { type RoomDecision, decideRoom, decideUpkeep } from './space.js'
import { dropRun } from './dropping.js'
import { type LogState, OK } from './state.js'

/** how old a size sample may be when a commit looks like it does not fit */
const SAMPLE_WHEN_SHORT_MS = 50
/** a key range that holds nothing (log keys start with 'l', meta with 'm', sublevels with '!') */
const EMPTY_RANGE = [Buffer.from([0x00]), Buffer.from([0x01])] as const

/**
 * Carries out the space keeper's decisions for one log, and keeps the records they are made from:
 * what has been compacted, what was dropped and not compacted yet.
 */
export class Room {
  private readonly state: LogState
  /** the longest a full buffer waits before it looks again (the maintenance interval) */
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
  /** whether readings an earlier run dropped have been looked for (reclaimEarlierDrops) */
  private reclaimedSinceOpen = false

  constructor (state: LogState, waitMs: number) {
    this.state = state
    this.waitMs = waitMs
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
    this.state.usage.noteWritten(readings * (9 + PER_OP_OVERHEAD))
    this.deadBytes += readings * bytesPerReading
  }

  /** Waits until the commit fits under the bounds, or applies the overflow policy (space.ts). */
  async makeRoom (commit: PendingCommit): Promise<void> {
    const { bounds, usage } = this.state
    if (!Number.isFinite(bounds.maxBytes) && bounds.minFreeDisk === 0) return
    let collected = false
    for (;;) {
      if (usage.room().bytes < commit.bytes) await usage.sampleIfOlder(SAMPLE_WHEN_SHORT_MS)
      let decision = this.decide(commit, collected, false)
      if (decision.action === 'reclaim-earlier-drops') {
        this.reclaimedSinceOpen = true
        if (await this.reclaimEarlierDrops()) continue
        decision = this.decide(commit, collected, false)
      }
      if (decision.action === 'drop-oldest') {
        if (await this.dropOldest(decision.bytes)) continue
        decision = this.decide(commit, collected, true)
      }
      switch (decision.action) {
        case 'write':
          this.release()
          return
        case 'compact-acknowledged':
          await this.compactAcknowledged()
          continue
        case 'collect-obsolete':
          // Obsolete tables an iterator held when their compaction ended stay until LevelDB's next
          // compaction: have one (of an empty key range: it only deletes them) before dropping.
          collected = true
          await this.compact(EMPTY_RANGE[0], EMPTY_RANGE[1])
          continue
        case 'keep-prefix': {
          const { dropped, gap } = commit.keepPrefix(decision.room)
          if (gap !== null && dropped > 0) this.state.countDrop({ reason: 'overflow', from: gap.from, to: gap.to, count: dropped })
          this.release()
          return
        }
        case 'reclaim-dropped':
          await this.reclaimDropped()
          continue
        case 'reclaim-earlier-drops':
        case 'drop-oldest':
          continue // carried out above, before the decision was asked again
        case 'hold':
          this.hold(decision.shortage)
          await this.waitForSpace()
          continue
      }
    }
  }

  /** The space keeper's decision (space.ts) for `commit` on what the log looks like now. */
  private decide (commit: PendingCommit, collected: boolean, nothingToDrop: boolean): RoomDecision {
    const { bounds, usage } = this.state
    return decideRoom({
      needed: commit.bytes,
      room: usage.room(),
      overflow: bounds.overflow,
      allowance: dropAllowance(bounds.maxBytes),
      credit: usage.credit,
      lingeringBytes: usage.lingeringBytes,
      acknowledgedUncompacted: this.state.ackPos > this.compactedPos,
      tried: { collect: collected, earlierDrops: this.reclaimedSinceOpen, dropOldest: nothingToDrop }
    })
  }

  /** Space may have been freed (an ack, a drop, a compaction): a full buffer looks again. */
  wake (): void {
    this.waiter?.()
  }

  /**
   * The maintenance round's part (once a second): measures the directory when it changed, then
   * gives back what space.ts says is due.
   */
  async upkeep (now: number): Promise<void> {
    const { usage, bounds } = this.state
    if (usage.written > 0 || now - usage.sampledAt > 10_000) await usage.sample()
    const due = decideUpkeep({
      bounded: Number.isFinite(bounds.maxBytes),
      maxBytes: bounds.maxBytes,
      lingeringBytes: usage.lingeringBytes,
      unreclaimedDrops: this.unreclaimed !== null,
      sinceDropMs: now - this.lastDropAt,
      deadBytes: this.deadBytes,
      sinceCompactionMs: now - this.lastCompaction,
      roundMs: this.waitMs
    })
    if (due.collectObsolete) await this.compact(EMPTY_RANGE[0], EMPTY_RANGE[1])
    if (due.reclaimDropped) await this.reclaimDropped()
    if (due.compactAcknowledged) await this.compactAcknowledged()
    this.wake()
  }

  /** Compacts a key range, then measures the directory: what the compaction gave back shows. */
  async compact (start: Buffer, end: Buffer): Promise<void> {
    try {
      await this.state.gate.shared(async () => { await this.state.db.compactRange(start, end) })
    } catch {
      // A failed compaction only delays getting the space back; the write path reports real faults.
    }
    await this.state.usage.sample()
  }

  private hold (shortage: Shortage): void {
    if (this.state.health.reason === shortage) return
    const { maxBytes, minFreeDisk } = this.state.bounds
    this.state.setHealth({
      accepting: false,
      reason: shortage,
      code: 'SLUICE_BUFFER_FULL',
      detail: shortage === 'full'
        ? `the buffer is full (buffer.maxBytes ${maxBytes} bytes); PUBACKs are held back until the upstream acknowledges readings`
        : `the disk is nearly full (less than buffer.minFreeDisk ${minFreeDisk} bytes free); readings are held back`
    })
  }

  /** The commit has room: a hold for space (`full`, `disk-low`) ends; other health is not room's. */
  private release (): void {
    if (this.state.health.reason === 'full' || this.state.health.reason === 'disk-low') this.state.setHealth(OK)
  }

  /** Resolves when space may have been freed (an ack, a drop, the next maintenance round). */
  private async waitForSpace (): Promise<void> {
    const stopping = this.state.stopping.signal
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

  /** Gives back the space of entries acknowledged upstream: a compaction over the acknowledged range. */
  private async compactAcknowledged (): Promise<void> {
    const from = this.compactedPos
    const to = this.state.ackPos
    if (to <= from) return
    this.compactedPos = to
    this.deadBytes = 0
    this.lastCompaction = performance.now()
    await this.compact(logKey(from), logKey(to))
  }

  /**
   * drop-oldest: drops the oldest readings the forwarder has not read that hold `deficit` bytes,
   * and not one more; their space counts as free (DiskUsage.credit) until a compaction takes
   * them, at the latest once the credit exceeds the allowance. False when there is nothing to drop.
   */
  private async dropOldest (deficit: number): Promise<boolean> {
    // Exactly the readings that hold `deficit` bytes: the last one dropped crosses it.
    const dropped = await dropRun(this.state, 'overflow', (_reading, bytes) => bytes < deficit)
    if (dropped === null) return false
    this.state.usage.credit += dropped.bytes
    this.lastDropAt = performance.now()
    this.unreclaimed = { first: this.unreclaimed?.first ?? dropped.firstKey, last: dropped.lastKey }
    if (this.state.usage.credit > dropAllowance(this.state.bounds.maxBytes)) await this.reclaimDropped()
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
    const { db, gate, ackPos, readHigh } = this.state
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
    const usage = this.state.usage
    const credit = usage.credit
    await this.compact(range.first, range.last) // and measures the directory again
    usage.credit = Math.max(0, usage.credit - credit)
  }
}
