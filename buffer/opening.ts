/**
 * Opening the log: reading where it stands from its meta records (meta.ts), beginning a new epoch
 * when the last run may have lost writes, and recovering a LevelDB found damaged at open
 * (docs/guarantees.md §2, §8). Opening reads a handful of records and seeks to the last entry; it
 * never scans the backlog (only a repair does, to find what it lost).
 */
import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { uptime as osUptime } from 'node:os'
import { BufferError, isDamage } from './errors.js'
import { LOG_END, Slot, logKey, position, positionOf, readingSeqAtOrBefore, seqOf } from './keys.js'
import { type EpochEventData, type EpochReason, decodeEntry, encodeEpochEvent } from './codec.js'
import { BufferClock } from './clock.js'
import { ackOp, openedOps, readMeta, readPrevious } from './meta.js'
import { type RecoveryReport, discardBeforeRepair, recoveryDrops, repairDatabase, setAside } from './recover.js'
import { announceHoles } from './repair.js'
import { type LogState, describe } from './state.js'

/**
 * Opens LevelDB and sets `state` from what is on disk, recovering from damage. Leaves LevelDB
 * open and `state.report` saying what opening found.
 */
export async function openLog (state: LogState): Promise<void> {
  await mkdir(state.path, { recursive: true })
  try {
    await state.openLevel()
    // LevelDB replays its write-ahead log at open and skips records that fail their checksum,
    // saying so only in its info log: what it skipped were readings, so they are looked for.
    const dropped = await recoveryDrops(state.path)
    await loadMeta(state, { repaired: dropped !== null })
    if (dropped !== null) {
      const problem = `LevelDB found its write-ahead log damaged and skipped part of it: ${dropped}`
      const lostSeqs = await announceHoles(state, state.epochs[state.epochs.length - 1].from - 1)
      state.report.recovery = { problem, action: 'repaired', files: 0, bytes: 0, lostSeqs }
    }
  } catch (err) {
    await state.closeLevelQuietly()
    if (!isDamage(err)) throw asOpenError(err, state.path)
    // loadMeta (inside) replaces the report: take the result first, then attach it.
    const recovery = await recoverAtOpen(state, err)
    state.report.recovery = recovery
  }
}

/**
 * The buffer could not be opened or read at start because its files are damaged. LevelDB's
 * repairer is tried first; if it fails, or leaves no usable buffer (its meta records lost), the
 * directory is set aside whole and a fresh buffer starts. A repaired buffer continues under a
 * new epoch (its last seq may be lost), and the seqs the repair could not save are announced as
 * gaps with reason `corrupt`.
 */
async function recoverAtOpen (state: LogState, problem: unknown): Promise<RecoveryReport> {
  const report: RecoveryReport = { problem: describe(problem), action: 'repaired', files: 0, bytes: 0, lostSeqs: 0 }
  const repair = await repairDatabase(state.path)
  /** what the damaged buffer still says of itself, for the epoch event of a fresh one */
  let previous: { epoch: string | null, lastSeq: number | null } = { epoch: null, lastSeq: null }
  if (repair.ok) {
    try {
      await state.openLevel()
      previous = await readPrevious(state.db)
      await loadMeta(state, { repaired: true })
      report.lostSeqs = await announceHoles(state, state.epochs[state.epochs.length - 1].from - 1)
      await discardBeforeRepair(state.path)
      return report
    } catch (err) {
      if ((err as BufferError).code === 'SLUICE_BUFFER_LOCKED') throw err
      await state.closeLevelQuietly()
      report.problem += `; after a repair: ${describe(err)}`
    }
  } else {
    report.problem += `; the repair failed: ${repair.error ?? 'unknown error'}`
  }
  const aside = await setAside(state.path)
  Object.assign(report, { action: 'set-aside', setAsideTo: aside.to, files: aside.files, bytes: aside.bytes })
  state.epochs = []
  state.lastSeq = 0
  state.ackPos = 0
  await state.openLevel()
  await loadMeta(state)
  await announceSetAside(state, previous)
  return report
}

/**
 * A fresh buffer that replaces one set aside: its first entry is an epoch event (reason
 * `set-aside`) naming the old epoch and last seq where they could still be read, so a receiver
 * can tell a lost backlog from a new gateway [README: What goes upstream].
 */
async function announceSetAside (state: LogState, previous: { epoch: string | null, lastSeq: number | null }): Promise<void> {
  const data: EpochEventData = { epoch: state.epoch, previous: previous.epoch, lastDurableSeq: previous.lastSeq, reason: 'set-aside' }
  const pos = position(state.lastSeq + 1, Slot.Epoch)
  await state.db.put(logKey(pos), encodeEpochEvent(state.clock(), data), { sync: true })
  state.lastCommittedPos = Math.max(state.lastCommittedPos, pos)
  state.report.newEpoch = data
}

/** Sets where the log stands from its meta records and its last entry, and marks it running. */
async function loadMeta (state: LogState, opts: { repaired?: boolean } = {}): Promise<void> {
  const meta = await readMeta(state.db)
  const bootId = state.options.bootId
  let epochReason: EpochReason | null = null
  if (meta.epochs === undefined) {
    if (opts.repaired === true) {
      throw new BufferError('SLUICE_BUFFER_CORRUPT', 'the repaired buffer has lost its epoch record')
    }
    state.epochs = [{ epoch: newEpoch(), from: 1 }]
    state.report = { created: true, uncleanStop: false }
  } else {
    state.epochs = meta.epochs
    state.lastSeq = meta.last ?? 0
    state.ackPos = meta.ack ?? 0
    const previous = meta.state
    const uncleanStop = previous?.running === true
    state.report = { created: false, uncleanStop }
    // (docs/guarantees.md §2) A process crash loses nothing LevelDB was given, so the epoch stays.
    // A reboot after an unclean stop may have lost unsynced writes that were already forwarded:
    // their seqs could be handed out again for other readings, so new readings start a new epoch.
    // A repair may have lost the last records too.
    if (opts.repaired === true) epochReason = 'repaired'
    else if (uncleanStop && previous.bootId !== bootId) epochReason = 'power-loss'
  }
  state.pruneEpochs()
  const last = await lastEntry(state)
  state.lastCommittedPos = last.pos
  if (epochReason === 'repaired') {
    // A repair can leave entries past the recorded last seq (the record of it was lost): the
    // new epoch begins after every seq still on disk.
    state.lastSeq = Math.max(state.lastSeq, readingSeqAtOrBefore(state.lastCommittedPos))
  }
  state.lastCommittedSeq = state.lastSeq
  if (epochReason !== null) await beginEpoch(state, epochReason)
  state.readHigh = state.ackPos
  state.ttlClock = new BufferClock(meta.clock, {
    bootId,
    uptime: state.options.uptime ?? osUptime,
    monotonic: state.options.monotonic ?? (() => performance.now())
  }, last.storedAt)
  await state.db.batch(openedOps({ bootId, epochs: state.epochs, clock: state.ttlClock.save() }), { sync: true })
}

/** Begins a new epoch after the last seq, announced by an epoch event where its first reading goes. */
async function beginEpoch (state: LogState, reason: EpochReason): Promise<void> {
  const data: EpochEventData = { epoch: newEpoch(), previous: state.epoch, lastDurableSeq: state.lastSeq, reason }
  const from = state.lastSeq + 1
  // An epoch that never got a durable reading (power lost again soon after a boot) starts at the
  // same seq as this one: this one takes its place, and its announcement the same position.
  const spans = state.epochs.at(-1)?.from === from ? state.epochs.slice(0, -1) : state.epochs
  state.epochs = [...spans, { epoch: data.epoch, from }]
  state.report.newEpoch = data
  const pos = position(from, Slot.Epoch)
  await state.db.put(logKey(pos), encodeEpochEvent(state.clock(), data))
  if (state.ackPos >= pos) {
    // That position's previous announcement was already acknowledged upstream: move the cursor
    // back over it so this one is sent too (everything before it stays acknowledged).
    state.ackPos = pos - 1
    await state.db.batch([ackOp(state.ackPos)])
  }
  state.lastCommittedPos = Math.max(state.lastCommittedPos, pos)
}

/**
 * The position of the last entry on disk (a seek, not a scan), or the ack cursor when none is,
 * and when it is a reading, its buffer time: the TTL clock never starts behind it.
 */
async function lastEntry (state: LogState): Promise<{ pos: number, storedAt: number }> {
  for await (const [key, value] of state.db.iterator({ gt: logKey(state.ackPos), lt: LOG_END, reverse: true, limit: 1 })) {
    const pos = positionOf(key)
    let storedAt = 0
    try {
      const entry = decodeEntry(pos, seqOf(pos), '', value)
      if (entry.kind === 'reading') storedAt = entry.storedAt
    } catch {}
    return { pos, storedAt }
  }
  return { pos: state.ackPos, storedAt: 0 }
}

function asOpenError (err: unknown, path: string): Error {
  if (err instanceof BufferError) return err
  return new BufferError('SLUICE_BUFFER_OPEN_FAILED', `cannot open the buffer at ${path}: ${describe(err)}`, { cause: err })
}

function newEpoch (): string {
  return randomBytes(16).toString('hex')
}
