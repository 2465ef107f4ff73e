/**
 * The log's meta records: the few values beside its entries that say where the log stands, read
 * once at open (opening never scans the backlog). This module alone knows their keys and their
 * encodings; the rest of the log asks it for the values it read and for the batch operations that
 * change them.
 *
 * Each is one CBOR value:
 *
 * - `epochs`: the epochs that unacknowledged entries belong to (EpochSpan[]); written at open,
 *   with every sync, clock save and clean close, and when one is pruned (epochsOp says why);
 * - `last`: the highest seq written; with every group commit;
 * - `ack`: the ack cursor, a position; with every ack write, and at open when a new epoch moves
 *   it back;
 * - `state`: the boot id and whether the log is open (RunState); at open and with every sync
 *   (open), at a clean close (not open);
 * - `clock`: the TTL clock (clock.ts); at open, every few seconds, at close.
 *
 * After a repair every record is written again as the running log knows it (restoreOps).
 *
 * Keys are `m` then the record's name; log entries start with `l` (keys.ts), so the two never
 * interleave in LevelDB's order.
 */
import type { ClassicLevel } from 'classic-level'
import { decodeMeta, encodeMeta } from './codec.js'
import type { StoredClock } from './clock.js'
import type { WriteOp } from './pending.js'

const META_PREFIX = 0x6d // 'm'

type MetaName = 'epochs' | 'last' | 'ack' | 'state' | 'clock'

function metaKey (name: MetaName): Buffer {
  return Buffer.concat([Buffer.from([META_PREFIX]), Buffer.from(name, 'latin1')])
}

function put (name: MetaName, value: unknown): WriteOp {
  return { type: 'put', key: metaKey(name), value: encodeMeta(value) }
}

/** One epoch of the buffer and the first seq written under it. */
export interface EpochSpan { epoch: string, from: number }

/** Whether the log was open (a stop without close is an unclean stop) and on which boot. */
export interface RunState { bootId: string, running: boolean }

/** The meta records as stored; each is missing when it was never written (a new buffer). */
export interface StoredMeta {
  epochs?: EpochSpan[]
  /** the highest seq written */
  last?: number
  /** the ack cursor */
  ack?: number
  state?: RunState
  clock?: StoredClock
}

type MetaDb = Pick<ClassicLevel<Buffer, Buffer>, 'get' | 'getMany'>

/**
 * Reads every meta record in one call. A record that is not valid CBOR throws
 * SLUICE_BUFFER_CORRUPT_RECORD, which opening treats as damage (recover.ts).
 */
export async function readMeta (db: MetaDb): Promise<StoredMeta> {
  const names: MetaName[] = ['epochs', 'last', 'ack', 'state', 'clock']
  const values = await db.getMany(names.map(metaKey))
  const meta: Record<string, unknown> = {}
  for (const [i, name] of names.entries()) {
    const value = values[i]
    if (value !== undefined) meta[name] = decodeMeta(value)
  }
  return meta as StoredMeta
}

/**
 * The epoch and last seq a damaged (repaired) buffer still holds, each null when unreadable: what
 * the epoch event of a fresh buffer that replaces it names.
 */
export async function readPrevious (db: MetaDb): Promise<{ epoch: string | null, lastSeq: number | null }> {
  const read = async <T>(name: 'epochs' | 'last'): Promise<T | null> => {
    try {
      const value = await db.get(metaKey(name))
      return value === undefined ? null : decodeMeta<T>(value)
    } catch {
      return null
    }
  }
  const epochs = await read<EpochSpan[]>('epochs')
  const lastSeq = await read<number>('last')
  const epoch = Array.isArray(epochs) && typeof epochs[epochs.length - 1]?.epoch === 'string' ? epochs[epochs.length - 1].epoch : null
  return { epoch, lastSeq: typeof lastSeq === 'number' ? lastSeq : null }
}

/**
 * The epoch record. It rides along with every meta write but a commit's and an ack's, as well as
 * being written when it changes: LevelDB keeps a key where it was last written, so a record written
 * once would sit in the oldest table, and a repair that loses that table would lose every epoch
 * with it.
 */
export function epochsOp (epochs: readonly EpochSpan[]): WriteOp {
  return put('epochs', epochs)
}

/** What a group commit writes with its entries: the highest seq it holds. */
export function lastSeqOp (lastSeq: number): WriteOp {
  return put('last', lastSeq)
}

/** The ack cursor: every entry at or before `ackPos` is acknowledged and removed. */
export function ackOp (ackPos: number): WriteOp {
  return put('ack', ackPos)
}

/** What the log writes (fsynced) once it has opened: it is running, on this boot. */
export function openedOps (m: { bootId: string, epochs: readonly EpochSpan[], clock: StoredClock }): WriteOp[] {
  return [epochsOp(m.epochs), runState(m.bootId, true), put('clock', m.clock)]
}

/** What a sync writes with `sync: true`: fsyncing it fsyncs every unsynced write before it. */
export function syncOps (m: { bootId: string, epochs: readonly EpochSpan[] }): WriteOp[] {
  return [runState(m.bootId, true), epochsOp(m.epochs)]
}

/** The periodic save of the TTL clock, so that a crash loses little buffer time. */
export function clockSaveOps (m: { epochs: readonly EpochSpan[], clock: StoredClock }): WriteOp[] {
  return [put('clock', m.clock), epochsOp(m.epochs)]
}

/** A clean close: the next open sees no unclean stop (so no new epoch after a reboot). */
export function closedOps (m: { bootId: string, epochs: readonly EpochSpan[], clock: StoredClock }): WriteOp[] {
  return [put('clock', m.clock), epochsOp(m.epochs), runState(m.bootId, false)]
}

/** Every record as the running log knows it, to rewrite after a repair may have lost them. */
export function restoreOps (m: {
  bootId: string
  epochs: readonly EpochSpan[]
  lastSeq: number
  ackPos: number
  clock: StoredClock
}): WriteOp[] {
  return [epochsOp(m.epochs), lastSeqOp(m.lastSeq), ackOp(m.ackPos), runState(m.bootId, true), put('clock', m.clock)]
}

function runState (bootId: string, running: boolean): WriteOp {
  return put('state', { bootId, running } satisfies RunState)
}
