import { EventEmitter } from 'node:events'
import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt'
import { connectWithBackoff, delay } from './backoff.js'
import type { Logger } from 'pino'
import {
  type UpstreamAdapter, type UpstreamAdapterEvents, type UpstreamLimits, type UpstreamMessage,
  UpstreamRejection
} from './contract.js'
import { type MqttProtocol, publishPacketSize } from './upstream/packet-size.js'

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

export interface MqttUpstreamOptions {
  url: string
  clientId: string
  username?: string
  password?: string
  /** MQTT protocol version; 5 brings user properties, negative PUBACKs and the CONNACK limits */
  protocol: MqttProtocol
  tls?: UpstreamTls
  /** reconnect delays in milliseconds: exponential from min to max, with jitter */
  backoff: { min: number, max: number }
  logger: Logger
  /** milliseconds to wait for CONNACK before an attempt counts as failed */
  connectTimeout?: number
}

type Status = 'new' | 'running' | 'closing' | 'closed'

/** What an upstream that announces nothing allows [MQTT-3.2.2.3.3, 3.2.2.3.6]. */
const NO_LIMITS: UpstreamLimits = { receiveMaximum: 65_535, maximumPacketSize: Number.POSITIVE_INFINITY }

/**
 * The upstream MQTT connection (MQTT.js), QoS 1, MQTT 3.1.1 (what every cloud broker speaks) or
 * MQTT 5 (user properties for cloudevents-binary; the upstream's Receive Maximum and Maximum
 * Packet Size; PUBACK reason codes).
 *
 * MQTT.js's own reconnect runs on a fixed period with no jitter (a fleet would reconnect in
 * lockstep) and keeps an offline queue in memory; both are off here. This adapter reconnects
 * itself with p-retry (exponential, randomized), and publishes only while connected: when a
 * connection drops, every unacknowledged publish is rejected and the forwarder resends from its
 * cursor, so the backlog stays on disk and not in a client queue.
 */
export class MqttUpstream extends EventEmitter<UpstreamAdapterEvents> implements UpstreamAdapter {
  private readonly options: MqttUpstreamOptions
  private readonly abort = new AbortController()
  private client: MqttClient | null = null
  private readonly pending = new Set<(err: Error) => void>()
  private status: Status = 'new'
  private running: Promise<void> | null = null
  private _limits: UpstreamLimits = NO_LIMITS
  /** connections made so far; the first is not a reconnect */
  connections = 0

  constructor (options: MqttUpstreamOptions) {
    super()
    this.options = options
  }

  get connected (): boolean {
    return this.client?.connected === true
  }

  get limits (): UpstreamLimits { return this._limits }

  packetSize (message: UpstreamMessage): number {
    return publishPacketSize(message, this.options.protocol)
  }

  start (): void {
    if (this.status !== 'new') throw new Error(`the upstream adapter cannot start when ${this.status}`)
    this.status = 'running'
    this.running = this.keepConnected().catch((err: unknown) => {
      this.options.logger.error({ err }, 'upstream connection loop failed')
    })
  }

  private async keepConnected (): Promise<void> {
    const { backoff, logger } = this.options
    while (this.status === 'running') {
      let client: MqttClient
      try {
        client = await connectWithBackoff(async () => await this.connectOnce(), {
          backoff,
          signal: this.abort.signal,
          onFailure: (err, attempt) => {
            logger.warn({ err: err.message, attempt }, 'upstream connect failed; retrying with backoff')
          }
        })
      } catch (err) {
        if (this.status !== 'running') return
        throw err
      }
      // close() came while this attempt waited for its CONNACK: nobody will end this connection.
      if (this.status !== 'running') {
        await client.endAsync(true).catch(() => {})
        return
      }
      this.connections++
      this.client = client
      logger.info({ url: this.options.url, protocol: this.options.protocol, reconnect: this.connections > 1, limits: this._limits }, 'upstream connected')
      const closed = new Promise<Error | undefined>((resolve) => {
        let lastError: Error | undefined
        client.on('error', (err) => { lastError = err })
        client.once('close', () => { resolve(lastError) })
      })
      this.emit('up')
      const err = await closed
      this.client = null
      this._limits = NO_LIMITS
      this.failPending(new Error('upstream connection closed'))
      client.end(true)
      if (this.status !== 'running') return
      logger.warn({ err: err?.message }, 'upstream connection lost')
      this.emit('down', err)
      // A link that drops right after connecting must not become a hot reconnect loop.
      await delay(backoff.min * (1 + Math.random()), this.abort.signal)
    }
  }

  private clientOptions (): IClientOptions {
    const { clientId, username, password, connectTimeout, protocol, tls } = this.options
    const options: IClientOptions = {
      clientId,
      username,
      password,
      protocolVersion: protocol === '5' ? 5 : 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: connectTimeout ?? 10_000,
      keepalive: 30,
      queueQoSZero: false,
      // Never connect to a server whose certificate does not check out, whatever the URL.
      rejectUnauthorized: true
    }
    if (tls !== undefined) {
      if (tls.ca !== undefined) options.ca = tls.ca
      if (tls.cert !== undefined) options.cert = tls.cert
      if (tls.key !== undefined) options.key = tls.key
      // MQTT.js sends the URL's host as SNI unless it is an IP address (RFC 6066 allows names only).
      if (tls.servername !== undefined) options.servername = tls.servername
      if (tls.alpn !== undefined && tls.alpn.length > 0) options.ALPNProtocols = tls.alpn
    }
    return options
  }

  private async connectOnce (): Promise<MqttClient> {
    const client = mqtt.connect(this.options.url, this.clientOptions())
    return await new Promise<MqttClient>((resolve, reject) => {
      // MQTT.js listens to its own events too: remove only these listeners, never all.
      const settle = (): void => {
        this.abort.signal.removeEventListener('abort', onAbort)
        client.off('connect', onConnect)
        client.off('error', onError)
        client.off('close', onClose)
      }
      const onConnect = (connack: { properties?: { receiveMaximum?: number, maximumPacketSize?: number } }): void => {
        settle()
        const announced = connack.properties ?? {}
        this._limits = {
          receiveMaximum: announced.receiveMaximum ?? NO_LIMITS.receiveMaximum,
          maximumPacketSize: announced.maximumPacketSize ?? NO_LIMITS.maximumPacketSize
        }
        resolve(client)
      }
      const onError = (err: Error): void => { settle(); fail(err) }
      const onClose = (): void => { settle(); fail(new Error('connection closed before CONNACK')) }
      // close() does not wait out the connect timeout of an attempt in flight.
      const onAbort = (): void => { settle(); fail(new Error('upstream closed')) }
      const fail = (err: Error): void => {
        client.on('error', () => {}) // a late socket error on a discarded client is not news
        client.end(true)
        reject(err)
      }
      if (this.abort.signal.aborted) return onAbort()
      this.abort.signal.addEventListener('abort', onAbort)
      client.on('connect', onConnect)
      client.on('error', onError)
      client.on('close', onClose)
    })
  }

  async publish (message: UpstreamMessage): Promise<void> {
    const client = this.client
    if (client === null || !client.connected) throw new Error('upstream not connected')
    const options: IClientPublishOptions = { qos: 1 }
    if (this.options.protocol === '5' && message.properties !== undefined) options.properties = message.properties
    await new Promise<void>((resolve, reject) => {
      this.pending.add(reject)
      client.publish(message.topic, message.payload, options, (err) => {
        this.pending.delete(reject)
        if (err === undefined || err === null) return resolve()
        // MQTT.js answers a PUBACK reason >= 0x80 with an error carrying the code (0x10, "no
        // matching subscribers", is a success); the connection stays up.
        const code = (err as { code?: unknown }).code
        if (typeof code === 'number' && code >= 0x80) reject(new UpstreamRejection(code, err.message))
        else reject(err)
      })
    })
  }

  private failPending (err: Error): void {
    for (const reject of this.pending) reject(err)
    this.pending.clear()
  }

  async close (): Promise<void> {
    if (this.status === 'closing' || this.status === 'closed') return await this.running ?? undefined
    this.status = 'closing'
    this.abort.abort()
    const client = this.client
    // The forwarder has already given in-flight messages their moment; don't wait again.
    if (client !== null) await client.endAsync(true).catch(() => {})
    this.failPending(new Error('upstream closed'))
    await this.running
    this.status = 'closed'
  }
}
