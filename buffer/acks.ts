/**
 * Acknowledging: the upstream has every entry up to a position, so they are removed and the ack
 * cursor is persisted (docs/guarantees.md §3: after a restart, sending starts after it).
 */
import { logKey, readingSeqAtOrBefore } from './keys.js'
import { ackOp, epochsOp } from './meta.js'
import type { Room } from './room.js'
import type { LogState } from './state.js'

/**
 * how long acknowledgements gather before the cursor is written: at 5,000 readings/s acknowledged
 * one by one, 200 writes a second instead of 5,000 (see Acks.ack)
 */
const ACK_COALESCE_MS = 5

/** Moves the ack cursor, coalescing the forwarder's acknowledgements into few writes. */
export class Acks {
  private readonly state: LogState
  private readonly room: Room
  /** the highest position asked to be acknowledged */
  private target = 0
  private acking: Promise<void> | null = null
  /** the write in progress has read `target`: a later acknowledgement needs another write */
  private writing = false

  constructor (state: LogState, room: Room) {
    this.state = state
    this.room = room
  }

  /** The log opened: the cursor on disk is where acknowledging resumes. */
  opened (): void {
    this.target = this.state.ackPos
  }

  /**
   * Records that every entry up to `upTo` is acknowledged upstream: removes them and persists the
   * cursor. Calls coalesce; the promise resolves once the cursor is at least `upTo` on disk.
   * While writes fail, the cursor is kept in memory and written once they succeed again (until
   * then a restart resends those entries, which is safe).
   *
   * The forwarder calls this once per PUBACK: while a write waits out its coalescing delay it will
   * write the new target too, and its promise is returned as it is (no promise of this call's own).
   */
  ack (upTo: number): Promise<void> {
    if (upTo > this.target) this.target = upTo
    if (this.acking !== null && !this.writing && this.state.health.reason !== 'write-failed') return this.acking
    return this.ackInTurn(upTo)
  }

  private async ackInTurn (upTo: number): Promise<void> {
    while (this.state.ackPos < upTo) {
      if (this.state.health.reason === 'write-failed') return
      this.acking ??= this.coalesce().finally(() => { this.acking = null })
      await this.acking
    }
  }

  /** Writes work again: the acknowledgements held in memory meanwhile are written now. */
  resume (): void {
    if (this.target > this.state.ackPos) this.ack(this.target).catch(() => {})
  }

  /**
   * Closing: waits for the ack write in progress. A failed last write must not keep LevelDB open:
   * it is returned, for the log to report once LevelDB is closed (the cursor on disk is then
   * behind, which only means a resend at the next start).
   */
  async settle (): Promise<unknown> {
    let failure: unknown = null
    while (this.acking !== null) {
      try {
        await this.acking
      } catch (err) {
        failure ??= err
      }
    }
    return failure
  }

  /**
   * Waits ACK_COALESCE_MS for more acknowledgements (not while closing), then writes the cursor
   * once for all of them: each write is a range delete and a put, and the forwarder acknowledges
   * a message or a few at a time. A cursor on disk a few milliseconds behind only means a few
   * more readings resent after a crash.
   */
  private async coalesce (): Promise<void> {
    if (this.state.status === 'open') await new Promise((resolve) => { setTimeout(resolve, ACK_COALESCE_MS) })
    this.writing = true
    try {
      await this.write(this.target)
    } finally {
      this.writing = false
    }
  }

  private async write (upTo: number): Promise<void> {
    const state = this.state
    await state.options.beforeAck?.(upTo)
    await state.gate.shared(async () => {
      // Delete first, then move the cursor: a crash in between leaves the cursor behind, which
      // only means entries already gone are looked for again, never a record left behind for good.
      await state.db.clear({ gt: logKey(state.ackPos), lte: logKey(upTo) })
      await state.db.batch([ackOp(upTo)])
    })
    const seqs = Math.max(0, readingSeqAtOrBefore(upTo) - readingSeqAtOrBefore(state.ackPos))
    this.room.acknowledged(seqs, state.bytesPerReading)
    state.ackPos = upTo
    if (upTo > state.readHigh) state.readHigh = upTo
    const before = state.epochs.length
    state.pruneEpochs()
    if (state.epochs.length !== before) {
      await state.gate.shared(async () => { await state.db.batch([epochsOp(state.epochs)]) })
    }
    this.room.wake()
  }
}
