import type { SluiceConfig } from '../config/index.js'
import type { BufferHealth, EpochReason, RecoveryReport } from '../buffer/index.js'
import type { DeadLetter } from '../buffer/dead-letters.js'
import type { RefusalReason } from '../adapters/contract.js'
import type { DiskSpace } from '../adapters/system.js'
import type { Rates } from './rates.js'

/**
 * What the status report, readiness, metrics, the admin endpoint and the health readings may know
 * of a running gateway: a read-only view. They take this instead of the gateway, so none of them
 * can start, stop or reconfigure it, and the gateway's wiring can change without them.
 */
export interface GatewayView {
  /** the gateway's lifecycle */
  readonly status: GatewayStatus
  readonly config: SluiceConfig
  /** milliseconds since 1970, on the gateway's clock */
  now: () => number
  /** counters and states, all read at one moment */
  stats: () => GatewayStats
  /** each ingest adapter: what it listens on or reads from, and its say on readiness */
  ingest: () => IngestReadout[]
  /** ingest time of the oldest reading not yet acknowledged upstream (one seek), or null if none */
  oldestUnsentTime: () => Promise<number | null>
  /** free and total space of the buffer's volume */
  diskSpace: () => Promise<DiskSpace>
  /** the newest dead letters first: readings set aside, with why and when */
  deadLetters: (limit?: number) => Promise<DeadLetter[]>
}

export type GatewayStatus = 'opening' | 'open' | 'closing' | 'closed'

/** One ingest adapter as the view shows it. */
export interface IngestReadout {
  name: string
  /** what the adapter listens on or reads from (the report's `ingest` entries) */
  info: Record<string, unknown>
  /** whether readings can come in through it now; null for one that is no way in for sensors */
  listening: boolean | null
}

export interface GatewayStats {
  epoch: string
  lastSeq: number
  /** readings written to the buffer and not yet acknowledged upstream */
  backlog: number
  upstreamConnected: boolean
  upstreamConnections: number
  inFlight: number
  forwarded: number
  resent: number
  refused: Record<RefusalReason, number>
  /** readings written to the buffer, by ingest adapter name */
  ingested: Record<string, number>
  /** sluice's own events (epoch, gap) the upstream acknowledged */
  events: number
  /** messages published upstream, resends included */
  published: number
  /** upstream refusals (MQTT 5 PUBACK reason >= 0x80), retried or not */
  rejected: number
  /** readings set aside as dead letters (refused, disconnected on, too large), each announced by a gap event */
  setAside: number
  /** dead letters kept for inspection */
  deadLetters: number
  /** new epochs begun since start, by reason, each announced upstream by an epoch event */
  newEpochs: Record<EpochReason, number>
  /** readings dropped since start, by gap reason (each announced upstream by a gap event) */
  dropped: Record<string, number>
  /**
   * the buffer: its lifecycle (opening | open | closing | closed), whether it accepts readings (and
   * why not), its size on disk and the volume's free space, in bytes
   */
  buffer: BufferHealth & { status: string, bytes: number, free: number, maxBytes: number, minFreeDisk: number }
  /** group commits, and bytes handed to LevelDB (the flash-wear figure), since start */
  commits: number
  writtenBytes: number
  /** what was done about a damaged buffer since start, at open or while running, oldest first */
  recoveries: Array<RecoveryReport & { at: number }>
  /** readings per second over the last minute */
  rates: Rates
}
