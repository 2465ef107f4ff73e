/**
 * Reading committed entries for the forwarder, in position order. Nothing unwritten is read;
 * what was read is protected from drops (LogState.readHigh).
 */
import { BufferError, isDamage } from './errors.js'
import { LOG_END, Slot, logKey, positionOf, seqOf, slotOf } from './keys.js'
import { type GapData, type LogEntry, decodeEntry } from './codec.js'
import type { Repairs } from './repair.js'
import type { LogState } from './state.js'

/** Reads the log, repairing LevelDB when a read meets damage. */
export class Reads {
  private readonly state: LogState
  private readonly repairs: Repairs

  constructor (state: LogState, repairs: Repairs) {
    this.state = state
    this.repairs = repairs
  }

  /**
   * Committed entries after position `after`, in order, at most `limit` of them. A reading whose
   * record cannot be decoded comes back as a one-seq gap with reason `corrupt`, so one bad record
   * never stalls the forwarder.
   */
  async read (after: number, limit: number): Promise<LogEntry[]> {
    const state = this.state
    if (state.status !== 'open' && state.status !== 'closing') {
      throw new BufferError('SLUICE_BUFFER_NOT_OPEN', `the buffer is ${state.status}`)
    }
    if (after >= state.lastCommittedPos) return []
    try {
      return await this.readEntries(after, limit)
    } catch (err) {
      if (!isDamage(err) || state.status !== 'open') throw err
      await this.repairs.repair(err)
      return await this.readEntries(after, limit)
    }
  }

  private async readEntries (after: number, limit: number): Promise<LogEntry[]> {
    const state = this.state
    return await state.gate.shared(async () => {
      const entries: LogEntry[] = []
      const end = state.readFence === null ? LOG_END : logKey(state.readFence)
      // Only committed entries are ever in LevelDB, so the scan needs no upper bound of its own.
      // all(): the chunk in one native read, not an awaited step per entry.
      for (const [key, value] of await state.db.iterator({ gt: logKey(after), lt: end, limit }).all()) {
        const pos = positionOf(key)
        const seq = seqOf(pos)
        try {
          entries.push(decodeEntry(pos, seq, state.epochOf(seq), value))
        } catch {
          if (slotOf(pos) !== Slot.Reading) continue
          const data: GapData = { from: seq, to: seq, count: 1, reason: 'corrupt' }
          entries.push({ kind: 'gap', pos, seq, epoch: state.epochOf(seq), time: state.clock(), data })
          if (pos > state.readHigh) state.countDrop({ reason: 'corrupt', from: seq, to: seq, count: 1 })
        }
      }
      if (entries.length > 0) state.readHigh = Math.max(state.readHigh, entries[entries.length - 1].pos)
      return entries
    })
  }
}
