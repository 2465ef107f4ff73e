/**
 * The durable log's public shapes (and its bounds): what it is opened with, what
 * opening found, what an append returns, and the events it emits. The log itself is in log.ts.
 */
import type { EpochEventData, GapReason } from './codec.js'
import type { BufferErrorCode } from './errors.js'
import type { BufferBounds, Shortage } from './bounds.js'
import type { RecoveryReport } from './recover.js'

export interface DurableLogOptions {
  /** the LevelDB directory; created when missing */
  path: string
  /** `always`: every group commit is fsynced before it resolves; `interval`: fsync every `syncIntervalMs` */
  sync: 'always' | 'interval'
  /** milliseconds between fsyncs with `sync: 'interval'` */
  syncIntervalMs: number
  /**
   * Identifies the machine's current boot (the kernel's boot id). The log compares it with the one
   * stored at its last open: a different boot after an unclean stop means a power loss may have
   * taken unsynced writes, so the log begins a new epoch.
   */
  bootId: string
  /** milliseconds since 1970; injectable for tests */
  clock?: () => number
  /**
   * Called before each attempt to write a group commit, with the number of readings in it. A seam
   * for fault injection (a slow or failing disk); production code leaves it unset.
   */
  beforeCommit?: (readings: number) => Promise<void>
  /**
   * Called before each write of the ack cursor, with the position it moves to. A seam for fault
   * injection (a disk that fails the last write at shutdown); production code leaves it unset.
   */
  beforeAck?: (upTo: number) => Promise<void>
  /** the operator's bounds: size, free disk, overflow policy, TTL; unbounded when not given */
  bounds?: BufferBounds
  /** seconds since the machine booted (os.uptime); injectable for tests of the TTL clock */
  uptime?: () => number
  /** a monotonic clock in milliseconds (performance.now); injectable for tests of the TTL clock */
  monotonic?: () => number
  /** milliseconds between maintenance rounds (size sample, TTL sweep, compaction); default 1000 */
  maintenanceIntervalMs?: number
}

export interface OpenReport {
  /** the buffer did not exist and was created (with a fresh epoch) */
  created: boolean
  /** set when the log began a new epoch (a reboot after an unclean stop, or a repair) */
  newEpoch?: EpochEventData
  /** the previous run did not close the log (a crash or a power loss) */
  uncleanStop: boolean
  /** set when LevelDB was damaged and the log repaired it or set it aside */
  recovery?: RecoveryReport
}

/** Why the log does not accept readings: it is full, the disk is low, writes fail, or it is being repaired. */
export type HealthReason = Shortage | 'write-failed' | 'repairing'

export interface BufferHealth {
  accepting: boolean
  reason: HealthReason | null
  /** the stable error code of the reason */
  code?: Extract<BufferErrorCode, 'SLUICE_BUFFER_FULL' | 'SLUICE_BUFFER_WRITE_FAILED' | 'SLUICE_BUFFER_CORRUPT'>
  /** a sentence for the log and /readyz */
  detail?: string
}

/** Readings dropped by one decision, and why (docs/guarantees.md §4). */
export interface DropInfo {
  reason: GapReason
  /** the seqs of the gap entry that announces them (it may absorb earlier drops) */
  from: number
  to: number
  /** readings this decision dropped */
  count: number
}

export interface AppendOptions {
  /**
   * false for a sender that cannot be slowed down (an MQTT QoS 0 publish): while the buffer holds
   * commits back (full under `block`, or failing writes), its reading is dropped and announced
   * instead of queued in memory (docs/guarantees.md §6). It still gets its seq first (docs/guarantees.md §2).
   */
  canWait?: boolean
}

export interface AppendResult {
  seq: number
  /** resolves once the reading (or the gap announcing its drop) is written */
  durable: Promise<void>
  /** the reading met a buffer that holds commits back and was dropped at once */
  dropped: boolean
}

/** One group commit, as the `commit` event reports it (metrics). */
export interface CommitInfo {
  /** readings in the group commit */
  readings: number
  /** bytes handed to LevelDB (keys and values): the flash-wear figure before LevelDB's own overhead */
  bytes: number
  /** milliseconds from the start of the write to its completion */
  durationMs: number
}

export interface DurableLogEvents {
  /** entries up to `lastPos` are written and readable */
  committed: [lastPos: number]
  /** one group commit finished */
  commit: [info: CommitInfo]
  /** the log started or stopped accepting readings */
  health: [health: BufferHealth]
  /** readings were dropped and a gap entry announces them */
  dropped: [info: DropInfo]
  /** LevelDB was found damaged while running and was repaired or set aside */
  recovered: [report: RecoveryReport]
}

