/**
 * The space keeper's decisions (buffer/space.ts), pure: a snapshot of the buffer's usage and
 * bounds in, what the log must do out. The log carrying them out against a real LevelDB is in
 * bounds.test.ts, overflow.test.ts and buffer-model.test.ts; here are the edges at the bounds.
 */
import t from 'tap'
import { DROP_IDLE_MS, type RoomSnapshot, type UpkeepSnapshot, decideRoom, decideUpkeep } from '../buffer/space.js'
import { dropAllowance } from '../buffer/bounds.js'

const MiB = 1024 * 1024

/** A 64 MiB buffer with a commit of 16 KiB that does not fit by 1 KiB, nothing tried yet. */
function snapshot (over: Partial<RoomSnapshot> = {}): RoomSnapshot {
  return {
    needed: 16 * 1024,
    room: { bytes: 15 * 1024, shortage: 'full' },
    overflow: 'block',
    allowance: dropAllowance(64 * MiB),
    credit: 0,
    lingeringBytes: 0,
    acknowledgedUncompacted: false,
    tried: { collect: false, earlierDrops: true, dropOldest: false },
    ...over
  }
}

t.test('a commit that fits exactly is written; one byte short is not', async (t) => {
  for (const overflow of ['block', 'drop-oldest', 'drop-newest'] as const) {
    t.same(decideRoom(snapshot({ overflow, room: { bytes: 16 * 1024, shortage: 'full' } })), { action: 'write' }, `${overflow}: room == needed`)
    t.not(decideRoom(snapshot({ overflow, room: { bytes: 16 * 1024 - 1, shortage: 'full' } })).action, 'write', `${overflow}: room == needed - 1`)
  }
  t.same(decideRoom(snapshot({ room: { bytes: Number.POSITIVE_INFINITY, shortage: 'full' } })), { action: 'write' }, 'an unbounded buffer')
  t.same(decideRoom(snapshot({ needed: 0, room: { bytes: 0, shortage: 'full' } })), { action: 'write' }, 'an empty commit at a full buffer')
})

t.test('space that costs no reading comes back before any policy drops one', async (t) => {
  for (const overflow of ['block', 'drop-oldest', 'drop-newest'] as const) {
    t.same(decideRoom(snapshot({ overflow, acknowledgedUncompacted: true, lingeringBytes: 4096 })), { action: 'compact-acknowledged' },
      `${overflow}: acknowledged entries are compacted first`)
    t.same(decideRoom(snapshot({ overflow, lingeringBytes: 4096 })), { action: 'collect-obsolete' }, `${overflow}: then obsolete tables`)
  }
  // Obsolete tables are collected once per commit: if that did not make room, the policy decides.
  t.same(decideRoom(snapshot({ lingeringBytes: 4096, tried: { collect: true, earlierDrops: true, dropOldest: false } })),
    { action: 'hold', shortage: 'full' })
})

t.test('block holds the commit back, naming the nearer bound', async (t) => {
  t.same(decideRoom(snapshot()), { action: 'hold', shortage: 'full' })
  t.same(decideRoom(snapshot({ room: { bytes: -5000, shortage: 'disk-low' } })), { action: 'hold', shortage: 'disk-low' })
})

t.test('drop-newest keeps what fits, even when nothing does', async (t) => {
  t.same(decideRoom(snapshot({ overflow: 'drop-newest' })), { action: 'keep-prefix', room: 15 * 1024 })
  t.same(decideRoom(snapshot({ overflow: 'drop-newest', room: { bytes: -100, shortage: 'disk-low' } })), { action: 'keep-prefix', room: -100 },
    'over the bound: the whole commit becomes a gap')
})

t.test('drop-oldest: earlier drops first, then exactly the deficit, then reclaim at the allowance', async (t) => {
  const allowance = dropAllowance(64 * MiB)
  const oldest = (over: Partial<RoomSnapshot>): RoomSnapshot => snapshot({ overflow: 'drop-oldest', ...over })
  t.same(decideRoom(oldest({ tried: { collect: false, earlierDrops: false, dropOldest: false } })), { action: 'reclaim-earlier-drops' },
    'the first drop after an open compacts what an earlier run dropped')
  t.same(decideRoom(oldest({})), { action: 'drop-oldest', bytes: 1024 }, 'the deficit, not one byte more')
  t.same(decideRoom(oldest({ room: { bytes: -2048, shortage: 'full' } })), { action: 'drop-oldest', bytes: 16 * 1024 + 2048 },
    'over the bound: the deficit covers the overshoot too')
  // The credit for dropped, uncompacted readings: up to the allowance it is spent, beyond it compacted.
  t.same(decideRoom(oldest({ credit: allowance - 1024 })), { action: 'drop-oldest', bytes: 1024 }, 'credit + deficit == allowance: drop')
  t.same(decideRoom(oldest({ credit: allowance - 1023 })), { action: 'reclaim-dropped' }, 'credit + deficit > allowance: compact them away')
  t.same(decideRoom(oldest({ credit: 0, needed: allowance * 2, room: { bytes: 0, shortage: 'full' } })), { action: 'drop-oldest', bytes: allowance * 2 },
    'no credit: a deficit beyond the allowance still drops (there is nothing to compact)')
  t.same(decideRoom(oldest({ tried: { collect: false, earlierDrops: true, dropOldest: true } })), { action: 'hold', shortage: 'full' },
    'nothing left to drop (all read or in flight): hold like block')
  t.same(decideRoom(oldest({ room: { bytes: 0, shortage: 'disk-low' }, tried: { collect: false, earlierDrops: true, dropOldest: true } })),
    { action: 'hold', shortage: 'disk-low' })
})

t.test('the maintenance round compacts acknowledged garbage when it is worth it or has waited', async (t) => {
  const base: UpkeepSnapshot = {
    bounded: true,
    maxBytes: 64 * MiB,
    lingeringBytes: 0,
    unreclaimedDrops: false,
    sinceDropMs: 0,
    deadBytes: 0,
    sinceCompactionMs: 0,
    roundMs: 1000
  }
  const none = { collectObsolete: false, reclaimDropped: false, compactAcknowledged: false }
  t.same(decideUpkeep(base), none, 'nothing to give back')
  t.same(decideUpkeep({ ...base, deadBytes: 16 * MiB }), { ...none, compactAcknowledged: true }, 'a quarter of the bound is worth it')
  t.same(decideUpkeep({ ...base, deadBytes: 16 * MiB - 1 }), none, 'just under a quarter waits')
  t.same(decideUpkeep({ ...base, maxBytes: 1024 * MiB, deadBytes: 64 * MiB }), { ...none, compactAcknowledged: true }, 'at most 64 MiB waits')
  t.same(decideUpkeep({ ...base, deadBytes: 1, sinceCompactionMs: 30_000 }), { ...none, compactAcknowledged: true }, 'thirty rounds is long enough')
  t.same(decideUpkeep({ ...base, deadBytes: 1, sinceCompactionMs: 29_999 }), none)
  t.same(decideUpkeep({ ...base, deadBytes: 0, sinceCompactionMs: 60_000 }), none, 'no garbage, no compaction')
  t.same(decideUpkeep({ ...base, bounded: false, maxBytes: Number.POSITIVE_INFINITY, deadBytes: 64 * MiB, lingeringBytes: 1 }), none,
    'an unbounded buffer leaves it to LevelDB')
  t.same(decideUpkeep({ ...base, lingeringBytes: 1 }), { ...none, collectObsolete: true })
  t.same(decideUpkeep({ ...base, unreclaimedDrops: true, sinceDropMs: DROP_IDLE_MS }), { ...none, reclaimDropped: true },
    'drops are compacted away once drop-oldest has paused')
  t.same(decideUpkeep({ ...base, unreclaimedDrops: true, sinceDropMs: DROP_IDLE_MS - 1 }), none, 'not while it keeps dropping')
})
