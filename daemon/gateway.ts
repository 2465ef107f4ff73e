import type { Logger } from 'pino'
import { ConfigError, formatListen, type SluiceConfig } from '../config/index.js'
import { type BufferHealth, DurableLog, EPOCH_REASONS, type EpochReason, type RecoveryReport, readingSeqAtOrBefore } from '../buffer/index.js'
import { type IngestAdapter, REFUSAL_REASONS, type ReadingSink, type RefusalReason, type UpstreamFormat } from '../adapters/contract.js'
import { BrokerAdapter } from '../adapters/broker.js'
import type { BrokerLimits } from '../adapters/broker-guard.js'
// -- subscribe adapter
import { join } from 'node:path'
import { SubscribeAdapter } from '../adapters/subscribe.js'
import { deliveryFileName, fileDeliveryStore } from '../adapters/subscribe-deliveries.js'
import { MqttUpstream } from '../adapters/upstream-mqtt.js'
import { cloudEventsJson } from '../adapters/formats/cloudevents-json.js'
import { Forwarder } from './forwarder.js'
// -- upstream: formats, TLS, dead letters
import { cloudEventsBinary } from '../adapters/formats/cloudevents-binary.js'
import { cborBatch } from '../adapters/formats/cbor-batch.js'
import type { UpstreamTls } from '../adapters/upstream-mqtt.js'
import { type DeadLetter, DeadLetterStore } from '../buffer/dead-letters.js'
import { loadUpstreamTls } from './upstream-tls.js'
import { loadBrokerUsers } from './broker-users.js'
import type { AccessPolicyInput } from '../adapters/broker-auth.js'
import { readBootId } from './boot.js'
// -- observability: admin endpoint, metrics, health readings
import { SystemAdapter, diskSpace as volumeSpace, type DiskSpace } from '../adapters/system.js'
import { AdminServer, type Readiness } from './admin.js'
import { GatewayMetrics, RateWindow, type Rates } from './metrics.js'
import { buildStatus } from './status.js'
// -- broker TLS
import { TlsFilesError, type BrokerTlsOptions, type TlsMaterial } from '../adapters/broker-tls.js'
import { loadBrokerTls } from './broker-tls.js'
import { ShutdownError } from './errors.js'

/** Below this much free space on the buffer's volume LevelDB cannot be trusted to write: not ready. */
const DISK_FULL_BYTES = 1024 * 1024

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
  // -- buffer bounds
  /** readings dropped since start, by gap reason (each announced upstream by a gap event) */
  dropped: Record<string, number>
  /** whether the buffer accepts readings (and why not), its size on disk and the volume's free space, in bytes */
  buffer: BufferHealth & { bytes: number, free: number, maxBytes: number, minFreeDisk: number }
}

/** Dead letters kept for inspection; the oldest already announced go first. */
const DEAD_LETTERS_KEPT = 1000

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
  /** readings the forwarder set aside */
  private readonly deadLetterStore: DeadLetterStore
  private readonly ingest: IngestAdapter[]
  readonly broker: BrokerAdapter | null
  /** one per ingest.subscribe entry */
  readonly subscriptions: SubscribeAdapter[]
  /** this gateway's Prometheus registry and commit figures */
  readonly metrics = new GatewayMetrics()
  private readonly rateWindow: RateWindow
  private readonly ingested: Record<string, number> = {}
  private system: SystemAdapter | null = null
  private admin: AdminServer | null = null
  private readonly refused = Object.fromEntries(REFUSAL_REASONS.map((r) => [r, 0])) as Record<RefusalReason, number>
  /** what was done about a damaged buffer since start, at open or while running, oldest first */
  readonly recoveries: Array<RecoveryReport & { at: number }> = []
  private readonly newEpochs = Object.fromEntries(EPOCH_REASONS.map((r) => [r, 0])) as Record<EpochReason, number>
  private _status: GatewayStatus = 'opening'
  private closing: Promise<void> | null = null

  private constructor (context: GatewayContext, log: DurableLog, upstream: UpstreamParts, brokerAccess: AccessPolicyInput, brokerTls?: { options: BrokerTlsOptions, material: TlsMaterial }) {
    const { config, logger } = context
    this.context = context
    this.log = log
    this.deadLetterStore = upstream.deadLetters
    if (log.report.recovery !== undefined) this.recoveries.push({ ...log.report.recovery, at: this.now() })
    if (log.report.newEpoch !== undefined) this.newEpochs[log.report.newEpoch.reason]++
    log.on('recovered', (report) => { this.recoveries.push({ ...report, at: this.now() }) })
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
    this.broker = config.ingest.broker.enabled
      ? new BrokerAdapter({
        listen: config.ingest.broker.listen,
        tls: brokerTls,
        topics: config.ingest.topics,
        sink: this.sinkFor('broker'),
        logger: logger.child({ part: 'broker' }),
        clock: context.clock,
        access: brokerAccess,
        limits: brokerLimits(config.ingest.broker)
      })
      : null
    this.ingest = this.broker === null ? [] : [this.broker]
    this.subscriptions = config.ingest.subscribe.map((entry, i) => this.subscribeAdapter(entry, i))
    this.ingest.push(...this.subscriptions)
    if (config.health.enabled) this.ingest.push(this.system = this.systemAdapter(config.health.interval))
    for (const adapter of this.ingest) {
      adapter.on('refused', (reason) => { this.refused[reason]++ })
    }
    log.on('commit', (info) => { this.metrics.observeCommit(info) })
    this.rateWindow = new RateWindow(() => ({
      ingested: Object.values(this.ingested).reduce((a, b) => a + b, 0),
      forwarded: this.forwarder.stats.forwarded
    }))
  }

  /** Adapters see the buffer only as a sink of readings. Each gets its own, which counts them. */
  private sinkFor (adapter: string): ReadingSink {
    this.ingested[adapter] ??= 0
    return {
      append: (reading, options) => {
        const appended = this.log.append(reading, options)
        // A reading dropped at once (QoS 0 meeting a buffer that holds commits back) is counted
        // as dropped by the buffer, not as ingested: it was never written.
        if (!appended.dropped) this.ingested[adapter]++
        return appended
      }
    }
  }

  /**
   * A subscription to a local broker. Its record of recent deliveries lives in the buffer's
   * directory (wiped with it) and is checked against the buffer as it was opened: its epoch, and
   * its last durable seq before anything new was appended.
   */
  private subscribeAdapter (entry: SluiceConfig['ingest']['subscribe'][number], index: number): SubscribeAdapter {
    const { config, logger, clock } = this.context
    return new SubscribeAdapter({
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
      backlog: async () => {
        const oldest = await this.oldestUnsentTime().catch(() => null)
        return {
          readings: this.stats().backlog,
          bytes: this.bufferBytes(),
          oldestUnsentAgeSeconds: oldest === null ? null : Math.max(0, (this.now() - oldest) / 1000)
        }
      },
      logger: this.context.logger.child({ part: 'health' }),
      clock: this.context.clock
    })
  }

  /** Opens the buffer, connects upstream and starts listening for sensors. */
  static async start (context: GatewayContext): Promise<Gateway> {
    const { config, logger } = context
    const bootId = context.bootId ?? await readBootId()
    // Read before the buffer opens: a bad certificate path is a config error, nothing to clean up.
    // Both sets of TLS files are checked, so that every bad one is reported at once.
    const [upstreamFiles, brokerFiles] = await Promise.allSettled([loadUpstreamTls(config.upstream), loadBrokerTls(config.ingest.broker)])
    if (upstreamFiles.status === 'rejected' || brokerFiles.status === 'rejected') throw oneError([upstreamFiles, brokerFiles])
    const tls = upstreamFiles.value
    const brokerTls = brokerFiles.value
    const brokerAccess = await loadBrokerUsers(config.ingest.broker)
    if (config.ingest.broker.enabled) warnAboutAccess(logger, config.ingest.broker, brokerAccess)
    const log = await DurableLog.open({
      path: config.buffer.path,
      sync: config.buffer.sync,
      syncIntervalMs: config.buffer.syncInterval,
      bootId,
      clock: context.clock,
      beforeCommit: context.beforeCommit,
      beforeAck: context.beforeAck,
      // -- buffer bounds
      bounds: {
        maxBytes: config.buffer.maxBytes,
        minFreeDisk: config.buffer.minFreeDisk,
        overflow: config.buffer.overflow,
        ttlMs: config.buffer.ttl
      }
    })
    const { report } = log
    // -- buffer bounds: what opening found, and the buffer's state changes from now on
    if (report.recovery !== undefined) logRecovery(logger, report.recovery)
    watchBuffer(log, logger)
    // -- end buffer bounds
    if (report.newEpoch !== undefined && report.newEpoch.reason === 'power-loss') {
      logger.warn(report.newEpoch, 'the machine rebooted after an unclean stop: unsynced readings may be lost, continuing under a new epoch')
    }
    let deadLetters: DeadLetterStore
    try {
      deadLetters = await DeadLetterStore.open(log.sublevel('dead-letters'), {
        maxKept: DEAD_LETTERS_KEPT,
        ackedSeq: readingSeqAtOrBefore(log.ackPos)
      })
    } catch (err) {
      await log.close()
      throw err
    }
    const gateway = new Gateway(context, log, { tls, deadLetters }, brokerAccess, brokerTls)
    try {
      gateway.forwarder.start()
      gateway.upstream.start()
      for (const adapter of gateway.ingest) await adapter.start()
    } catch (err) {
      await gateway.close()
      throw err
    }
    gateway.rateWindow.start()
    if (config.admin.enabled) await gateway.startAdmin(config.admin.listen)
    gateway._status = 'open'
    logger.info({
      epoch: log.epoch,
      lastSeq: log.lastSeq,
      created: report.created,
      uncleanStop: report.uncleanStop,
      ingest: gateway.ingestInfo(),
      admin: gateway.admin?.describe() ?? null
    }, 'sluice ready')
    return gateway
  }

  get status (): GatewayStatus { return this._status }

  stats (): GatewayStats {
    return {
      epoch: this.log.epoch,
      lastSeq: this.log.lastSeq,
      // (a fresh buffer's cursor, position 0, is before seq 1: nothing acknowledged, not seq -1)
      backlog: Math.max(0, readingSeqAtOrBefore(this.log.lastCommittedPos) - Math.max(0, readingSeqAtOrBefore(this.forwarder.acknowledged))),
      upstreamConnected: this.upstream.connected,
      upstreamConnections: this.upstream.connections,
      inFlight: this.forwarder.inFlight,
      forwarded: this.forwarder.stats.forwarded,
      resent: this.forwarder.stats.resent,
      refused: { ...this.refused },
      ingested: { ...this.ingested },
      events: this.forwarder.stats.events,
      published: this.forwarder.stats.published,
      rejected: this.forwarder.stats.rejected,
      setAside: this.forwarder.stats.setAside,
      deadLetters: this.deadLetterStore.size,
      newEpochs: { ...this.newEpochs },
      // -- buffer bounds
      dropped: this.drops(),
      buffer: { ...this.log.health, ...this.log.diskUsage }
    }
  }

  /** The newest dead letters first (`sluice status`, the admin endpoint): readings set aside, with why and when. */
  async deadLetters (limit = 100): Promise<DeadLetter[]> {
    if (this.log.status !== 'open') return []
    return await this.deadLetterStore.list(limit)
  }

  // ---------------------------------------------------------------- observability

  get config (): SluiceConfig { return this.context.config }
  get bufferStatus (): string { return this.log.status }
  now (): number { return (this.context.clock ?? Date.now)() }
  rates (): Rates { return this.rateWindow.rates() }
  ingestInfo (): Array<Record<string, unknown> & { name: string }> {
    return this.ingest.map((a) => ({ name: a.name, ...a.describe() }))
  }

  /** The buffer's size on disk, as the buffer measures it for buffer.maxBytes. */
  bufferBytes (): number { return this.log.diskUsage.bytes }

  /** Free and total space of the buffer's volume. */
  async diskSpace (): Promise<DiskSpace> {
    return await (this.context.diskSpace ?? volumeSpace)(this.context.config.buffer.path)
  }

  /** Ingest time of the oldest entry not yet acknowledged upstream (one seek), or null if none. */
  async oldestUnsentTime (): Promise<number | null> {
    if (this.log.status !== 'open') return null
    const [first] = await this.log.read(this.forwarder.acknowledged, 1)
    return (first as { time?: number } | undefined)?.time ?? null
  }

  /** Whether the gateway accepts readings, and why not (/readyz, `sluice status`). */
  async readiness (): Promise<Readiness> {
    const reasons: string[] = []
    if (this._status !== 'open') reasons.push(`the gateway is ${this._status}`)
    if (this.log.status !== 'open') reasons.push(`the buffer is ${this.log.status}`)
    // The buffer holds readings back: full under overflow "block", low disk, failing writes, a repair.
    const health = this.log.health
    if (!health.accepting) reasons.push(health.detail ?? `the buffer does not accept readings (${String(health.reason)})`)
    // An adapter may say it is not listening (a subscription whose broker is gone).
    const listening = this.ingest.filter((a) => a.name !== 'system' && (a as { listening?: boolean }).listening !== false)
    if (listening.length === 0) reasons.push('no ingest adapter is listening')
    const disk = await this.diskSpace().catch(() => null)
    if (disk !== null && disk.freeBytes < DISK_FULL_BYTES) {
      reasons.push(`the disk is full: ${disk.freeBytes} bytes free on the volume of ${this.context.config.buffer.path}`)
    }
    return { ready: reasons.length === 0, reasons }
  }

  /**
   * Readings dropped since start, by gap reason: the buffer's own drops (overflow, ttl, a corrupt
   * stretch) and the readings the forwarder set aside (rejected).
   */
  drops (): Record<string, number> {
    return { ...this.log.dropped, rejected: this.forwarder.stats.setAside }
  }

  /** Where the admin endpoint listens, or null when it does not. */
  adminAddress (): { host: string, port: number } | null { return this.admin?.address() ?? null }

  /**
   * Serves the admin endpoint. A port already taken is logged, not fatal: sensors' readings
   * matter more than the metrics port, and a SIGHUP retries.
   */
  private async startAdmin (listen: { host: string, port: number }): Promise<void> {
    try {
      this.admin = await this.listenAdmin(listen)
    } catch (err) {
      this.context.logger.error({ code: 'SLUICE_ADMIN_LISTEN_FAILED', err: (err as Error).message, listen: formatListen(listen) },
        'the admin endpoint could not listen; running without it (free the port or change admin.listen, then send SIGHUP)')
    }
  }

  private async listenAdmin (listen: { host: string, port: number }): Promise<AdminServer> {
    const admin = new AdminServer({
      listen,
      logger: this.context.logger.child({ part: 'admin' }),
      routes: {
        metrics: async () => ({ contentType: this.metrics.contentType, body: await this.metrics.render(await buildStatus(this)) }),
        readiness: async () => await this.readiness(),
        status: async () => await buildStatus(this)
      }
    })
    await admin.start()
    return admin
  }

  /** admin.enabled / admin.listen changed (SIGHUP): serve on the new address, or stop serving. */
  async setAdmin (admin: { enabled: boolean, listen: { host: string, port: number } }): Promise<void> {
    if (this._status !== 'open') return // a reload that raced a stop: the endpoint is going away
    const old = this.admin
    if (!admin.enabled) {
      this.admin = null
      await old?.close()
      return
    }
    // The new address first, so that a bad one leaves the old endpoint serving. Only the same
    // port on another host (127.0.0.1 -> 0.0.0.0) needs the old one closed first.
    const oldAddress = old?.address() ?? null
    try {
      this.admin = await this.listenAdmin(admin.listen)
    } catch (err) {
      if (old === null || oldAddress === null || oldAddress.port !== admin.listen.port) throw err
      await old.close()
      try {
        this.admin = await this.listenAdmin(admin.listen)
      } catch (again) {
        this.admin = await this.listenAdmin(oldAddress).catch(() => null)
        throw again
      }
      return
    }
    await old?.close()
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
      this.ingest.splice(this.ingest.indexOf(system), 1)
      await system.close()
    } else if (this.system === null) {
      const system = this.system = this.systemAdapter(health.interval)
      system.on('refused', (reason) => { this.refused[reason]++ })
      this.ingest.push(system)
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
    this.rateWindow.stop()
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
    for (const adapter of this.ingest) await step(`closing the ${adapter.name} adapter`, async () => { await adapter.close() })
    await step('draining the forwarder and saving the ack cursor', async () => { await this.forwarder.stop(this.context.drainGraceMs ?? 2000) })
    await step('closing the upstream connection', async () => { await this.upstream.close() })
    await step('saving the dead letters', async () => { await this.deadLetterStore.flush() })
    await step('closing the buffer', async () => { await this.log.close() })
    await step('closing the admin endpoint', async () => { await this.admin?.close() })
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

/** Says what an operator may not expect of the broker's access rules. */
function warnAboutAccess (logger: Logger, broker: SluiceConfig['ingest']['broker'], access: AccessPolicyInput): void {
  if (broker.allowAnonymous) {
    const listeners = [broker.listen, broker.tls?.listen].flatMap((address) => address == null ? [] : [formatListen(address)])
    logger.warn({ listen: listeners }, 'ingest.broker.allowAnonymous is true: clients without a user name are accepted from any address')
  }
  const noHash = access.users.filter((user) => user.passwordHash === undefined).map((user) => user.username)
  if (noHash.length > 0) {
    logger.warn({ users: noHash }, 'broker users without a password hash (neither passwordHash nor a passwordFile line) can only connect with a client certificate')
  }
}

/** The failures of settled promises as one error: config errors merged into one, else the first. */
function oneError (results: ReadonlyArray<PromiseSettledResult<unknown>>): unknown {
  const failures = results.flatMap((r) => r.status === 'rejected' ? [r.reason as unknown] : [])
  if (failures.every((e) => e instanceof ConfigError)) return new ConfigError(failures.flatMap((e) => e.errors))
  return failures[0]
}

/** What the upstream half is given besides the config: read or opened before the gateway is built. */
interface UpstreamParts {
  tls: UpstreamTls | undefined
  deadLetters: DeadLetterStore
}

function upstreamFormat (config: SluiceConfig): UpstreamFormat {
  const templates = { gateway: config.gateway.id, topic: config.upstream.topic, eventsTopic: config.upstream.eventsTopic }
  switch (config.upstream.format) {
    case 'cloudevents-json':
      return cloudEventsJson(templates)
    case 'cloudevents-binary':
      return cloudEventsBinary(templates)
    case 'cbor-batch': {
      const { maxRecords, maxBytes, maxDelay } = config.upstream.batch
      return cborBatch(templates, { maxRecords, maxBytes, maxDelayMs: maxDelay })
    }
  }
}

// ---------------------------------------------------------------- buffer bounds

/** Says what opening the buffer did about damage: an operator must know data was set aside. */
function logRecovery (logger: Logger, recovery: RecoveryReport): void {
  const { action, problem, setAsideTo, files, bytes, lostSeqs } = recovery
  if (action === 'repaired') {
    logger.error({ code: 'SLUICE_BUFFER_CORRUPT', problem, lostSeqs },
      `the buffer was damaged and LevelDB repaired it; ${lostSeqs} readings could not be saved and are announced upstream as a gap (reason "corrupt"); continuing under a new epoch`)
  } else {
    logger.error({ code: 'SLUICE_BUFFER_CORRUPT', problem, setAsideTo, files, bytes },
      `the buffer was damaged beyond repair: its ${files} files (${bytes} bytes) were moved to ${String(setAsideTo)} (as they were before the repair attempt in its before-repair/ folder; delete them once inspected); started a fresh buffer`)
  }
}

/** The minimum time between two log lines about drops of one reason: a full buffer drops all the time. */
const DROP_LOG_INTERVAL_MS = 60_000

/**
 * Logs the buffer's state changes once each: when it stops accepting readings and why (full, low
 * disk, failing writes, a repair), when it accepts again, a repair while running, and drops (at
 * most one line a minute per reason, with the running count).
 */
function watchBuffer (log: DurableLog, logger: Logger): void {
  const child = logger.child({ part: 'buffer' })
  log.on('health', (health) => {
    if (health.accepting) child.info('the buffer accepts readings again')
    else child.warn({ code: health.code, reason: health.reason }, health.detail ?? 'the buffer does not accept readings')
  })
  log.on('recovered', (report) => { logRecovery(child, report) })
  const lastLogged = new Map<string, number>()
  log.on('dropped', (info) => {
    const now = Date.now()
    if (now - (lastLogged.get(info.reason) ?? Number.NEGATIVE_INFINITY) < DROP_LOG_INTERVAL_MS) return
    lastLogged.set(info.reason, now)
    child.warn({ reason: info.reason, from: info.from, to: info.to, total: log.dropped[info.reason] },
      `readings dropped (${info.reason}); each drop is announced upstream by a gap event`)
  })
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
