import type { Server, Socket } from 'node:net'
import type { Aedes, AedesPublishPacket, Client, ConnectPacket } from 'aedes'
import type { RefusalReason } from './contract.js'

/**
 * The limits the embedded broker enforces on sensors' sockets before and around aedes
 * (docs/sensors.md, "Limits at the embedded broker"). aedes 1.2 has no maximum packet size: a client that declares a huge Remaining Length
 * and withholds the body makes aedes buffer whatever arrives (aedes#1086). So every socket gets a
 * guard that reads the fixed header of each packet itself and closes the socket as soon as a
 * declared length is over the limit, before any of the body is buffered.
 */
export interface BrokerLimits {
  /** largest PUBLISH payload, bytes */
  maxPayload: number
  /** most sensors connected at once */
  maxClients: number
  /** a socket that has not sent its whole CONNECT by then is closed, ms */
  connectTimeoutMs: number
  /** new connections per second from one address (0: no limit) */
  connectRate: number
  /** new connections one address may open at once before the rate applies */
  connectBurst: number
  /** bytes waiting to be written to one local subscriber beyond which its messages are dropped */
  maxQueuedBytes: number
}

/** The config's defaults (`ingest.broker.*`), for a broker built without them (tests, embedding). */
export const DEFAULT_LIMITS: Readonly<BrokerLimits> = {
  maxPayload: 64 * 1024,
  maxClients: 1000,
  connectTimeoutMs: 10_000,
  connectRate: 10,
  connectBurst: 100,
  maxQueuedBytes: 1024 * 1024
}

/**
 * The largest packet a sensor may send: a PUBLISH with the largest payload and the longest topic
 * MQTT allows (2 length bytes + 65535), plus its packet id [MQTT-3.3.2]. Everything else a
 * well-behaved sensor sends (CONNECT, SUBSCRIBE) is smaller in practice.
 */
export function packetLimit (maxPayload: number): number {
  return maxPayload + 2 + 65_535 + 2
}

/** Why sluice closed a client's connection: carried by the error the connection is closed with. */
export class BrokerRefusal extends Error {
  readonly reason: RefusalReason
  constructor (reason: RefusalReason, message: string) {
    super(message)
    this.name = 'BrokerRefusal'
    this.reason = reason
  }
}

const CONNECT = 1

/**
 * Watches one socket's bytes as aedes reads them. It listens to 'data', which a paused-mode stream
 * (aedes reads with 'readable' + read()) emits from inside read() before the chunk reaches
 * aedes's parser: no copy, no second buffer; the cost is a few operations per packet header.
 * Calls `refuse` once, and destroys the socket, on:
 * - a declared Remaining Length over `limit` (`too-large`), when the fixed header is read;
 * - a Remaining Length of more than 4 bytes [MQTT-2.2.3], or packet type 0 or 15 (reserved in
 *   MQTT 3.1.1 [MQTT-2.2.1]), or a first packet that is not CONNECT [MQTT-3.1.0-1] (`malformed`);
 * - no complete CONNECT within `connectTimeoutMs` (`timeout`).
 */
export function guardSocket (
  socket: Socket,
  options: { limit: number, connectTimeoutMs: number },
  refuse: (reason: RefusalReason, message: string) => void
): void {
  let packets = 0
  /** bytes of the current packet's body still to come; -1 while reading a fixed header */
  let body = -1
  /** bytes of the current fixed header read so far (type byte + length bytes) */
  let headerBytes = 0
  let type = 0
  let length = 0
  let multiplier = 1
  let done = false

  const stop = (reason: RefusalReason, message: string): void => {
    if (done) return
    done = true
    clearTimeout(timer)
    socket.off('data', onData)
    refuse(reason, message)
    socket.destroy(new BrokerRefusal(reason, message))
  }
  const timer = setTimeout(() => { stop('timeout', `no CONNECT within ${options.connectTimeoutMs} ms`) }, options.connectTimeoutMs)
  const packetDone = (): void => {
    packets++
    if (packets === 1) clearTimeout(timer)
  }

  const onData = (chunk: Buffer): void => {
    const n = chunk.length
    let i = 0
    while (i < n) {
      if (body > 0) {
        const take = Math.min(body, n - i)
        body -= take
        i += take
        if (body === 0) { body = -1; packetDone() }
        continue
      }
      const byte = chunk[i++]
      if (headerBytes === 0) {
        type = byte >> 4
        if (type === 0 || type === 15) return stop('malformed', `reserved packet type ${type}`)
        if (packets === 0 && type !== CONNECT) return stop('malformed', 'the first packet is not CONNECT')
        headerBytes = 1
        length = 0
        multiplier = 1
        continue
      }
      length += (byte & 0x7f) * multiplier
      multiplier *= 128
      headerBytes++
      if ((byte & 0x80) !== 0) {
        // [MQTT-2.2.3]: at most 4 bytes of Remaining Length
        if (headerBytes === 5) return stop('malformed', 'Remaining Length longer than 4 bytes')
        continue
      }
      if (length > options.limit) return stop('too-large', `packet of ${length} bytes declared, over the limit of ${options.limit}`)
      headerBytes = 0
      body = length
      if (body === 0) { body = -1; packetDone() }
    }
  }
  socket.on('data', onData)
  socket.once('close', () => {
    done = true
    clearTimeout(timer)
  })
}

/**
 * New connections per client address: a token bucket each, `burst` deep, refilled at `rate` per
 * second (a plant's sensors behind one NAT reconnect together after a Wi-Fi outage: the burst lets
 * them in; a loop reconnecting as fast as it can gets `rate`). Full buckets are forgotten, so the
 * table holds only addresses that connected lately.
 */
export class ConnectRateLimiter {
  private readonly buckets = new Map<string, { tokens: number, at: number }>()
  private readonly ratePerMs: number
  private readonly burst: number
  private readonly now: () => number

  /** @param now monotonic milliseconds; injectable so tests decide the time */
  constructor (rate: number, burst: number, now: () => number = () => performance.now()) {
    this.ratePerMs = rate / 1000
    this.burst = Math.max(1, burst)
    this.now = now
  }

  /** Whether `address` may open a connection now (spends a token when it may). */
  allow (address: string): boolean {
    if (this.ratePerMs === 0) return true
    const t = this.now()
    const bucket = this.buckets.get(address)
    let tokens = this.burst
    if (bucket !== undefined) tokens = Math.min(this.burst, bucket.tokens + (t - bucket.at) * this.ratePerMs)
    if (tokens < 1) {
      if (bucket !== undefined) { bucket.tokens = tokens; bucket.at = t }
      return false
    }
    if (this.buckets.size >= 10_000 && bucket === undefined) this.forgetFull(t)
    this.buckets.set(address, { tokens: tokens - 1, at: t })
    return true
  }

  /** addresses tracked (for tests: the table does not grow without bound) */
  get size (): number { return this.buckets.size }

  private forgetFull (t: number): void {
    for (const [address, bucket] of this.buckets) {
      if (bucket.tokens + (t - bucket.at) * this.ratePerMs >= this.burst) this.buckets.delete(address)
    }
  }
}

/**
 * CONNACK with a refusal code, written by sluice itself before aedes sees the CONNECT: 0x02
 * identifier rejected, 0x03 server unavailable [MQTT-3.2.2.3]. The socket is closed once the
 * CONNACK is flushed [MQTT-3.2.2-5].
 */
export function refuseConnect (socket: Socket, returnCode: 2 | 3): void {
  if (socket.destroyed) return
  socket.end(Buffer.from([0x20, 0x02, 0x00, returnCode]))
  socket.once('finish', () => { socket.destroy() })
}

/** aedes errors that are not the client breaking the protocol (closes, timeouts, refusals). */
const NOT_MALFORMED = new Set([
  'connection closed', 'keep alive timeout', 'drain timeout', 'packet received not valid',
  'Client queue limit reached', 'unacceptable protocol version', 'identifier rejected',
  'Server unavailable', 'bad user name or password', 'not authorized', 'keep alive limit exceeded'
])

export interface RefusalNotice {
  reason: RefusalReason
  clientId: string | null
  address: string
  message: string
}

/**
 * The embedded broker's limits, wired into its server and aedes hooks by the broker adapter.
 * Every refusal goes to `refused` once, with the client's id when it is known.
 */
export class BrokerGuard {
  readonly limits: BrokerLimits
  /** messages not delivered to a local subscriber whose outgoing queue was full, since start */
  subscriberDrops = 0
  private readonly rate: ConnectRateLimiter
  private readonly refused: (notice: RefusalNotice) => void
  /** connections the guard refused: aedes's errors on them are not counted a second time */
  private readonly closedByGuard = new WeakSet<object>()

  constructor (limits: BrokerLimits, refused: (notice: RefusalNotice) => void, now?: () => number) {
    this.limits = limits
    this.refused = refused
    this.rate = new ConnectRateLimiter(limits.connectRate, limits.connectBurst, now)
  }

  /**
   * Sockets beyond maxClients (plus room for the CONNACKs that refuse them) are closed by the
   * server before aedes sees them: a flood of idle sockets cannot exhaust file descriptors.
   */
  protect (server: Server): void {
    server.maxConnections = this.limits.maxClients + 100
    server.on('drop', (data) => {
      this.refused({ reason: 'max-clients', clientId: null, address: data?.remoteAddress ?? '', message: 'too many open connections' })
    })
  }

  /** A new socket: refused over the connection rate, else guarded and handed to `handle` (aedes). */
  accept (socket: Socket, handle: (socket: Socket) => void): void {
    const address = socket.remoteAddress ?? ''
    if (!this.rate.allow(address)) {
      socket.destroy()
      this.refused({ reason: 'rate', clientId: null, address, message: 'connecting too often' })
      return
    }
    // aedes first: it reads in paused mode, which the guard's 'data' listener then leaves alone.
    handle(socket)
    guardSocket(socket, { limit: packetLimit(this.limits.maxPayload), connectTimeoutMs: this.limits.connectTimeoutMs }, (reason, message) => {
      this.closedByGuard.add(socket)
      this.refused({ reason, clientId: null, address, message })
    })
  }

  /** aedes `preConnect`: refusals aedes 1.2 does not make itself. */
  preConnect (aedes: Aedes, client: Client, packet: ConnectPacket): boolean {
    const socket = client.conn as Socket
    const address = socket.remoteAddress ?? ''
    // [MQTT-3.1.3-8]: a zero-length client id needs CleanSession 1; else CONNACK 0x02 and close.
    if (packet.clientId === '' && packet.clean === false) {
      refuseConnect(socket, 2)
      this.closedByGuard.add(socket)
      this.refused({ reason: 'malformed', clientId: null, address, message: 'zero-length client id without a clean session [MQTT-3.1.3-8]' })
      return false
    }
    // A sensor reconnecting under its own id takes its old session's place [MQTT-3.1.4-2].
    // (aedes keeps its clients by id in `clients`, which its types leave out)
    const clients = (aedes as unknown as { clients: Record<string, Client | undefined> }).clients
    if (aedes.connectedClients >= this.limits.maxClients && clients[packet.clientId] === undefined) {
      refuseConnect(socket, 3)
      this.closedByGuard.add(socket)
      this.refused({ reason: 'max-clients', clientId: packet.clientId, address, message: `${this.limits.maxClients} sensors already connected (maxClients)` })
      return false
    }
    return true
  }

  /** aedes `authorizeForward`: drops what a local subscriber is too slow to take. */
  authorizeForward (client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    if (client.conn.writableLength <= this.limits.maxQueuedBytes) return packet
    this.subscriberDrops++
    return null
  }

  /** A payload over maxPayload: the refusal message, or null when it fits. */
  payloadProblem (payload: Buffer | string): string | null {
    const bytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
    return bytes > this.limits.maxPayload ? `payload over maxPayload (${this.limits.maxPayload} bytes)` : null
  }

  /**
   * What an error aedes closed a connection for counts as: null when it is no refusal of a
   * client's input, or one already counted (the guard refused it; a chunk it saw may still reach
   * aedes's parser and fail there).
   */
  classify (conn: object, err: Error): RefusalReason | null {
    if (err instanceof BrokerRefusal || this.closedByGuard.has(conn)) return null
    if ((err as NodeJS.ErrnoException).code !== undefined) return null
    if (err.message === 'connect did not arrive in time') return 'timeout'
    return NOT_MALFORMED.has(err.message) ? null : 'malformed'
  }
}
