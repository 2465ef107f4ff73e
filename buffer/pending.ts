import { Slot, logKey, position } from './keys.js'
import { type GapData, encodeGap } from './codec.js'
import { lastSeqOp } from './meta.js'
import { PER_OP_OVERHEAD } from './bounds.js'

type Item =
  | { kind: 'reading', seq: number, value: Buffer }
  | { kind: 'gap', gap: GapData }

export interface Deferred { promise: Promise<void>, resolve: () => void, reject: (err: Error) => void }

export function deferred (): Deferred {
  let resolve!: () => void
  let reject!: (err: Error) => void
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  // A commit nobody awaits (QoS 0 readings) must not become an unhandled rejection.
  promise.catch(() => {})
  return { promise, resolve, reject }
}

export type WriteOp = { type: 'put', key: Buffer, value: Buffer } | { type: 'del', key: Buffer }

/**
 * One group commit in the making: the entries of a contiguous run of seqs, in seq order.
 * Readings, and gaps for seqs dropped before they were written (a QoS 0 reading meeting a full
 * buffer; the newest readings under drop-newest).
 */
export class PendingCommit {
  private items: Item[] = []
  readonly done = deferred()
  readings = 0
  /** bytes the commit hands LevelDB (keys, values, record overhead) */
  bytes = 0
  firstSeq = 0
  lastSeq = 0

  addReading (seq: number, value: Buffer): void {
    this.note(seq)
    this.items.push({ kind: 'reading', seq, value })
    this.readings++
    this.bytes += 9 + value.length + PER_OP_OVERHEAD
  }

  /** A dropped seq: extends the gap just before it when there is one. */
  addDropped (seq: number): void {
    this.note(seq)
    const last = this.items[this.items.length - 1]
    if (last?.kind === 'gap' && last.gap.to === seq - 1) {
      last.gap.to = seq
      last.gap.count++
      return
    }
    this.items.push({ kind: 'gap', gap: { from: seq, to: seq, count: 1, reason: 'overflow' } })
    this.bytes += GAP_BYTES
  }

  /** The gap this commit begins with, if it begins with one. */
  get leadingGap (): GapData | null {
    const first = this.items[0]
    return first?.kind === 'gap' ? first.gap : null
  }

  /**
   * drop-newest: keeps the longest prefix that fits in `room` bytes and turns everything after it
   * into one gap. Returns the readings dropped.
   */
  keepPrefix (room: number): { dropped: number, gap: GapData | null } {
    let used = 0
    let cut = 0
    for (; cut < this.items.length; cut++) {
      const item = this.items[cut]
      const size = item.kind === 'reading' ? 9 + item.value.length + PER_OP_OVERHEAD : GAP_BYTES
      if (used + size + GAP_BYTES > room) break
      used += size
    }
    if (cut === this.items.length) return { dropped: 0, gap: null }
    const rest = this.items.splice(cut)
    const first = rest[0]
    const gap: GapData = { from: first.kind === 'reading' ? first.seq : first.gap.from, to: this.lastSeq, count: 0, reason: 'overflow' }
    let dropped = 0
    for (const item of rest) {
      if (item.kind === 'reading') {
        dropped++
        gap.count++
      } else {
        gap.count += item.gap.count
      }
    }
    this.items.push({ kind: 'gap', gap })
    this.readings -= dropped
    this.bytes = used + GAP_BYTES
    return { dropped, gap }
  }

  /**
   * The LevelDB operations of this commit. `merge`, when given, is a gap entry already written
   * at the end of the log that this commit's leading gap continues: it is rewritten in place
   * with the longer range instead of writing a second one.
   */
  ops (now: number, merge: { pos: number, gap: GapData } | null): WriteOp[] {
    const ops: WriteOp[] = []
    for (const [i, item] of this.items.entries()) {
      if (item.kind === 'reading') {
        ops.push({ type: 'put', key: logKey(position(item.seq, Slot.Reading)), value: item.value })
      } else if (i === 0 && merge !== null) {
        const gap = { ...merge.gap, to: item.gap.to, count: merge.gap.count + item.gap.count }
        ops.push({ type: 'put', key: logKey(merge.pos), value: encodeGap(now, gap) })
      } else {
        ops.push({ type: 'put', key: logKey(position(item.gap.from, Slot.Gap)), value: encodeGap(now, item.gap) })
      }
    }
    ops.push(lastSeqOp(this.lastSeq))
    return ops
  }

  /** The position and data of the last entry this commit writes (after a merge, the merged gap). */
  lastEntry (merge: { pos: number, gap: GapData } | null): { pos: number, gap: GapData | null } {
    const last = this.items[this.items.length - 1]
    if (last.kind === 'reading') return { pos: position(last.seq, Slot.Reading), gap: null }
    if (this.items.length === 1 && merge !== null) {
      return { pos: merge.pos, gap: { ...merge.gap, to: last.gap.to, count: merge.gap.count + last.gap.count } }
    }
    return { pos: position(last.gap.from, Slot.Gap), gap: { ...last.gap } }
  }

  private note (seq: number): void {
    if (this.firstSeq === 0) this.firstSeq = seq
    this.lastSeq = seq
  }
}

/** A gap entry's size on disk, about: key, a short CBOR array, record overhead. */
const GAP_BYTES = 9 + 40 + PER_OP_OVERHEAD
