import { EventEmitter } from 'node:events'
import mqtt, { type MqttClient } from 'mqtt'
import pRetry from 'p-retry'
import type { Logger } from 'pino'
import type { UpstreamAdapter, UpstreamAdapterEvents, UpstreamMessage } from './contract.js'

export interface MqttUpstreamOptions {
  url: string
  clientId: string
  username?: string
  password?: string
  /** reconnect delays in milliseconds: exponential from min to max, with jitter */
  backoff: { min: number, max: number }
  logger: Logger
  /** milliseconds to wait for CONNACK before an attempt counts as failed */
  connectTimeout?: number
}

type Status = 'new' | 'running' | 'closing' | 'closed'

/**
 * The upstream MQTT connection (MQTT.js), QoS 1, MQTT 3.1.1 (what every cloud broker speaks).
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
  /** connections made so far; the first is not a reconnect */
  connections = 0

  constructor (options: MqttUpstreamOptions) {
    super()
    this.options = options
  }

  get connected (): boolean {
    return this.client?.connected === true
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
        client = await pRetry(async () => await this.connectOnce(), {
          retries: Number.POSITIVE_INFINITY,
          factor: 2,
          minTimeout: backoff.min,
          maxTimeout: backoff.max,
          randomize: true,
          signal: this.abort.signal,
          onFailedAttempt: ({ error, attemptNumber }) => {
            // Log the first failure and then every tenth: an outage of days must not fill the journal.
            if (attemptNumber === 1 || attemptNumber % 10 === 0) {
              logger.warn({ err: error.message, attempt: attemptNumber }, 'upstream connect failed; retrying with backoff')
            }
          }
        })
      } catch (err) {
        if (this.status !== 'running') return
        throw err
      }
      this.connections++
      this.client = client
      logger.info({ url: this.options.url, reconnect: this.connections > 1 }, 'upstream connected')
      const closed = new Promise<Error | undefined>((resolve) => {
        let lastError: Error | undefined
        client.on('error', (err) => { lastError = err })
        client.once('close', () => { resolve(lastError) })
      })
      this.emit('up')
      const err = await closed
      this.client = null
      this.failPending(new Error('upstream connection closed'))
      client.end(true)
      if (this.status !== 'running') return
      logger.warn({ err: err?.message }, 'upstream connection lost')
      this.emit('down', err)
      // A link that drops right after connecting must not become a hot reconnect loop.
      await delay(backoff.min * (1 + Math.random()), this.abort.signal)
    }
  }

  private async connectOnce (): Promise<MqttClient> {
    const { url, clientId, username, password, connectTimeout } = this.options
    const client = mqtt.connect(url, {
      clientId,
      username,
      password,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: connectTimeout ?? 10_000,
      keepalive: 30,
      queueQoSZero: false
    })
    return await new Promise<MqttClient>((resolve, reject) => {
      // MQTT.js listens to its own events too: remove only these listeners, never all.
      const settle = (): void => {
        client.off('connect', onConnect)
        client.off('error', onError)
        client.off('close', onClose)
      }
      const onConnect = (): void => { settle(); resolve(client) }
      const onError = (err: Error): void => { settle(); fail(err) }
      const onClose = (): void => { settle(); fail(new Error('connection closed before CONNACK')) }
      const fail = (err: Error): void => {
        client.on('error', () => {}) // a late socket error on a discarded client is not news
        client.end(true)
        reject(err)
      }
      client.on('connect', onConnect)
      client.on('error', onError)
      client.on('close', onClose)
    })
  }

  async publish (message: UpstreamMessage): Promise<void> {
    const client = this.client
    if (client === null || !client.connected) throw new Error('upstream not connected')
    await new Promise<void>((resolve, reject) => {
      this.pending.add(reject)
      client.publish(message.topic, message.payload, { qos: 1 }, (err) => {
        this.pending.delete(reject)
        if (err !== undefined && err !== null) reject(err)
        else resolve()
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

async function delay (ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms)
    function done (): void {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done)
  })
}
