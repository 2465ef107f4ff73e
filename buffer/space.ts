/**
 * Space keeping, decided (docs/guarantees.md §5-§6): what the log does so that the buffer stays
 * inside `buffer.maxBytes` and leaves `buffer.minFreeDisk` free. These are pure functions: they
 * take a read-only snapshot of the buffer's usage and bounds and return a decision, which the
 * log carries out (room.ts) and then asks again. They touch no database and hold no state.
 */
import type { BufferBounds, Shortage } from './bounds.js'

/** What the space keeper sees before a group commit is written. */
export interface RoomSnapshot {
  /** bytes the commit hands LevelDB (PendingCommit.bytes) */
  needed: number
  /** bytes that can still be written, and which bound is the nearer (DiskUsage.room); negative when over */
  room: { bytes: number, shortage: Shortage }
  overflow: BufferBounds['overflow']
  /** bytes drop-oldest may leave dropped and not compacted away (bounds.ts, dropAllowance) */
  allowance: number
  /** bytes dropped and not compacted away yet, counted as free in `room` (DiskUsage.credit) */
  credit: number
  /** bytes of obsolete tables LevelDB has not deleted yet */
  lingeringBytes: number
  /** the ack cursor moved since acknowledged entries were last compacted away */
  acknowledgedUncompacted: boolean
  /** what was tried already and must not be tried again */
  tried: {
    /** obsolete tables were collected while this commit waited for room */
    collect: boolean
    /** readings an earlier run dropped were compacted away (once after each open) */
    earlierDrops: boolean
    /** drop-oldest found nothing to drop since the room was last measured */
    dropOldest: boolean
  }
}

/**
 * What to do next before the commit is written. Each but `write`, `keep-prefix` and `hold` is
 * followed by another decision.
 *
 * - `write`: the commit fits.
 * - `compact-acknowledged`: compact the entries the upstream acknowledged (drops nothing).
 * - `collect-obsolete`: have LevelDB delete tables an iterator kept past their compaction.
 * - `keep-prefix` (drop-newest): write the part of the commit that fits in `room`, a gap for the rest.
 * - `reclaim-earlier-drops` (drop-oldest): compact what an earlier run dropped and did not compact.
 * - `reclaim-dropped` (drop-oldest): compact what this run dropped: the credit is used up.
 * - `drop-oldest`: drop the oldest unread readings that hold `bytes`, and not one more.
 * - `hold` (block, or nothing left to drop): the buffer is full or the disk low; wait for space.
 */
export type RoomDecision =
  | { action: 'write' }
  | { action: 'compact-acknowledged' }
  | { action: 'collect-obsolete' }
  | { action: 'keep-prefix', room: number }
  | { action: 'reclaim-earlier-drops' }
  | { action: 'reclaim-dropped' }
  | { action: 'drop-oldest', bytes: number }
  | { action: 'hold', shortage: Shortage }

/**
 * Decides how to make room for a commit. Giving back space that costs no reading comes first
 * (acknowledged entries, obsolete tables), then the overflow policy. Under drop-oldest, dropped
 * readings give their space back only when LevelDB compacts their range, and a compaction per
 * commit would wear the flash: they wait, counted as free, until they and the next drop would
 * exceed the allowance, and one compaction then takes them all.
 */
export function decideRoom (s: RoomSnapshot): RoomDecision {
  if (s.room.bytes >= s.needed) return { action: 'write' }
  if (s.acknowledgedUncompacted) return { action: 'compact-acknowledged' }
  if (!s.tried.collect && s.lingeringBytes > 0) return { action: 'collect-obsolete' }
  switch (s.overflow) {
    case 'drop-newest':
      return { action: 'keep-prefix', room: s.room.bytes }
    case 'drop-oldest': {
      if (!s.tried.earlierDrops) return { action: 'reclaim-earlier-drops' }
      if (s.tried.dropOldest) break
      const deficit = s.needed - s.room.bytes
      if (s.credit > 0 && s.credit + deficit > s.allowance) return { action: 'reclaim-dropped' }
      return { action: 'drop-oldest', bytes: deficit }
    }
    case 'block':
      break
  }
  return { action: 'hold', shortage: s.room.shortage }
}

/** What the maintenance round (once a second) sees, after it has measured the directory. */
export interface UpkeepSnapshot {
  /** `buffer.maxBytes` is set */
  bounded: boolean
  maxBytes: number
  /** bytes of obsolete tables LevelDB has not deleted yet */
  lingeringBytes: number
  /** drop-oldest dropped readings that no compaction has reclaimed yet */
  unreclaimedDrops: boolean
  /** milliseconds since drop-oldest last dropped */
  sinceDropMs: number
  /** bytes of readings acknowledged since acknowledged entries were last compacted, estimated */
  deadBytes: number
  /** milliseconds since acknowledged entries were last compacted away */
  sinceCompactionMs: number
  /** milliseconds between maintenance rounds */
  roundMs: number
}

/** What one maintenance round gives back; the round does each that is true, in this order. */
export interface UpkeepDecision {
  /** tables an iterator kept past their compaction: a compaction of an empty range deletes them */
  collectObsolete: boolean
  /** what drop-oldest dropped, once it has not dropped for DROP_IDLE_MS */
  reclaimDropped: boolean
  /** the acknowledged garbage, once it is worth a compaction or has waited long enough */
  compactAcknowledged: boolean
}

/** how long drop-oldest must not have dropped before the maintenance compacts what it dropped */
export const DROP_IDLE_MS = 5000

/**
 * Readings drop-oldest deleted are counted as free meanwhile, but a restart would not know that,
 * so they are compacted away once it has stopped dropping. Compaction rewrites tables (flash
 * wear), so acknowledged garbage waits until it is worth it (a quarter of the bound, or 64 MiB),
 * or 30 rounds (half a minute) have passed: garbage never sits for long, and a steady flow
 * compacts twice a minute. A buffer that fills compacts at once (decideRoom).
 */
export function decideUpkeep (s: UpkeepSnapshot): UpkeepDecision {
  const worth = s.deadBytes >= Math.min(s.maxBytes / 4, 64 * 1024 * 1024)
  const due = s.deadBytes > 0 && s.sinceCompactionMs >= 30 * s.roundMs
  return {
    collectObsolete: s.bounded && s.lingeringBytes > 0,
    reclaimDropped: s.unreclaimedDrops && s.sinceDropMs >= DROP_IDLE_MS,
    compactAcknowledged: s.bounded && (worth || due)
  }
}
