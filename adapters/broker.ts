import { EventEmitter } from 'node:events'
import { createServer, type Server, type AddressInfo } from 'node:net'
import { Aedes, type Client, type PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import type { IngestAdapter, IngestAdapterEvents, ReadingSink, RefusalReason } from './contract.js'
import { badTopicReason, forwardedTopics } from './topics.js'
import { BrokerGuard, BrokerRefusal, type BrokerLimits, type RefusalNotice } from './broker-guard.js'

export interface BrokerAdapterOptions {
  listen: { host: string, port: number }
  /** topic filters whose readings are forwarded; others are only delivered locally */
  topics: readonly string[]
  sink: ReadingSink
  logger: Logger
  clock?: () => number
  limits: BrokerLimits
  /** monotonic milliseconds for the connection-rate limit; injectable so tests decide the time */
  now?: () => number
}

type Status = 'new' | 'opening' | 'open' | 'closing' | 'closed'

/**
 * The embedded MQTT broker sensors connect to (aedes, MQTT 3.1.1).
 *
 * aedes runs `authorizePublish` before it writes a QoS 1 PUBACK (lib/handlers/publish.js), so the
 * hook calls back only once the reading's group commit is on disk: PUBACK means durable
 * [SPEC 2.1]. Refusing a publish means calling back with an error, which closes that one client's
 * connection: MQTT 3.1.1 has no negative PUBACK.
 */
export class BrokerAdapter extends EventEmitter<IngestAdapterEvents> implements IngestAdapter {
  readonly name = 'broker'
  private readonly options: BrokerAdapterOptions
  private readonly isForwarded: (topic: string) => boolean
  private readonly clock: () => number
  private readonly warned = new Set<string>()
  private readonly guard: BrokerGuard
  private aedes: Aedes | null = null
  private server: Server | null = null
  private status: Status = 'new'
  private closing: Promise<void> | null = null

  constructor (options: BrokerAdapterOptions) {
    super()
    this.options = options
    this.isForwarded = forwardedTopics(options.topics)
    this.clock = options.clock ?? Date.now
    this.guard = new BrokerGuard(options.limits, (notice) => { this.guardRefused(notice) }, options.now)
  }

  async start (): Promise<void> {
    if (this.status !== 'new') throw new Error(`the broker adapter cannot start when ${this.status}`)
    this.status = 'opening'
    const aedes = await Aedes.createBroker({
      authorizePublish: (client, packet, callback) => { this.authorizePublish(client, packet, callback) },
      preConnect: (client, packet, callback) => { callback(null, this.guard.preConnect(aedes, client, packet)) },
      authorizeForward: (client, packet) => this.guard.authorizeForward(client, packet),
      // the guard's own connect timeout closes first; aedes's stays as a backstop
      connectTimeout: this.options.limits.connectTimeoutMs * 2
    })
    aedes.on('clientError', (client, err) => { this.clientFailed(client, err) })
    aedes.on('connectionError', (client, err) => { this.clientFailed(client, err) })
    this.aedes = aedes
    const server = createServer((socket) => { this.guard.accept(socket, (s) => aedes.handle(s)) })
    this.guard.protect(server)
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.options.listen.port, this.options.listen.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    this.status = 'open'
  }

  /** The address the broker listens on (the real port when the config says 0). */
  address (): { host: string, port: number } {
    const address = this.server?.address() as AddressInfo | null
    return { host: address?.address ?? this.options.listen.host, port: address?.port ?? this.options.listen.port }
  }

  describe (): Record<string, unknown> {
    const { host, port } = this.address()
    return { listen: `${host}:${port}`, clients: this.aedes?.connectedClients ?? 0, subscriberDrops: this.guard.subscriberDrops }
  }

  /** A client's connection failed: a protocol error is counted (`malformed`); every one is logged once. */
  private clientFailed (client: Client, err: Error): void {
    const clientId = client.id ?? null
    const reason = this.guard.classify(client.conn, err)
    if (reason !== null) this.emit('refused', reason, clientId)
    this.warnOnce(clientId, reason === null ? 'connection closed' : `connection closed: ${reason}`, err)
  }

  /** The guard closed a socket or refused a CONNECT: counted, and logged once per address and reason. */
  private guardRefused (notice: RefusalNotice): void {
    this.emit('refused', notice.reason, notice.clientId)
    this.warnOnce(notice.clientId, `connection refused: ${notice.reason}`, new Error(notice.message), notice.address)
  }

  private authorizePublish (client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void): void {
    // Publishes sluice makes itself (client null) are not sensor readings.
    if (client === null) return callback(null)
    const bad = badTopicReason(packet.topic)
    if (bad !== null) return this.refuse(client, 'bad-topic', `topic refused: ${bad}`, callback)
    const tooLarge = this.guard.payloadProblem(packet.payload)
    if (tooLarge !== null) return this.refuse(client, 'too-large', tooLarge, callback)
    if (!this.isForwarded(packet.topic)) return callback(null)
    let durable: Promise<void>
    try {
      durable = this.options.sink.append({
        time: this.clock(),
        topic: packet.topic,
        payload: typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
      }, { canWait: packet.qos !== 0 }).durable
    } catch (err) {
      return this.refuse(client, 'buffer-unavailable', `not accepting readings: ${(err as Error).message}`, callback)
    }
    // MQTT gives no way to slow a QoS 0 sender; its reading is buffered without waiting, or, when
    // the buffer holds readings back, dropped and announced by the buffer (issue 3, SPEC 2.6).
    if (packet.qos === 0) {
      // Nothing waits for it: a QoS 0 reading that is not stored is the buffer's to announce.
      durable.catch(() => {})
      return callback(null)
    }
    durable.then(() => { callback(null) }, (err: Error) => {
      this.refuse(client, 'buffer-unavailable', `reading not stored: ${err.message}`, callback)
    })
  }

  private refuse (client: Client, reason: RefusalReason, message: string, callback: (error: Error) => void): void {
    this.emit('refused', reason, client.id)
    this.warnOnce(client.id, message)
    callback(new BrokerRefusal(reason, message))
  }

  /** Logs a fault once per client and message, so one misbehaving sensor cannot flood the log. */
  private warnOnce (clientId: string | null, message: string, err?: Error, address?: string): void {
    const key = `${clientId ?? ''}\0${address ?? ''}\0${message}`
    if (this.warned.has(key)) return
    if (this.warned.size >= 10_000) this.warned.clear()
    this.warned.add(key)
    this.options.logger.warn({ clientId, address, err: err?.message }, message)
  }

  async close (): Promise<void> {
    this.closing ??= this.shutdown()
    return await this.closing
  }

  private async shutdown (): Promise<void> {
    this.status = 'closing'
    const server = this.server
    const closed = server === null
      ? Promise.resolve()
      : new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    const aedes = this.aedes
    if (aedes !== null) await new Promise<void>((resolve) => { aedes.close(() => { resolve() }) })
    await closed
    this.status = 'closed'
  }
}
