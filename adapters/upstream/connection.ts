import { EventEmitter } from 'node:events'
import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions as TlsOptions } from 'node:tls'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { UpstreamRejection, type UpstreamLimits, type UpstreamMessage } from '../contract.js'
import { encodePublish, type MqttProtocol } from './publish-packet.js'
import { PacketFrames } from './frames.js'

/** TLS material and options for an mqtts:// upstream; the files are read by the daemon at start. */
export interface UpstreamTls {
  /** PEM CA certificate(s) to trust instead of Node's bundled roots */
  ca?: Buffer
  /** PEM client certificate and key, for mutual TLS */
  cert?: Buffer
  key?: Buffer
  /** the name sent in SNI and checked against the server's certificate; default: the URL's host */
  servername?: string
  /** ALPN protocols to offer (AWS IoT Core on port 443 wants `x-amzn-mqtt-ca`) */
  alpn?: string[]
}

export interface ConnectionOptions {
  url: string
  clientId: string
  username?: string
  password?: string
  protocol: MqttProtocol
  tls?: UpstreamTls
  /** milliseconds to wait for the CONNACK before the attempt fails */
  connectTimeout: number
  /** seconds; a PINGREQ goes out this often, and the link is dropped when the last one had no answer [MQTT-3.1.2-24] */
  keepalive: number
}

interface ConnectionEvents {
  /** the connection is gone; every publish not yet acknowledged has been answered with an error */
  close: [err: Error | undefined]
}

type PublishCallback = (err?: Error) => void

/** What an upstream that announces nothing allows [MQTT-3.2.2.3.3, 3.2.2.3.6]. */
export const NO_LIMITS: UpstreamLimits = { receiveMaximum: 65_535, maximumPacketSize: Number.POSITIVE_INFINITY }

const DEFAULT_PORTS: Record<string, number> = { 'mqtt:': 1883, 'tcp:': 1883, 'mqtts:': 8883, 'ssl:': 8883 }
const TLS_SCHEMES = new Set(['mqtts:', 'ssl:'])

/** CONNACK return codes of MQTT 3.1.1 [MQTT-3.2.2.3] and the commonest MQTT 5 reason codes. */
const CONNACK_REFUSALS: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad username or password',
  5: 'not authorized',
  0x80: 'unspecified error',
  0x81: 'malformed packet',
  0x82: 'protocol error',
  0x84: 'unsupported protocol version',
  0x85: 'client identifier not valid',
  0x86: 'bad username or password',
  0x87: 'not authorized',
  0x88: 'server unavailable',
  0x89: 'server busy',
  0x8a: 'banned',
  0x8c: 'bad authentication method',
  0x95: 'packet too large',
  0x97: 'quota exceeded',
  0x9c: 'use another server',
  0x9d: 'server moved',
  0x9f: 'connection rate exceeded'
}

/** PUBACK's first byte [MQTT-3.4.1]. */
const PUBACK = 0x40

/** The largest packet expected from the upstream: acks, and a CONNACK or DISCONNECT with properties. */
const MAX_SERVER_PACKET = 64 * 1024

/** The fixed two bytes of PINGREQ [MQTT-3.12]. */
const PINGREQ = Buffer.from([0xc0, 0x00])

/**
 * One MQTT connection to the upstream, QoS 1 publishing only: CONNECT and CONNACK, PUBLISH and
 * PUBACK, keepalive, DISCONNECT. It never reconnects (MqttUpstream does, with backoff) and keeps
 * no queue: a publish made while it is not connected fails at once, and when it closes every
 * publish still waiting for its PUBACK fails, so the forwarder resends from its cursor.
 *
 * Why not MQTT.js, which the local-broker subscription uses: publishing is sluice's hottest path,
 * and MQTT.js spends ~14 µs of CPU per QoS 1 message (its outgoing store, callbacks, `debug`
 * calls, one socket write per packet) where this spends ~6 µs (docs/benchmarks.md). Publishes
 * made in one turn of the event loop go out in one socket write (cork until the next tick).
 */
export class UpstreamConnection extends EventEmitter<ConnectionEvents> {
  private readonly socket: Socket
  private readonly protocol: MqttProtocol
  private readonly awaiting = new Map<number, PublishCallback>()
  private nextId = 1
  private corked = false
  private open = false
  private lastError: Error | undefined
  private pingUnanswered = false
  private keepaliveTimer: NodeJS.Timeout | undefined
  limits: UpstreamLimits = NO_LIMITS

  /**
   * Connects and resolves once the upstream's CONNACK accepts the session; rejects on a refusal,
   * a socket or TLS error, the connect timeout, or `signal` aborting first.
   */
  static async open (options: ConnectionOptions, signal: AbortSignal): Promise<UpstreamConnection> {
    const connection = new UpstreamConnection(options)
    try {
      await connection.handshake(options, signal)
    } catch (err) {
      connection.socket.on('error', () => {}) // a late error of a discarded socket is not news
      connection.socket.destroy()
      throw err
    }
    return connection
  }

  private constructor (options: ConnectionOptions) {
    super()
    this.protocol = options.protocol
    this.socket = dial(options)
    this.socket.setNoDelay(true)
  }

  get connected (): boolean {
    return this.open
  }

  private async handshake (options: ConnectionOptions, signal: AbortSignal): Promise<void> {
    const { socket } = this
    const protocolVersion = this.protocol === '5' ? 5 : 4
    const parser = mqttPacket.parser({ protocolVersion })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { fail(new Error(`no CONNACK within ${options.connectTimeout} ms`)) }, options.connectTimeout)
      const settle = (): void => {
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        socket.off('error', fail)
        socket.off('close', onClose)
        parser.removeAllListeners('packet')
      }
      const fail = (err: Error): void => { settle(); reject(err) }
      const onClose = (): void => { fail(new Error('connection closed before CONNACK')) }
      const onAbort = (): void => { fail(new Error('upstream closed')) }
      if (signal.aborted) return onAbort()
      signal.addEventListener('abort', onAbort)
      socket.on('error', fail)
      socket.on('close', onClose)
      parser.on('error', fail)
      parser.on('packet', (packet: Packet) => {
        if (packet.cmd !== 'connack') return fail(new Error(`expected CONNACK, got ${packet.cmd}`))
        const code = packet.returnCode ?? packet.reasonCode ?? 0
        if (code !== 0) return fail(new Error(`connection refused: ${CONNACK_REFUSALS[code] ?? 'reason'} (${code})`))
        settle()
        this.begin(parser, options.keepalive, packet.properties)
        resolve()
      })
      const frames = new PacketFrames(MAX_SERVER_PACKET)
      const onFrame = (packet: Buffer, bodyStart: number): void => {
        // A PUBACK, from its bytes: [MQTT-3.4.1] flags 0, the packet identifier, then (MQTT 5)
        // a reason code when it is not 0. Anything else goes to mqtt-packet's parser, whole.
        if (packet[0] === PUBACK && this.open && packet.length - bodyStart >= 2) {
          this.onPubAck(packet.readUInt16BE(bodyStart), packet.length - bodyStart >= 3 ? packet[bodyStart + 2] : 0)
        } else {
          parser.parse(packet)
        }
      }
      socket.on('data', (chunk: Buffer) => {
        const problem = frames.push(chunk, onFrame)
        if (problem !== null) socket.destroy(new Error(`malformed packet from the upstream: ${problem}`))
      })
      socket.write(mqttPacket.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion,
        clean: true,
        clientId: options.clientId,
        keepalive: options.keepalive,
        username: options.username,
        password: options.password === undefined ? undefined : Buffer.from(options.password)
      }))
    })
  }

  /**
   * The CONNACK accepted the session: from here on the connection's packets, errors and end go to
   * the running handlers (installed before anything else can arrive in the same chunk).
   */
  private begin (parser: ReturnType<typeof mqttPacket.parser>, keepalive: number, announced: { receiveMaximum?: number, maximumPacketSize?: number } = {}): void {
    this.limits = {
      receiveMaximum: announced.receiveMaximum ?? NO_LIMITS.receiveMaximum,
      maximumPacketSize: announced.maximumPacketSize ?? NO_LIMITS.maximumPacketSize
    }
    parser.removeAllListeners('error')
    parser.on('error', (err: Error) => { this.drop(new Error(`malformed packet from the upstream: ${err.message}`)) })
    parser.on('packet', (packet: Packet) => { this.onPacket(packet) })
    // The first error is the reason; a write racing the end adds only "stream destroyed".
    this.socket.on('error', (err: Error) => { this.lastError ??= err })
    this.socket.once('close', () => { this.onClose() })
    this.open = true
    this.keepaliveTimer = setInterval(() => { this.ping() }, keepalive * 1000).unref()
  }

  /**
   * Publishes at QoS 1; `done` is called once, with no error on a PUBACK that accepts it, an
   * UpstreamRejection on a PUBACK reason code >= 0x80 (MQTT 5; 0x10 "no matching subscribers"
   * is a success), or an error when the connection ends first; never before publish returns.
   */
  publish (message: UpstreamMessage, done: PublishCallback): void {
    if (!this.open) {
      process.nextTick(done, new Error('upstream not connected'))
      return
    }
    const id = this.takeId()
    this.awaiting.set(id, done)
    this.write(encodePublish(message, this.protocol, id))
  }

  /** The next packet identifier not awaiting a PUBACK [MQTT-2.3.1-2]. */
  private takeId (): number {
    if (this.awaiting.size >= 65_535) throw new Error('every packet identifier is in use')
    let id = this.nextId
    while (this.awaiting.has(id)) id = id === 65_535 ? 1 : id + 1
    this.nextId = id === 65_535 ? 1 : id + 1
    return id
  }

  private write (packet: Buffer): void {
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      process.nextTick(this.uncork)
    }
    this.socket.write(packet)
  }

  private readonly uncork = (): void => {
    this.corked = false
    this.socket.uncork()
  }

  private onPacket (packet: Packet): void {
    this.pingUnanswered = false
    switch (packet.cmd) {
      case 'puback':
        return this.onPubAck(packet.messageId ?? 0, packet.reasonCode ?? 0)
      case 'pingresp':
        return
      case 'disconnect': {
        // MQTT 5: the server says why it ends the connection [MQTT-3.14].
        const code = packet.reasonCode ?? 0
        return this.drop(new Error(`the upstream disconnected: ${CONNACK_REFUSALS[code] ?? 'reason'} (0x${code.toString(16)})`))
      }
      default:
        // A client that subscribes to nothing expects nothing else [MQTT-3.3.4]; a broker sending
        // it anyway (e.g. a QoS 1 PUBLISH) gets no answer it would wait for: drop the link.
        return this.drop(new Error(`unexpected ${packet.cmd} from the upstream`))
    }
  }

  private onPubAck (id: number, code: number): void {
    this.pingUnanswered = false
    const done = this.awaiting.get(id)
    if (done === undefined) return // a PUBACK for nothing sent on this connection: ignored
    this.awaiting.delete(id)
    if (code >= 0x80) return done(new UpstreamRejection(code, `PUBACK reason code 0x${code.toString(16)}`))
    done()
  }

  /** Keepalive: a PINGREQ each period; one left unanswered for a whole period ends the link. */
  private ping (): void {
    if (this.pingUnanswered) return this.drop(new Error('the upstream did not answer PINGREQ within the keepalive'))
    this.pingUnanswered = true
    this.write(PINGREQ)
  }

  private drop (err: Error): void {
    this.lastError ??= err
    this.open = false // publishes from here on fail at once, not into a destroyed socket
    this.socket.destroy()
  }

  private onClose (): void {
    this.open = false
    clearInterval(this.keepaliveTimer)
    const err = new Error('upstream connection closed')
    const waiting = [...this.awaiting.values()]
    this.awaiting.clear()
    for (const done of waiting) done(err)
    this.emit('close', this.lastError)
  }

  /** Sends DISCONNECT and closes; resolves once the socket is closed. Safe to call twice. */
  async end (): Promise<void> {
    const { socket } = this
    if (socket.closed) return
    const closed = new Promise<void>((resolve) => socket.once('close', () => { resolve() }))
    const wasOpen = this.open
    this.open = false // a publish from now on fails at once
    if (wasOpen && socket.writable) {
      this.uncork()
      socket.end(mqttPacket.generate({ cmd: 'disconnect' }))
      // A peer that never closes its side must not hold the stop up.
      setTimeout(() => socket.destroy(), 1000).unref()
    } else {
      socket.destroy()
    }
    await closed
  }
}

/** Opens the TCP or TLS socket the URL names. */
function dial (options: ConnectionOptions): Socket {
  const url = new URL(options.url)
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1') // an IPv6 address comes in brackets
  const port = url.port === '' ? DEFAULT_PORTS[url.protocol] : Number(url.port)
  if (!TLS_SCHEMES.has(url.protocol)) return netConnect({ host, port })
  const { tls } = options
  const tlsOptions: TlsOptions = {
    host,
    port,
    // Never talk to a server whose certificate does not check out, whatever the URL.
    rejectUnauthorized: true,
    ca: tls?.ca,
    cert: tls?.cert,
    key: tls?.key,
    // SNI carries names only (RFC 6066): none for an IP address unless one is configured.
    servername: tls?.servername ?? (isIP(host) === 0 ? host : undefined)
  }
  if (tls?.alpn !== undefined && tls.alpn.length > 0) tlsOptions.ALPNProtocols = tls.alpn
  return tlsConnect(tlsOptions)
}
