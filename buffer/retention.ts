import { Slot, logKey, position, positionOf, seqOf, slotOf } from './keys.js'
import { type GapData, type GapReason, type LogEntry, decodeEntry, encodeGap } from './codec.js'
import { PER_OP_OVERHEAD } from './bounds.js'
import type { WriteOp } from './pending.js'

type Reading = Extract<LogEntry, { kind: 'reading' }>

/** Says whether the next reading goes too, given the bytes the run already frees. */
export type DropPredicate = (reading: Reading, bytesSoFar: number) => boolean

/** One atomic drop: the readings to delete and the gap entry that announces them. */
export interface DropPlan {
  gap: GapData
  /** where the gap entry goes: the position of its first seq */
  gapPos: number
  /** readings dropped by this plan (gaps it absorbs are not counted again) */
  readings: number
  /** bytes the dropped readings held (keys and values) */
  bytes: number
  ops: WriteOp[]
  /** the key range the plan touches, for compaction */
  firstKey: Buffer
  lastKey: Buffer
  /** positions of gap entries the plan absorbed (rewrote or deleted) */
  absorbed: number[]
}

/**
 * Plans dropping the oldest droppable readings (drop-oldest, TTL), scanning entries in position
 * order from wherever the forwarder has not read yet.
 *
 * A run is a stretch of consecutive entries: readings the predicate lets go, and gap entries of
 * the same reason, which the run absorbs, so that a buffer that stays full, or a TTL that keeps
 * expiring, extends one gap instead of piling up gap entries. A run ends at the first reading the
 * predicate keeps, at an epoch entry (a gap never spans epochs: its id names one), at a gap of
 * another reason, or at an entry that cannot be decoded. Entries of those kinds before the first
 * droppable reading are stepped over. Because every entry between the run's first and last is
 * dropped or absorbed, `count` is exactly `to - from + 1` (docs/guarantees.md §4: delivered + announced = assigned).
 */
export async function planDrop (
  entries: AsyncIterable<[Buffer, Buffer]>,
  reason: GapReason,
  keep: DropPredicate,
  now: number
): Promise<DropPlan | null> {
  let gap: GapData | null = null
  let gapPos = 0
  let readings = 0
  let bytes = 0
  let dels: Buffer[] = []
  let absorbed: number[] = []
  let lastKey: Buffer | null = null
  const reset = (): void => { gap = null; readings = 0; bytes = 0; dels = []; absorbed = []; lastKey = null }

  for await (const [key, value] of entries) {
    const pos = positionOf(key)
    const seq = seqOf(pos)
    let entry: LogEntry
    try {
      entry = decodeEntry(pos, seq, '', value)
    } catch {
      if (readings > 0) break
      reset()
      continue
    }
    if (entry.kind === 'epoch' || (entry.kind === 'gap' && entry.data.reason !== reason)) {
      if (readings > 0) break
      reset()
      continue
    }
    if (entry.kind === 'gap') {
      const g = entry.data
      if (gap === null) {
        gap = { ...g }
        gapPos = pos
      } else {
        gap.to = g.to
        gap.count += g.count
        dels.push(key)
      }
      absorbed.push(pos)
      lastKey = key
      continue
    }
    if (!keep(entry, bytes)) break
    if (gap === null) {
      gap = { from: seq, to: seq, count: 1, reason }
      gapPos = position(seq, Slot.Gap)
    } else {
      gap.to = seq
      gap.count++
    }
    readings++
    bytes += key.length + value.length + PER_OP_OVERHEAD
    dels.push(key)
    lastKey = key
  }
  if (gap === null || readings === 0 || lastKey === null) return null
  const done: GapData = gap
  const gapKey = logKey(gapPos)
  return {
    gap: done,
    gapPos,
    readings,
    bytes,
    ops: [
      ...dels.map((key) => ({ type: 'del' as const, key })),
      { type: 'put' as const, key: gapKey, value: encodeGap(now, done) }
    ],
    firstKey: gapKey,
    lastKey,
    absorbed
  }
}

/** A run of seqs that no entry covers. */
export interface Hole { from: number, to: number }

/**
 * The seqs after the ack cursor that no reading or gap covers: what a repair lost. Readings
 * cover their seq, gaps their range; epoch entries cover none. `firstSeq` is the first seq the
 * log must still hold, when the ack cursor tells it (it does not when the cursor is on a gap or
 * an epoch event).
 */
export async function findHoles (
  entries: AsyncIterable<[Buffer, Buffer]>,
  firstSeq: number | null,
  lastSeq: number
): Promise<{ holes: Hole[], highest: number }> {
  const holes: Hole[] = []
  let expected = firstSeq
  let highest = 0
  const cover = (from: number, to: number): void => {
    if (expected !== null && from > expected) holes.push({ from: expected, to: from - 1 })
    if (expected === null || to + 1 > expected) expected = to + 1
    highest = Math.max(highest, to)
  }
  for await (const [key, value] of entries) {
    const pos = positionOf(key)
    const seq = seqOf(pos)
    const slot = slotOf(pos)
    if (slot === Slot.Reading) {
      // An undecodable reading still covers its seq: reading it yields a `corrupt` gap.
      cover(seq, seq)
    } else if (slot === Slot.Gap) {
      try {
        const entry = decodeEntry(pos, seq, '', value)
        if (entry.kind === 'gap') cover(entry.data.from, entry.data.to)
      } catch {
        cover(seq, seq)
      }
    }
  }
  const end = Math.max(lastSeq, highest)
  if (expected !== null && end >= expected) holes.push({ from: expected, to: end })
  return { holes, highest }
}
