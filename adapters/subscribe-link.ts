/**
 * One connection of the subscribe adapter to the local broker: an MQTT.js client with a
 * persistent session, whose received messages are acknowledged by an AckQueue rather than by
 * MQTT.js, and which stops reading the socket while too many are unacknowledged.
 */
import mqtt, { type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt'
import { AckQueue } from './subscribe-acks.js'

export interface LinkOptions {
  url: string
  clientId: string
  username?: string
  password?: string
  topics: readonly string[]
  qos: 0 | 1
  /** most messages received and not acknowledged; past it the link stops reading the socket */
  window: number
  /** milliseconds to wait for CONNACK and SUBACK */
  connectTimeout: number
  /** ends a connection attempt that is still under way */
  signal: AbortSignal
}

/**
 * What the adapter does with a received message: for QoS 1, call `ready` once its PUBACK may
 * go (and never, if it must not: then drop the link).
 */
export type MessageHandler = (link: Link, packet: IPublishPacket, ready: (() => void) | null) => void

/**
 * MQTT.js sends a QoS 1 message's PUBACK when `handleMessage` calls back without an error, and
 * calls the next `handleMessage` only after that. Calling back with this error makes it go on
 * to the next message without a PUBACK (mqtt 5.x lib/handlers/publish.js: `if (err) return
 * done(err)`); the AckQueue sends it later. test/subscribe.test.ts checks no PUBACK leaves early.
 */
const ACK_LATER = new Error('acknowledged later by the subscribe adapter')

export class Link {
  readonly client: MqttClient
  readonly acks: AckQueue
  /** resolves when the connection is gone, with its last error if any */
  readonly closed: Promise<Error | undefined>
  private readonly options: LinkOptions
  /** MQTT.js callbacks held back while the window is full */
  private held: Array<() => void> = []
  private drainWaiters = new Set<() => void>()
  private isClosed = false
  /** set once the adapter stops taking messages on this link (closing) */
  stopped = false
  sessionPresent = false

  constructor (options: LinkOptions, onMessage: MessageHandler) {
    this.options = options
    const { url, clientId, username, password, connectTimeout } = options
    this.client = mqtt.connect(url, {
      clientId,
      username,
      password,
      protocolVersion: 4,
      // A persistent session: the broker queues QoS 1 messages while sluice is away and
      // redelivers the unacknowledged ones [MQTT-3.1.2-4].
      clean: false,
      // Reconnects are the adapter's (with jitter); subscriptions are made on every connect.
      reconnectPeriod: 0,
      resubscribe: false,
      connectTimeout,
      keepalive: 30
    })
    // Reconnects make a new Link, so this client's stream is the one connection's socket.
    this.acks = new AckQueue((bytes) => {
      const stream = this.client.stream
      if (!this.isClosed && stream.writable) stream.write(bytes)
    }, () => { this.onFlush() })
    this.client.handleMessage = (packet, callback) => {
      if (this.stopped || this.isClosed || packet.qos === 2) {
        // Not taken: left unacknowledged, so the broker sends it again on the next connection.
        callback(ACK_LATER)
        return
      }
      onMessage(this, packet, packet.qos === 1 ? this.acks.add(packet.messageId as number) : null)
      if (packet.qos === 0) return callback()
      // The window: with too many unacknowledged, keep MQTT.js from reading on. The broker's own
      // in-flight window (mosquitto's 20) usually stops it first; but mosquitto 2.0.11 sends its
      // whole queue when a session resumes (2,303 PUBLISHes before the first PUBACK, measured),
      // and then the socket filling is what stops it.
      if (this.acks.pending >= this.options.window) this.held.push(() => { callback(ACK_LATER) })
      else callback(ACK_LATER)
    }
    let lastError: Error | undefined
    this.client.on('error', (err) => { lastError = err })
    this.closed = new Promise((resolve) => {
      this.client.once('close', () => {
        this.isClosed = true
        this.acks.abandon()
        this.releaseHeld()
        this.notifyDrain()
        resolve(lastError)
      })
    })
  }

  get connected (): boolean {
    return !this.isClosed && this.client.connected
  }

  /** Waits for CONNACK, then subscribes; rejects (and ends the client) if either fails. */
  async open (): Promise<void> {
    const { signal, topics, qos } = this.options
    try {
      if (signal.aborted) throw new Error('closed')
      const connack = await new Promise<IConnackPacket>((resolve, reject) => {
        const settle = (): void => {
          this.client.off('connect', onConnect)
          this.client.off('error', onError)
          this.client.off('close', onClose)
          signal.removeEventListener('abort', onAbort)
        }
        const onConnect = (packet: IConnackPacket): void => { settle(); resolve(packet) }
        const onError = (err: Error): void => { settle(); reject(err) }
        const onClose = (): void => { settle(); reject(new Error('connection closed before CONNACK')) }
        const onAbort = (): void => { settle(); reject(new Error('closed')) }
        this.client.on('connect', onConnect)
        this.client.on('error', onError)
        this.client.on('close', onClose)
        signal.addEventListener('abort', onAbort)
      })
      this.sessionPresent = connack.sessionPresent
      // Subscribing again on a session that has the subscription is harmless: queued messages
      // stay [MQTT-3.8.4-3]; the retained copies it re-sends are skipped by the adapter.
      const grants = await this.client.subscribeAsync(topics.map((topic) => topic), { qos })
      const refused = grants.filter((g) => g.qos === 128).map((g) => g.topic)
      if (refused.length > 0) throw new Error(`the local broker refused the subscription to ${refused.join(', ')}`)
      if (signal.aborted) throw new Error('closed')
    } catch (err) {
      this.client.on('error', () => {}) // a late socket error on a discarded client is not news
      this.client.end(true)
      throw err
    }
  }

  /** Resolves once every message received here is acknowledged, or the connection is gone. */
  async drained (): Promise<void> {
    if (this.isClosed || this.acks.pending === 0) return
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (!this.isClosed && this.acks.pending > 0) return
        this.drainWaiters.delete(check)
        resolve()
      }
      this.drainWaiters.add(check)
    })
  }

  /** Drops the connection at once: the broker redelivers every unacknowledged message. */
  drop (): void {
    this.client.end(true)
  }

  /** Ends the connection with a DISCONNECT (the session stays), bounded by `ms`. */
  async end (ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      this.client.endAsync(false).catch(() => {}),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) })
    ])
    clearTimeout(timer)
    await this.client.endAsync(true).catch(() => {})
  }

  private onFlush (): void {
    if (this.acks.pending < this.options.window) this.releaseHeld()
    this.notifyDrain()
  }

  private releaseHeld (): void {
    const held = this.held
    this.held = []
    for (const release of held) release()
  }

  private notifyDrain (): void {
    for (const check of [...this.drainWaiters]) check()
  }
}
