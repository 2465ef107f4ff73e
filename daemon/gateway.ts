import type { Logger } from 'pino'
import type { SluiceConfig } from '../config/index.js'
import { DurableLog, readingSeqAtOrBefore } from '../buffer/index.js'
import type { IngestAdapter, ReadingSink, RefusalReason, UpstreamFormat } from '../adapters/contract.js'
import { BrokerAdapter } from '../adapters/broker.js'
import { MqttUpstream } from '../adapters/upstream-mqtt.js'
import { cloudEventsJson } from '../adapters/formats/cloudevents-json.js'
import { Forwarder } from './forwarder.js'
import { readBootId } from './boot.js'

/** Everything a gateway is given; tests build one in-process with their own. */
export interface GatewayContext {
  config: SluiceConfig
  logger: Logger
  /** milliseconds since 1970 */
  clock?: () => number
  /** the kernel's boot id; read from /proc when not given */
  bootId?: string
  /** fault injection: runs before each group commit (a slow or failing disk) */
  beforeCommit?: (readings: number) => Promise<void>
  /** how long SIGTERM waits for in-flight upstream messages to be acknowledged, in ms */
  drainGraceMs?: number
}

export type GatewayStatus = 'opening' | 'open' | 'closing' | 'closed'

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
}

/**
 * One running sluice: the buffer, the ingest adapters and the forwarder to the upstream, wired
 * together. The process shell (bin.ts) only builds it, hands it signals and turns its end into an
 * exit code.
 */
export class Gateway {
  private readonly context: GatewayContext
  private readonly log: DurableLog
  private readonly upstream: MqttUpstream
  private readonly forwarder: Forwarder
  private readonly ingest: IngestAdapter[]
  readonly broker: BrokerAdapter | null
  private readonly refused: Record<RefusalReason, number> = { 'bad-topic': 0, 'buffer-unavailable': 0, malformed: 0 }
  private _status: GatewayStatus = 'opening'
  private closing: Promise<void> | null = null

  private constructor (context: GatewayContext, log: DurableLog) {
    const { config, logger } = context
    this.context = context
    this.log = log
    this.upstream = new MqttUpstream({
      url: config.upstream.url,
      clientId: config.upstream.clientId,
      username: config.upstream.username,
      password: config.upstream.password,
      backoff: config.upstream.backoff,
      logger: logger.child({ part: 'upstream' })
    })
    this.forwarder = new Forwarder({
      log,
      upstream: this.upstream,
      format: upstreamFormat(config),
      inflight: config.upstream.inflight,
      logger: logger.child({ part: 'forwarder' })
    })
    // Adapters see the buffer only as a sink of readings.
    const sink: ReadingSink = { append: (reading) => log.append(reading) }
    this.broker = config.ingest.broker.enabled
      ? new BrokerAdapter({
        listen: config.ingest.broker.listen,
        topics: config.ingest.topics,
        sink,
        logger: logger.child({ part: 'broker' }),
        clock: context.clock
      })
      : null
    this.ingest = this.broker === null ? [] : [this.broker]
    for (const adapter of this.ingest) {
      adapter.on('refused', (reason) => { this.refused[reason]++ })
    }
  }

  /** Opens the buffer, connects upstream and starts listening for sensors. */
  static async start (context: GatewayContext): Promise<Gateway> {
    const { config, logger } = context
    const bootId = context.bootId ?? await readBootId()
    const log = await DurableLog.open({
      path: config.buffer.path,
      sync: config.buffer.sync,
      syncIntervalMs: config.buffer.syncInterval,
      bootId,
      clock: context.clock,
      beforeCommit: context.beforeCommit
    })
    const { report } = log
    if (report.newEpoch !== undefined) {
      logger.warn(report.newEpoch, 'the machine rebooted after an unclean stop: unsynced readings may be lost, continuing under a new epoch')
    }
    const gateway = new Gateway(context, log)
    try {
      gateway.forwarder.start()
      gateway.upstream.start()
      for (const adapter of gateway.ingest) await adapter.start()
    } catch (err) {
      await gateway.close()
      throw err
    }
    gateway._status = 'open'
    logger.info({
      epoch: log.epoch,
      lastSeq: log.lastSeq,
      created: report.created,
      uncleanStop: report.uncleanStop,
      ingest: gateway.ingest.map((a) => ({ name: a.name, ...a.describe() }))
    }, 'sluice ready')
    return gateway
  }

  get status (): GatewayStatus { return this._status }

  stats (): GatewayStats {
    return {
      epoch: this.log.epoch,
      lastSeq: this.log.lastSeq,
      backlog: Math.max(0, readingSeqAtOrBefore(this.log.lastCommittedPos) - readingSeqAtOrBefore(this.forwarder.acknowledged)),
      upstreamConnected: this.upstream.connected,
      upstreamConnections: this.upstream.connections,
      inFlight: this.forwarder.inFlight,
      forwarded: this.forwarder.stats.forwarded,
      resent: this.forwarder.stats.resent,
      refused: { ...this.refused }
    }
  }

  /**
   * Stops in the order that loses nothing [SPEC 7]: stop accepting, finish the commit in
   * progress, give in-flight upstream messages a moment, persist the cursor, close LevelDB.
   * Safe to call twice.
   */
  async close (): Promise<void> {
    this.closing ??= this.shutdown()
    return await this.closing
  }

  private async shutdown (): Promise<void> {
    this._status = 'closing'
    const { logger } = this.context
    for (const adapter of this.ingest) await adapter.close()
    await this.forwarder.stop(this.context.drainGraceMs ?? 2000)
    await this.upstream.close()
    await this.log.close()
    this._status = 'closed'
    logger.info({ lastSeq: this.log.lastSeq, acknowledged: this.forwarder.acknowledged }, 'sluice stopped')
  }
}

function upstreamFormat (config: SluiceConfig): UpstreamFormat {
  const templates = { gateway: config.gateway.id, topic: config.upstream.topic, eventsTopic: config.upstream.eventsTopic }
  switch (config.upstream.format) {
    case 'cloudevents-json':
      return cloudEventsJson(templates)
    case 'cloudevents-binary':
    case 'cbor-batch':
      // The config schema refuses these until they are built.
      throw new Error(`upstream.format ${config.upstream.format} is not supported yet`)
  }
}
