/**
 * Dropping readings the forwarder has not read: the oldest ones for drop-oldest (room.ts) and the
 * expired ones for the TTL. retention.ts plans which; this writes the plan.
 */
import { LOG_END, logKey } from './keys.js'
import type { GapReason } from './codec.js'
import { PER_OP_OVERHEAD } from './bounds.js'
import { type DropPredicate, planDrop } from './retention.js'
import type { LogState } from './state.js'

/** entries one drop decision looks at, at most: it holds their keys until its batch is written */
const DROP_SCAN_LIMIT = 10_000

/** What one drop deleted: its key range (for the compaction that gives the space back) and bytes. */
export interface DropResult { firstKey: Buffer, lastKey: Buffer, bytes: number }

/**
 * Drops one run of readings past what the forwarder has read, writing their deletion and the gap
 * entry that announces them in one batch (docs/guarantees.md §4: delivered + announced = assigned
 * holds across crashes). Runs exclusive of reads. Null when there is nothing to drop.
 */
export async function dropRun (state: LogState, reason: GapReason, keep: DropPredicate): Promise<DropResult | null> {
  return await state.gate.exclusive(async () => {
    const start = Math.max(state.ackPos, state.readHigh)
    const end = state.readFence === null ? LOG_END : logKey(state.readFence)
    const plan = await planDrop(state.db.iterator({ gt: logKey(start), lt: end, limit: DROP_SCAN_LIMIT }), reason, keep, state.clock())
    if (plan === null) return null
    await state.db.batch(plan.ops)
    state.usage.noteWritten(plan.ops.length * (9 + PER_OP_OVERHEAD) + 64)
    if (state.tailGap !== null && plan.absorbed.includes(state.tailGap.pos)) state.tailGap = null
    state.lastCommittedPos = Math.max(state.lastCommittedPos, plan.gapPos)
    state.countDrop({ reason, from: plan.gap.from, to: plan.gap.to, count: plan.readings })
    return { firstKey: plan.firstKey, lastKey: plan.lastKey, bytes: plan.bytes }
  })
}

/**
 * Drops the readings that have been in the buffer longer than the TTL (in buffer time, clock.ts),
 * a run at a time. Returns how many, and the key range they held, for the compaction that gives
 * their space back (null when none).
 */
export async function dropExpired (state: LogState): Promise<{ dropped: number, range: { first: Buffer, last: Buffer } | null }> {
  const cutoff = state.ttlClock.now() - state.bounds.ttlMs
  let dropped = 0
  let first: Buffer | null = null
  let last: Buffer | null = null
  for (;;) {
    const before = state.drops.ttl
    const plan = await dropRun(state, 'ttl', (reading) => reading.storedAt <= cutoff)
    if (plan === null) break
    dropped += state.drops.ttl - before
    first ??= plan.firstKey
    last = plan.lastKey
  }
  return { dropped, range: first !== null && last !== null ? { first, last } : null }
}
