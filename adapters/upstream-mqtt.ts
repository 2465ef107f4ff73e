import { EventEmitter } from 'node:events'
import { connectWithBackoff, delay } from './backoff.js'
import type { Logger } from 'pino'
import type { UpstreamAdapter, UpstreamAdapterEvents, UpstreamLimits, UpstreamMessage } from './contract.js'
import { type ConnectionOptions, NO_LIMITS, UpstreamConnection } from './upstream/connection.js'
import { publishPacketSize } from './upstream/publish-packet.js'

/** The connection's options (adapters/upstream/connection.ts), and how to keep one up. */
export interface MqttUpstreamOptions extends Omit<ConnectionOptions, 'connectTimeout' | 'keepalive'> {
  /** reconnect delays in milliseconds: exponential from min to max, with jitter */
  backoff: { min: number, max: number }
  logger: Logger
  /** milliseconds to wait for CONNACK before an attempt counts as failed; default 10 s */
  connectTimeout?: number
  /** seconds between PINGREQs, and the longest one may go unanswered; default 30 */
  keepalive?: number
}

type Status = 'new' | 'running' | 'closing' | 'closed'

/**
 * The upstream, QoS 1, MQTT 3.1.1 (what every cloud broker speaks) or MQTT 5 (user properties for
 * cloudevents-binary; the upstream's Receive Maximum and Maximum Packet Size; PUBACK reason codes),
 * over one UpstreamConnection at a time.
 *
 * It reconnects with p-retry (exponential, randomized: a fleet restarting together must not retry
 * in lockstep) and publishes only while connected: when a connection drops, every unacknowledged
 * publish is rejected and the forwarder resends from its cursor, so the backlog stays on disk and
 * not in a client queue.
 */
export class MqttUpstream extends EventEmitter<UpstreamAdapterEvents> implements UpstreamAdapter {
  private readonly options: MqttUpstreamOptions
  private readonly abort = new AbortController()
  private connection: UpstreamConnection | null = null
  private status: Status = 'new'
  private running: Promise<void> | null = null
  /** connections made so far; the first is not a reconnect */
  connections = 0

  constructor (options: MqttUpstreamOptions) {
    super()
    this.options = options
  }

  get connected (): boolean {
    return this.connection?.connected === true
  }

  get limits (): UpstreamLimits { return this.connection?.limits ?? NO_LIMITS }

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
      let connection: UpstreamConnection
      try {
        connection = await connectWithBackoff(async () => await this.connectOnce(), {
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
      // close() came just as this attempt's CONNACK did: nobody else will end this connection.
      if (this.status !== 'running') {
        await connection.end()
        return
      }
      this.connections++
      const closed = new Promise<Error | undefined>((resolve) => connection.once('close', resolve))
      this.connection = connection
      logger.info({ url: this.options.url, protocol: this.options.protocol, reconnect: this.connections > 1, limits: connection.limits }, 'upstream connected')
      this.emit('up')
      const err = await closed
      this.connection = null
      if (this.status !== 'running') return
      logger.warn({ err: err?.message }, 'upstream connection lost')
      this.emit('down', err)
      // A link that drops right after connecting must not become a hot reconnect loop.
      await delay(backoff.min * (1 + Math.random()), this.abort.signal)
    }
  }

  private async connectOnce (): Promise<UpstreamConnection> {
    const { url, clientId, username, password, protocol, tls, connectTimeout, keepalive } = this.options
    const options = { url, clientId, username, password, protocol, tls, connectTimeout: connectTimeout ?? 10_000, keepalive: keepalive ?? 30 }
    return await UpstreamConnection.open(options, this.abort.signal)
  }

  publish (message: UpstreamMessage, done: (err?: Error) => void): void {
    const connection = this.connection
    if (connection === null) {
      process.nextTick(done, new Error('upstream not connected'))
      return
    }
    connection.publish(message, done)
  }

  async close (): Promise<void> {
    if (this.status === 'closing' || this.status === 'closed') return await this.running ?? undefined
    this.status = 'closing'
    this.abort.abort()
    // The forwarder has already given in-flight messages their moment; don't wait again. Ending
    // the connection answers every publish still waiting with an error.
    await this.connection?.end()
    await this.running
    this.status = 'closed'
  }
}
