import { decodeMeta, encodeMeta } from './codec.js'

/** Why a reading was set aside instead of forwarded. */
export type DeadLetterReason =
  /** the upstream refused it (MQTT 5 PUBACK reason >= 0x80) every time it was sent */
  | 'rejected'
  /** the upstream dropped the connection every time it was sent (a "poison pill", docs/guarantees.md §8) */
  | 'disconnected'
  /** larger than the upstream's Maximum Packet Size: it could never be sent */
  | 'too-large'

/** A reading set aside, kept for inspection (`sluice status`). */
export interface DeadLetter {
  seq: number
  epoch: string
  /** ingest time, milliseconds since 1970 */
  time: number
  topic: string
  payload: Uint8Array
  /** when it was set aside, milliseconds since 1970 */
  at: number
  reason: DeadLetterReason
  /** the upstream's reason code, when it gave one (e.g. 0x87 Not authorized) */
  reasonCode: number | null
  /** how many times it was sent */
  attempts: number
  /** the readings set aside together with it (one upstream message); a gap event names this range */
  from: number
  to: number
}

/** A run of readings set aside together whose gap event the upstream has not acknowledged yet. */
export interface PendingRange {
  from: number
  to: number
  epoch: string
  /** when it was set aside, milliseconds since 1970: the gap event's time */
  at: number
}

/** What the store needs of a LevelDB sublevel (DurableLog.sublevel). */
export interface DeadLetterDb {
  batch: (ops: Array<{ type: 'put', key: Buffer, value: Buffer } | { type: 'del', key: Buffer }>) => Promise<void>
  keys: (options: { gt?: Buffer, lte?: Buffer, reverse?: boolean, limit?: number }) => AsyncIterable<Buffer>
  iterator: (options: { gt?: Buffer, lt?: Buffer, reverse?: boolean, limit?: number }) => AsyncIterable<[Buffer, Buffer]>
}

export interface DeadLetterStoreOptions {
  /** most dead letters kept; the oldest already announced go first */
  maxKept: number
  /** every reading up to this seq is acknowledged upstream (its gap event too, if it had one) */
  ackedSeq: number
}

function key (seq: number): Buffer {
  const k = Buffer.allocUnsafe(8)
  // Seqs start at 1: "at or before seq 0" (a buffer with nothing acknowledged yet) is key 0.
  k.writeBigUInt64BE(BigInt(Math.max(0, seq)))
  return k
}

/**
 * Readings the forwarder set aside (docs/guarantees.md §8): kept for inspection with why and when, and, until
 * the upstream has acknowledged the gap event that announces them, the forwarder's note of where
 * to send that gap event instead of the readings. The readings stay in the log until then, so a
 * gap event lost to a disconnect is sent again from the same note.
 *
 * Keys are the seq (8 bytes big-endian) in a sublevel of the buffer's LevelDB; seqs are never
 * reused within a buffer, and a wiped buffer wipes its dead letters with it.
 */
export class DeadLetterStore {
  private readonly db: DeadLetterDb
  private readonly maxKept: number
  private pending: PendingRange[] = []
  private kept = 0
  private ackedSeq: number
  private writing: Promise<void> = Promise.resolve()

  private constructor (db: DeadLetterDb, options: DeadLetterStoreOptions) {
    this.db = db
    this.maxKept = options.maxKept
    this.ackedSeq = options.ackedSeq
  }

  /** Opens the store: counts what is kept and loads the ranges not yet announced (after `ackedSeq`). */
  static async open (db: DeadLetterDb, options: DeadLetterStoreOptions): Promise<DeadLetterStore> {
    const store = new DeadLetterStore(db, options)
    for await (const _ of db.keys({})) store.kept++
    for await (const [, value] of db.iterator({ gt: key(options.ackedSeq) })) {
      const letter = decodeMeta<DeadLetter>(value)
      const last = store.pending[store.pending.length - 1]
      if (last?.from === letter.from) continue
      store.pending.push({ from: letter.from, to: letter.to, epoch: letter.epoch, at: letter.at })
    }
    return store
  }

  /** How many dead letters are kept. */
  get size (): number { return this.kept }

  /** The first range not yet announced that ends at or after `seq` (it may start after it). */
  pendingFrom (seq: number): PendingRange | undefined {
    return this.pending.find((r) => r.to >= seq)
  }

  /** Sets readings aside (one upstream message's worth, consecutive seqs); durable when it resolves. */
  async add (letters: readonly DeadLetter[]): Promise<void> {
    if (letters.length === 0) return
    const first = letters[0]
    await this.serial(async () => {
      await this.db.batch(letters.map((l) => ({ type: 'put' as const, key: key(l.seq), value: encodeMeta(l) })))
      this.kept += letters.length
      this.pending.push({ from: first.from, to: first.to, epoch: first.epoch, at: first.at })
      this.pending.sort((a, b) => a.from - b.from)
      await this.trim()
    })
  }

  /** The upstream acknowledged everything up to `seq`: the gap events up to there are delivered. */
  release (seq: number): void {
    if (seq <= this.ackedSeq) return
    this.ackedSeq = seq
    this.pending = this.pending.filter((r) => r.to > seq)
  }

  /** The newest dead letters first, at most `limit`. */
  async list (limit = 100): Promise<DeadLetter[]> {
    const out: DeadLetter[] = []
    for await (const [, value] of this.db.iterator({ reverse: true, limit })) out.push(decodeMeta<DeadLetter>(value))
    return out
  }

  /** Waits for writes in progress (before the database closes). */
  async flush (): Promise<void> {
    await this.writing
  }

  /** Deletes the oldest dead letters past `maxKept`, never one whose gap event is still owed. */
  private async trim (): Promise<void> {
    const excess = this.kept - this.maxKept
    if (excess <= 0) return
    const ops: Array<{ type: 'del', key: Buffer }> = []
    for await (const k of this.db.keys({ lte: key(this.ackedSeq), limit: excess })) ops.push({ type: 'del', key: k })
    if (ops.length === 0) return
    await this.db.batch(ops)
    this.kept -= ops.length
  }

  /** Writes one after another, so counts and trims never interleave. */
  private async serial (task: () => Promise<void>): Promise<void> {
    const run = this.writing.then(task)
    this.writing = run.catch(() => {})
    await run
  }
}
