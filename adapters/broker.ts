import { EventEmitter } from 'node:events'
import { createServer, type Server, type AddressInfo, type Socket } from 'node:net'
import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes'
import type { Logger } from 'pino'
import type { IngestAdapter, IngestAdapterEvents, ReadingSink, RefusalReason } from './contract.js'
import { badTopicReason, forwardedTopics } from './topics.js'
import { maySubscribe } from './broker-acl.js'
import { BrokerAccess, newSession, PerKeyLogLimit, type AccessPolicyInput, type Session } from './broker-auth.js'
import { BrokerTlsListener, certificateUsername, type BrokerTlsOptions, type CertificateInfo, type TlsFileKey, type TlsFiles, type TlsMaterial } from './broker-tls.js'

/** A refused CONNECT is logged at most this often per client address. */
const AUTH_LOG_WINDOW_MS = 60_000
import { BrokerGuard, BrokerRefusal, DEFAULT_LIMITS, type BrokerLimits, type RefusalNotice } from './broker-guard.js'

export interface BrokerAdapterOptions {
  /** the plain listener; null: none (TLS only) */
  listen: { host: string, port: number } | null
  /** the TLS listener, with its files already read (readTlsFiles) */
  tls?: { options: BrokerTlsOptions, material: TlsMaterial }
  /** topic filters whose readings are forwarded; others are only delivered locally */
  topics: readonly string[]
  sink: ReadingSink
  logger: Logger
  clock?: () => number
  /** users, ACLs and the anonymous policy; default: anonymous clients only, allowed everything */
  access?: AccessPolicyInput
  /** default: the config's defaults (DEFAULT_LIMITS) */
  limits?: BrokerLimits
  /** monotonic milliseconds for the connection-rate limit; injectable so tests decide the time */
  now?: () => number
}

type Status = 'new' | 'opening' | 'open' | 'closing' | 'closed'

/**
 * The embedded MQTT broker sensors connect to (aedes, MQTT 3.1.1).
 *
 * aedes runs `authorizePublish` before it writes a QoS 1 PUBACK (lib/handlers/publish.js), so the
 * hook calls back only once the reading's group commit is on disk: PUBACK means durable
 * (README "What sluice guarantees"). Refusing a publish means calling back with an error, which closes that one client's
 * connection: MQTT 3.1.1 has no negative PUBACK.
 */
export class BrokerAdapter extends EventEmitter<IngestAdapterEvents> implements IngestAdapter {
  readonly name = 'broker'
  private readonly options: BrokerAdapterOptions
  private readonly isForwarded: (topic: string) => boolean
  private readonly clock: () => number
  private readonly warned = new Set<string>()
  private readonly access: BrokerAccess
  private readonly sessions = new WeakMap<Client, Session>()
  private readonly authLog: PerKeyLogLimit
  private readonly guard: BrokerGuard
  private aedes: Aedes | null = null
  private server: Server | null = null
  private tls: BrokerTlsListener | null = null
  private status: Status = 'new'
  private closing: Promise<void> | null = null

  constructor (options: BrokerAdapterOptions) {
    super()
    this.options = options
    this.isForwarded = forwardedTopics(options.topics)
    this.clock = options.clock ?? Date.now
    this.access = new BrokerAccess(options.access ?? { users: [], allowAnonymous: false, anonymous: {} })
    this.authLog = new PerKeyLogLimit(AUTH_LOG_WINDOW_MS, this.clock)
    this.guard = new BrokerGuard(options.limits ?? DEFAULT_LIMITS, (notice) => { this.guardRefused(notice) }, options.now)
  }

  /** New users and ACLs (SIGHUP): connected clients stay, and are checked against them from now on. */
  setAccess (access: AccessPolicyInput): void {
    this.access.update(access)
  }

  async start (): Promise<void> {
    if (this.status !== 'new') throw new Error(`the broker adapter cannot start when ${this.status}`)
    this.status = 'opening'
    const aedes = await Aedes.createBroker({
      authenticate: (client, username, password, done) => { this.authenticate(client, username ?? null, password ?? null, done) },
      authorizePublish: (client, packet, callback) => { this.authorizePublish(client, packet, callback) },
      authorizeSubscribe: (client, subscription, callback) => { this.authorizeSubscribe(client, subscription, callback) },
      preConnect: (client, packet, callback) => { callback(null, this.guard.preConnect(aedes, client, packet)) },
      authorizeForward: (client, packet) => this.guard.authorizeForward(client, packet),
      // the guard's own connect timeout closes first; aedes's stays as a backstop
      connectTimeout: (this.options.limits ?? DEFAULT_LIMITS).connectTimeoutMs * 2
    })
    aedes.on('clientError', (client, err) => { this.clientFailed(client, err) })
    aedes.on('connectionError', (client, err) => { this.clientFailed(client, err) })
    this.aedes = aedes
    const { listen, tls } = this.options
    if (listen !== null) {
      const server = createServer((socket) => { this.guard.accept(socket, (s) => { aedes.handle(s) }) })
      this.guard.protect(server)
      this.server = server
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(listen.port, listen.host, () => {
          server.off('error', reject)
          resolve()
        })
      })
    }
    if (tls !== undefined) {
      this.tls = await BrokerTlsListener.listen(tls.options, tls.material, {
        // the same guard as the plain listener, on the decrypted stream
        connection: (socket) => { this.guard.accept(socket, (s) => { aedes.handle(s) }) },
        handshakeError: (err, address) => { this.handshakeFailed(err, address) },
        protect: (server) => { this.guard.protect(server) }
      })
    }
    this.status = 'open'
  }

  /** The address of the plain listener (the real port when the config says 0); it throws when there is none. */
  address (): { host: string, port: number } {
    const { listen } = this.options
    if (listen === null) throw new Error('the embedded broker has no plain listener (ingest.broker.listen is null)')
    const address = this.server?.address() as AddressInfo | null
    return { host: address?.address ?? listen.host, port: address?.port ?? listen.port }
  }

  /** The address of the TLS listener, or null when it has none or has not started. */
  tlsAddress (): { host: string, port: number } | null {
    return this.tls?.address() ?? null
  }

  /**
   * Reads the TLS listener's files again and serves them to new handshakes; connected sensors
   * keep their connections. What changed (null: nothing, or no TLS listener); a TlsFilesError
   * keeps the current certificate.
   */
  async reloadTls (files: TlsFiles): Promise<{ changed: TlsFileKey[], certificate: CertificateInfo } | null> {
    return await (this.tls?.reload(files) ?? Promise.resolve(null))
  }

  /**
   * Sensors can connect from start to close; before and after, the gateway's own lifecycle is
   * what readiness reports.
   */
  get listening (): boolean { return true }

  describe (): Record<string, unknown> {
    const show = (a: { host: string, port: number }): string => a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`
    const tls = this.tls === null ? {} : { tls: show(this.tls.address()), certificate: this.tls.certificate }
    return { listen: this.options.listen === null ? null : show(this.address()), ...tls, clients: this.aedes?.connectedClients ?? 0, subscriberDrops: this.guard.subscriberDrops }
  }

  private authenticate (client: Client, username: string | null, password: Buffer | null, done: (error: AuthenticateError | null, success: boolean | null) => void): void {
    const remoteAddress = (client.conn as Partial<Socket>).remoteAddress
    this.access.authenticate({ username, password, certifiedUsername: certificateUsername(client.conn), remoteAddress }).then((outcome) => {
      if (outcome.ok) {
        this.sessions.set(client, newSession(outcome.username, client.id))
        return done(null, true)
      }
      this.emit('refused', 'auth', client.id)
      // One line per address per minute: a sensor with a stale password reconnects forever.
      if (this.authLog.take(remoteAddress ?? '')) {
        this.options.logger.warn({ address: remoteAddress, clientId: client.id, username, returnCode: outcome.returnCode }, `connection refused: ${outcome.why}`)
      }
      done(Object.assign(new BrokerRefusal('auth', outcome.why), { returnCode: outcome.returnCode }), false)
    }, (err: Error) => {
      // Only a broken scrypt call gets here; refuse rather than let the client in.
      this.options.logger.error({ err: err.message, clientId: client.id }, 'password check failed')
      done(Object.assign(new BrokerRefusal('auth', 'password check failed'), { returnCode: 3 as const }), false)
    })
  }

  /** The client's ACL; a client that got past CONNECT without a session (none should) gets nothing. */
  private aclOf (client: Client): ReturnType<BrokerAccess['aclFor']> | null {
    const session = this.sessions.get(client)
    return session === undefined ? null : this.access.aclFor(session)
  }

  private authorizeSubscribe (client: Client, subscription: Subscription, callback: (error: Error | null, subscription?: Subscription | null) => void): void {
    const acl = this.aclOf(client)
    if (acl !== null && maySubscribe(acl, subscription.topic)) return callback(null, subscription)
    // A refused filter gets the SUBACK failure code 0x80 and the connection stays up [MQTT-3.9.3].
    this.emit('refused', 'acl', client.id)
    this.warnOnce(client.id, `subscription refused by the ACL: ${JSON.stringify(subscription.topic)}`)
    callback(null, null)
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
    // Checked before the reading is appended: a refused publish never reaches the buffer.
    const session = this.sessions.get(client)
    if (session === undefined || !this.access.mayPublish(session, packet.topic)) {
      return this.refuse(client, 'acl', `publish refused by the ACL: ${JSON.stringify(packet.topic)}`, callback)
    }
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
    // the buffer holds readings back, dropped and announced by the buffer (docs/guarantees.md §6).
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

  /**
   * A TLS handshake that failed (no client certificate, one from another CA, plain MQTT on the TLS
   * port): logged once per client address and reason, as a scanner or a misconfigured sensor
   * retries forever.
   */
  private handshakeFailed (err: Error, address: string | undefined): void {
    // OpenSSL's errors carry a code and a reason ('peer did not return a certificate'); the message
    // adds the thread and source line.
    const { code, reason } = err as Error & { code?: string, reason?: string }
    const key = `\0tls\0${address ?? ''}\0${code ?? err.message}`
    if (this.warned.has(key)) return
    if (this.warned.size >= 10_000) this.warned.clear()
    this.warned.add(key)
    this.options.logger.warn({ address, code, err: reason ?? err.message.trim() }, 'TLS handshake failed, connection closed')
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
    const tlsClosed = this.tls?.close()
    const aedes = this.aedes
    if (aedes !== null) await new Promise<void>((resolve) => { aedes.close(() => { resolve() }) })
    await closed
    await tlsClosed
    this.status = 'closed'
  }
}
