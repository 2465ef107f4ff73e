import type { Logger } from 'pino'
import { join } from 'node:path'
import type { SluiceConfig } from '../config/index.js'
import { type DurableLog, readingSeqAtOrBefore } from '../buffer/index.js'
import type { DeadLetter, DeadLetterStore } from '../buffer/dead-letters.js'
import type { IngestAdapter, ReadingSink } from '../adapters/contract.js'
import { BrokerAdapter } from '../adapters/broker.js'
import type { AccessPolicyInput } from '../adapters/broker-auth.js'
import type { BrokerLimits } from '../adapters/broker-guard.js'
import { TlsFilesError, type BrokerTlsOptions, type TlsMaterial } from '../adapters/broker-tls.js'
import type { SubscribeAdapter } from '../adapters/subscribe.js'
import { deliveryFileName, fileDeliveryStore } from '../adapters/subscribe-deliveries.js'
import { SystemAdapter, type DiskSpace } from '../adapters/system.js'
import { MqttUpstream } from '../adapters/upstream-mqtt.js'
import { skipPacketNumberTable } from '../adapters/packet-numbers.js'
import type { UpstreamTls } from '../adapters/upstream/connection.js'
import { AdminEndpoint } from './admin-endpoint.js'
import { readBootId } from './boot.js'
import { loadBrokerUsers } from './broker-users.js'
import { ShutdownError } from './errors.js'
import { Forwarder } from './forwarder.js'
import { GatewayMetrics } from './metrics.js'
import { openBuffer } from './open-buffer.js'
import { GatewayReadout } from './readout.js'
import { readStartupFiles, warnAboutAccess } from './startup-files.js'
import { backlogOf } from './status.js'
import { upstreamFormat } from './upstream-format.js'
import type { GatewayStats, GatewayStatus, GatewayView, IngestReadout } from './view.js'

export type { GatewayStats, GatewayStatus } from './view.js'

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
  /** fault injection: runs before each write of the buffer's ack cursor (a disk failing at shutdown) */
  beforeAck?: (upTo: number) => Promise<void>
  /** how long SIGTERM waits for in-flight upstream messages to be acknowledged, in ms */
  drainGraceMs?: number
  /** fault injection: what the buffer's volume reports (a full disk); statfs when not given */
  diskSpace?: (path: string) => Promise<DiskSpace>
}

/**
 * One running sluice: the buffer, the ingest adapters and the forwarder to the upstream, wired
 * together, and their lifecycle. The process shell (bin.ts) only builds it, hands it signals and
 * turns its end into an exit code. What the report, readiness, metrics and health readings need
 * they read through its view (daemon/view.ts), which it also is, for whoever holds it.
 */
export class Gateway implements GatewayView {
  private readonly context: GatewayContext
  private readonly log: DurableLog
  private readonly upstream: MqttUpstream
  private readonly forwarder: Forwarder
  /** readings the forwarder set aside */
  private readonly deadLetterStore: DeadLetterStore
  private readonly ingestAdapters: IngestAdapter[]
  readonly broker: BrokerAdapter | null
  /** one per ingest.subscribe entry */
  readonly subscriptions: SubscribeAdapter[]
  /** this gateway's Prometheus registry and commit figures */
  readonly metrics = new GatewayMetrics()
  /** the counters and the view behind `stats()` and the report */
  private readonly readout: GatewayReadout
  private readonly admin: AdminEndpoint
  private system: SystemAdapter | null = null
  private _status: GatewayStatus = 'opening'
  private closing: Promise<void> | null = null

  private constructor (context: GatewayContext, log: DurableLog, upstream: UpstreamParts, ingest: IngestParts) {
    const { config, logger } = context
    this.context = context
    this.log = log
    this.deadLetterStore = upstream.deadLetters
    this.upstream = new MqttUpstream({
      url: config.upstream.url,
      clientId: config.upstream.clientId,
      username: config.upstream.username,
      password: config.upstream.password,
      protocol: config.upstream.protocol,
      tls: upstream.tls,
      backoff: config.upstream.backoff,
      logger: logger.child({ part: 'upstream' })
    })
    this.forwarder = new Forwarder({
      log,
      upstream: this.upstream,
      format: upstreamFormat(config),
      deadLetters: upstream.deadLetters,
      inflight: config.upstream.inflight,
      rejectRetries: config.upstream.rejectRetries,
      backoff: config.upstream.backoff,
      maxMessagesPerSecond: config.upstream.maxMessagesPerSecond,
      clock: context.clock,
      logger: logger.child({ part: 'forwarder' })
    })
    this.readout = new GatewayReadout({
      config,
      clock: context.clock,
      log,
      forwarder: this.forwarder,
      upstream: this.upstream,
      deadLetters: upstream.deadLetters,
      ingest: () => this.ingestAdapters,
      state: () => this._status,
      writes: () => ({ commits: this.metrics.commits, writtenBytes: this.metrics.writtenBytes }),
      diskSpace: context.diskSpace
    })
    this.admin = new AdminEndpoint({ view: this.readout, metrics: this.metrics, logger })
    this.broker = config.ingest.broker.enabled
      ? new BrokerAdapter({
        listen: config.ingest.broker.listen,
        tls: ingest.brokerTls,
        topics: config.ingest.topics,
        sink: this.sinkFor('broker'),
        logger: logger.child({ part: 'broker' }),
        clock: context.clock,
        access: ingest.brokerAccess,
        limits: brokerLimits(config.ingest.broker)
      })
      : null
    this.ingestAdapters = this.broker === null ? [] : [this.broker]
    const { Subscription } = ingest
    this.subscriptions = Subscription === null ? [] : config.ingest.subscribe.map((entry, i) => this.subscribeAdapter(Subscription, entry, i))
    this.ingestAdapters.push(...this.subscriptions)
    if (config.health.enabled) this.ingestAdapters.push(this.system = this.systemAdapter(config.health.interval))
    for (const adapter of this.ingestAdapters) this.readout.watch(adapter)
    log.on('commit', (info) => { this.metrics.observeCommit(info) })
  }

  /** Adapters see the buffer only as a sink of readings. Each gets its own, which counts them. */
  private sinkFor (adapter: string): ReadingSink {
    const counted = this.readout.ingestCounter(adapter)
    return {
      append: (reading, options) => {
        const appended = this.log.append(reading, options)
        // A reading dropped at once (QoS 0 meeting a buffer that holds commits back) is counted
        // as dropped by the buffer, not as ingested: it was never written.
        if (!appended.dropped) counted()
        return appended
      }
    }
  }

  /**
   * A subscription to a local broker. Its record of recent deliveries lives in the buffer's
   * directory (wiped with it) and is checked against the buffer as it was opened: its epoch, and
   * its last durable seq before anything new was appended.
   */
  private subscribeAdapter (Subscription: typeof SubscribeAdapter, entry: SluiceConfig['ingest']['subscribe'][number], index: number): SubscribeAdapter {
    const { config, logger, clock } = this.context
    return new Subscription({
      ...entry,
      configPath: `ingest.subscribe[${index}]`,
      forward: config.ingest.topics,
      sink: this.sinkFor('subscribe'),
      deliveries: {
        store: fileDeliveryStore(join(config.buffer.path, deliveryFileName(entry.url, entry.clientId))),
        epoch: this.log.epoch,
        recoveredSeq: this.log.lastSeq,
        distrust: this.log.report.recovery === undefined ? undefined : `the buffer was ${this.log.report.recovery.action} at open`
      },
      logger: logger.child({ part: 'subscribe', clientId: entry.clientId }),
      clock
    })
  }

  /** The gateway's own health readings; the topic filter of ingest.topics does not apply to them. */
  private systemAdapter (intervalMs: number): SystemAdapter {
    return new SystemAdapter({
      sink: this.sinkFor('system'),
      intervalMs,
      diskPath: this.context.config.buffer.path,
      backlog: async () => await backlogOf(this.readout),
      logger: this.context.logger.child({ part: 'health' }),
      clock: this.context.clock
    })
  }

  /** Opens the buffer, connects upstream and starts listening for sensors. */
  static async start (context: GatewayContext): Promise<Gateway> {
    const { config, logger } = context
    skipPacketNumberTable()
    const bootId = context.bootId ?? await readBootId()
    const { upstreamTls, brokerTls, brokerAccess } = await readStartupFiles(config, logger)
    const { log, deadLetters } = await openBuffer({ config, logger, bootId, clock: context.clock, beforeCommit: context.beforeCommit, beforeAck: context.beforeAck })
    // MQTT.js, 5 MB of an idle daemon's RSS, is loaded only for a subscription to a local broker.
    const Subscription = config.ingest.subscribe.length === 0 ? null : (await import('../adapters/subscribe.js')).SubscribeAdapter
    const gateway = new Gateway(context, log, { tls: upstreamTls, deadLetters }, { brokerAccess, brokerTls, Subscription })
    try {
      gateway.forwarder.start()
      gateway.upstream.start()
      for (const adapter of gateway.ingestAdapters) await adapter.start()
    } catch (err) {
      await gateway.close()
      throw err
    }
    gateway.readout.startRates()
    if (config.admin.enabled) await gateway.admin.start(config.admin.listen)
    gateway._status = 'open'
    logger.info({
      epoch: log.epoch,
      lastSeq: log.lastSeq,
      // The last reading whose upstream acknowledgement was on disk: sending resumes after it. The
      // cursor is written a few ms after the PUBACKs, so after a crash the last readings acknowledged
      // may be sent again. 0 before the first (the cursor's position then is before seq 1).
      ackedSeq: Math.max(0, readingSeqAtOrBefore(log.ackPos)),
      created: log.report.created,
      uncleanStop: log.report.uncleanStop,
      ingest: gateway.ingestInfo(),
      admin: gateway.admin.describe()
    }, 'sluice ready')
    return gateway
  }

  get status (): GatewayStatus { return this._status }

  // ---------------------------------------------------------------- the view, read through the readout

  get config (): SluiceConfig { return this.context.config }
  now (): number { return this.readout.now() }
  stats (): GatewayStats { return this.readout.stats() }
  ingest (): IngestReadout[] { return this.readout.ingest() }
  async oldestUnsentTime (): Promise<number | null> { return await this.readout.oldestUnsentTime() }
  async diskSpace (): Promise<DiskSpace> { return await this.readout.diskSpace() }
  /** The newest dead letters first (`sluice status`, the admin endpoint): readings set aside, with why and when. */
  async deadLetters (limit = 100): Promise<DeadLetter[]> { return await this.readout.deadLetters(limit) }

  /** Each ingest adapter's name and what it listens on or reads from (the ready line, the report). */
  ingestInfo (): Array<Record<string, unknown> & { name: string }> {
    return this.ingest().map((a) => ({ name: a.name, ...a.info }))
  }

  /** Where the admin endpoint listens, or null when it does not. */
  adminAddress (): { host: string, port: number } | null { return this.admin.address() }

  // ---------------------------------------------------------------- what SIGHUP applies live

  /** admin.enabled / admin.listen changed (SIGHUP): serve on the new address, or stop serving. */
  async setAdmin (admin: { enabled: boolean, listen: { host: string, port: number } }): Promise<void> {
    if (this._status !== 'open') return // a reload that raced a stop: the endpoint is going away
    await this.admin.set(admin)
  }

  /**
   * SIGHUP: the broker's users, ACLs, anonymous policy and password file, applied live. Connected
   * clients stay connected; each is checked against the new ACL from its next packet on. Throws a
   * ConfigError (and changes nothing) when the password file is unreadable or malformed.
   */
  async setBrokerUsers (broker: SluiceConfig['ingest']['broker']): Promise<void> {
    const access = await loadBrokerUsers(broker)
    if (this._status !== 'open' || this.broker === null) return
    warnAboutAccess(this.context.logger, broker, access)
    this.broker.setAccess(access)
  }

  /**
   * SIGHUP: the broker's TLS certificate, key and CA are read again (a renewed certificate keeps
   * its path) and served to new handshakes; connected sensors stay connected. Says what changed,
   * or null when nothing did or there is no TLS listener; throws (the old certificate stays) when
   * the files cannot be used.
   */
  async reloadBrokerTls (tls: SluiceConfig['ingest']['broker']['tls']): Promise<string | null> {
    if (this._status !== 'open' || tls === undefined || this.broker?.tlsAddress() == null) return null
    let outcome: Awaited<ReturnType<BrokerAdapter['reloadTls']>>
    try {
      outcome = await this.broker.reloadTls(tls)
    } catch (err) {
      if (!(err instanceof TlsFilesError)) throw err
      throw new Error(`${err.problems.map((p) => p.message).join('; ')}; new connections still get the previous certificate`, { cause: err })
    }
    if (outcome === null) return null
    const { subject, validTo, fingerprint256 } = outcome.certificate
    return `ingest.broker.tls ${outcome.changed.join(', ')} re-read (serving ${subject}, valid until ${validTo}, sha256 ${fingerprint256})`
  }

  /** health.enabled / health.interval changed (SIGHUP). */
  async setHealth (health: { enabled: boolean, interval: number }): Promise<void> {
    if (this._status !== 'open') return
    if (!health.enabled) {
      const system = this.system
      if (system === null) return
      this.system = null
      this.ingestAdapters.splice(this.ingestAdapters.indexOf(system), 1)
      await system.close()
    } else if (this.system === null) {
      const system = this.system = this.systemAdapter(health.interval)
      this.readout.watch(system)
      this.ingestAdapters.push(system)
      await system.start()
    } else {
      this.system.setInterval(health.interval)
    }
  }

  /**
   * Stops in the order that loses nothing (README, "What sluice guarantees": SIGTERM): stop accepting, finish the commit in
   * progress, give in-flight upstream messages a moment, persist the cursor, close LevelDB.
   * Safe to call twice.
   */
  async close (): Promise<void> {
    this.closing ??= this.shutdown()
    return await this.closing
  }

  private async shutdown (): Promise<void> {
    this._status = 'closing'
    this.readout.stopRates()
    const { logger } = this.context
    // Every step runs whatever an earlier one did: a failed ack write must not leave LevelDB
    // open (no clean-stop mark) or the admin server holding the process alive.
    const errors: unknown[] = []
    const step = async (what: string, run: () => Promise<void>): Promise<void> => {
      try {
        await run()
      } catch (err) {
        errors.push(err)
        logger.error({ code: 'SLUICE_SHUTDOWN_FAILED', step: what, err }, `stopping: ${what} failed; the other steps go on`)
      }
    }
    for (const adapter of this.ingestAdapters) await step(`closing the ${adapter.name} adapter`, async () => { await adapter.close() })
    await step('draining the forwarder and saving the ack cursor', async () => { await this.forwarder.stop(this.context.drainGraceMs ?? 2000) })
    await step('closing the upstream connection', async () => { await this.upstream.close() })
    await step('saving the dead letters', async () => { await this.deadLetterStore.flush() })
    await step('closing the buffer', async () => { await this.log.close() })
    await step('closing the admin endpoint', async () => { await this.admin.close() })
    this._status = 'closed'
    const summary = { lastSeq: this.log.lastSeq, acknowledged: this.forwarder.acknowledged }
    if (errors.length === 0) {
      logger.info(summary, 'sluice stopped')
      return
    }
    logger.error({ ...summary, code: 'SLUICE_SHUTDOWN_FAILED', failedSteps: errors.length }, 'sluice stopped, with errors')
    throw new ShutdownError(errors, `${errors.length} step(s) of the shutdown failed`)
  }
}

/** What the upstream half is given besides the config: read or opened before the gateway is built. */
interface UpstreamParts {
  tls: UpstreamTls | undefined
  deadLetters: DeadLetterStore
}

interface IngestParts {
  brokerAccess: AccessPolicyInput
  brokerTls?: { options: BrokerTlsOptions, material: TlsMaterial }
  /** the subscription adapter's class, loaded when ingest.subscribe has entries */
  Subscription: typeof SubscribeAdapter | null
}

/** The embedded broker's limits, from its config section. */
function brokerLimits (broker: SluiceConfig['ingest']['broker']): BrokerLimits {
  return {
    maxPayload: broker.maxPayload,
    maxClients: broker.maxClients,
    connectTimeoutMs: broker.connectTimeout,
    connectRate: broker.maxConnectRate,
    connectBurst: broker.connectBurst,
    maxQueuedBytes: broker.maxQueuedBytes
  }
}
