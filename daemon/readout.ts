import type { SluiceConfig } from '../config/index.js'
import { type DurableLog, EPOCH_REASONS, type EpochReason, type RecoveryReport, readingSeqAtOrBefore } from '../buffer/index.js'
import type { DeadLetter, DeadLetterStore } from '../buffer/dead-letters.js'
import { type IngestAdapter, REFUSAL_REASONS, type RefusalReason } from '../adapters/contract.js'
import { diskSpace as volumeSpace, type DiskSpace } from '../adapters/system.js'
import type { MqttUpstream } from '../adapters/upstream-mqtt.js'
import type { Forwarder } from './forwarder.js'
import { RateWindow } from './rates.js'
import type { GatewayStats, GatewayStatus, GatewayView, IngestReadout } from './view.js'

/** The running parts a readout reads; the gateway owns them all. */
export interface ReadoutParts {
  config: SluiceConfig
  /** milliseconds since 1970 */
  clock?: () => number
  log: DurableLog
  forwarder: Forwarder
  upstream: Pick<MqttUpstream, 'connected' | 'connections'>
  deadLetters: DeadLetterStore
  /** the gateway's ingest adapters as they are now (the health adapter comes and goes on SIGHUP) */
  ingest: () => readonly IngestAdapter[]
  state: () => GatewayStatus
  /** group commits and bytes written since start (counted by the metrics) */
  writes: () => { commits: number, writtenBytes: number }
  /** what the buffer's volume reports; statfs when not given */
  diskSpace?: (path: string) => Promise<DiskSpace>
}

/**
 * The gateway's view of itself (daemon/view.ts), and the counters only the gateway's wiring can
 * keep: readings ingested per adapter, refusals, new epochs and recoveries since start, the rate
 * window. It is the one place that turns buffer positions into seqs for the report.
 */
export class GatewayReadout implements GatewayView {
  private readonly parts: ReadoutParts
  private readonly ingested: Record<string, number> = {}
  private readonly refused = Object.fromEntries(REFUSAL_REASONS.map((r) => [r, 0])) as Record<RefusalReason, number>
  private readonly newEpochs = Object.fromEntries(EPOCH_REASONS.map((r) => [r, 0])) as Record<EpochReason, number>
  private readonly recoveries: Array<RecoveryReport & { at: number }> = []
  private readonly rateWindow: RateWindow

  constructor (parts: ReadoutParts) {
    this.parts = parts
    const { log } = parts
    if (log.report.recovery !== undefined) this.recoveries.push({ ...log.report.recovery, at: this.now() })
    if (log.report.newEpoch !== undefined) this.newEpochs[log.report.newEpoch.reason]++
    log.on('recovered', (report) => { this.recoveries.push({ ...report, at: this.now() }) })
    this.rateWindow = new RateWindow(() => ({
      ingested: Object.values(this.ingested).reduce((a, b) => a + b, 0),
      forwarded: parts.forwarder.stats.forwarded
    }))
  }

  // ---------------------------------------------------------------- what the gateway counts

  /** Starts counting `adapter`'s refusals. */
  watch (adapter: IngestAdapter): void {
    adapter.on('refused', (reason) => { this.refused[reason]++ })
  }

  /** A counter of the readings `adapter` writes to the buffer, shown at 0 from now on. */
  ingestCounter (adapter: string): () => void {
    this.ingested[adapter] ??= 0
    return () => { this.ingested[adapter]++ }
  }

  /** Samples the rates from now on (every 5 s, an unref'd timer). */
  startRates (): void { this.rateWindow.start() }
  stopRates (): void { this.rateWindow.stop() }

  // ---------------------------------------------------------------- the view

  get status (): GatewayStatus { return this.parts.state() }
  get config (): SluiceConfig { return this.parts.config }
  now (): number { return (this.parts.clock ?? Date.now)() }

  stats (): GatewayStats {
    const { log, forwarder, upstream } = this.parts
    return {
      epoch: log.epoch,
      lastSeq: log.lastSeq,
      // A position is seq * 4 + slot (buffer/keys.ts); a fresh buffer's cursor, position 0, is
      // before seq 1: nothing acknowledged, not seq -1.
      backlog: Math.max(0, readingSeqAtOrBefore(log.lastCommittedPos) - Math.max(0, readingSeqAtOrBefore(forwarder.acknowledged))),
      upstreamConnected: upstream.connected,
      upstreamConnections: upstream.connections,
      inFlight: forwarder.inFlight,
      forwarded: forwarder.stats.forwarded,
      resent: forwarder.stats.resent,
      refused: { ...this.refused },
      ingested: { ...this.ingested },
      events: forwarder.stats.events,
      published: forwarder.stats.published,
      rejected: forwarder.stats.rejected,
      setAside: forwarder.stats.setAside,
      deadLetters: this.parts.deadLetters.size,
      newEpochs: { ...this.newEpochs },
      // The buffer's own drops (overflow, ttl, a corrupt stretch) and the readings the forwarder
      // set aside (rejected).
      dropped: { ...log.dropped, rejected: forwarder.stats.setAside },
      buffer: { status: log.status, ...log.health, ...log.diskUsage },
      ...this.parts.writes(),
      recoveries: this.recoveries.map((r) => ({ ...r })),
      rates: this.rateWindow.rates()
    }
  }

  ingest (): IngestReadout[] {
    return this.parts.ingest().map((a) => ({ name: a.name, info: a.describe(), listening: a.listening }))
  }

  async oldestUnsentTime (): Promise<number | null> {
    const { log, forwarder } = this.parts
    if (log.status !== 'open') return null
    const [first] = await log.read(forwarder.acknowledged, 1)
    return (first as { time?: number } | undefined)?.time ?? null
  }

  async diskSpace (): Promise<DiskSpace> {
    return await (this.parts.diskSpace ?? volumeSpace)(this.parts.config.buffer.path)
  }

  async deadLetters (limit = 100): Promise<DeadLetter[]> {
    if (this.parts.log.status !== 'open') return []
    return await this.parts.deadLetters.list(limit)
  }
}
