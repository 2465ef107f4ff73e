/**
 * A damaged LevelDB found while the log runs (a table that cannot be read), and the gaps a repair
 * leaves, at open or while running. The file-level work (LevelDB's repairer, setting a directory
 * aside) is in recover.ts.
 */
import { Slot, logKey, position, readingSeqAtOrBefore, seqOf, slotOf } from './keys.js'
import { type GapData, encodeGap } from './codec.js'
import { type RecoveryReport, discardBeforeRepair, repairDatabase, setAside } from './recover.js'
import { findHoles } from './retention.js'
import { restoreOps } from './meta.js'
import { type LogState, OK, describe } from './state.js'

/**
 * After a repair: finds the seqs past the ack cursor that no entry covers any more and writes a
 * `corrupt` gap for each run of them, so the receiver is told (docs/guarantees.md §4). Scans the
 * backlog once. Returns how many seqs were lost.
 */
export async function announceHoles (state: LogState, upToSeq: number): Promise<number> {
  const { db, ackPos } = state
  const firstSeq = slotOf(ackPos) === Slot.Reading || ackPos === 0 ? seqOf(ackPos) + 1 : null
  const { holes } = await findHoles(
    db.iterator({ gt: logKey(ackPos), lt: logKey(position(upToSeq + 1, Slot.Epoch)) }),
    firstSeq,
    upToSeq
  )
  if (holes.length === 0) return 0
  const now = state.clock()
  let lost = 0
  const ops = holes.map((hole) => {
    const gap: GapData = { from: hole.from, to: hole.to, count: hole.to - hole.from + 1, reason: 'corrupt' }
    lost += gap.count
    return { type: 'put' as const, key: logKey(position(hole.from, Slot.Gap)), value: encodeGap(now, gap) }
  })
  await db.batch(ops, { sync: true })
  state.lastCommittedPos = Math.max(state.lastCommittedPos, ...holes.map((h) => position(h.from, Slot.Gap)))
  state.drops.corrupt += lost
  return lost
}

/**
 * Repairs LevelDB while the log runs, one repair at a time: reads that meet damage all wait for
 * the same one.
 */
export class Repairs {
  private readonly state: LogState
  private repairing: Promise<void> | null = null

  constructor (state: LogState) {
    this.state = state
  }

  /** Repairs after `problem`, or waits for the repair already under way. */
  async repair (problem: unknown): Promise<void> {
    this.repairing ??= this.repairRunning(problem).finally(() => { this.repairing = null })
    await this.repairing
  }

  /**
   * Repairs the database in place, announcing what the repair lost; if the repair fails, sets the
   * directory aside and goes on with a fresh database under the same epoch and seqs, announcing
   * the whole unacknowledged backlog as lost. Either way the log keeps running
   * (docs/guarantees.md §8: no crash loop).
   */
  private async repairRunning (problem: unknown): Promise<void> {
    const state = this.state
    const report: RecoveryReport = { problem: describe(problem), action: 'repaired', files: 0, bytes: 0, lostSeqs: 0 }
    state.setHealth({ accepting: false, reason: 'repairing', code: 'SLUICE_BUFFER_CORRUPT', detail: `the buffer is damaged and being repaired: ${report.problem}` })
    await state.gate.exclusive(async () => {
      await state.closeLevelQuietly()
      const repair = await repairDatabase(state.path)
      let repaired = repair.ok
      if (repaired) {
        try {
          await state.db.open()
          report.lostSeqs = await announceHoles(state, state.lastCommittedSeq)
          await state.db.batch(this.restoreOps(), { sync: true })
          await discardBeforeRepair(state.path)
        } catch (err) {
          repaired = false
          report.problem += `; after a repair: ${describe(err)}`
          await state.closeLevelQuietly()
        }
      }
      if (!repaired) {
        const aside = await setAside(state.path)
        Object.assign(report, { action: 'set-aside', setAsideTo: aside.to, files: aside.files, bytes: aside.bytes })
        await state.db.open()
        // The fresh database carries the log on: same epochs and seqs, the lost backlog announced.
        const first = readingSeqAtOrBefore(state.ackPos) + 1
        const ops = this.restoreOps()
        if (state.lastCommittedSeq >= first) {
          const gap: GapData = { from: first, to: state.lastCommittedSeq, count: state.lastCommittedSeq - first + 1, reason: 'corrupt' }
          ops.push({ type: 'put', key: logKey(position(first, Slot.Gap)), value: encodeGap(state.clock(), gap) })
          report.lostSeqs = gap.count
          state.drops.corrupt += gap.count
        }
        await state.db.batch(ops, { sync: true })
        state.readHigh = state.ackPos
        state.tailGap = null
      }
      for (const sub of state.sublevels) await sub.open().catch(() => {})
    })
    state.setHealth(OK)
    state.events.emit('recovered', report)
    state.events.emit('committed', state.lastCommittedPos)
  }

  /** The meta records as the running log knows them: a repair may have lost them. */
  private restoreOps (): ReturnType<typeof restoreOps> {
    const { options, epochs, lastCommittedSeq, ackPos, ttlClock } = this.state
    return restoreOps({ bootId: options.bootId, epochs, lastSeq: lastCommittedSeq, ackPos, clock: ttlClock.save() })
  }
}
