import { EventEmitter } from 'node:events'
import type { IPublishPacket } from 'mqtt'
import type { Logger } from 'pino'
import { readPasswordFile } from '../config/index.js'
import { connectWithBackoff, delay } from './backoff.js'
import type { IngestAdapter, IngestAdapterEvents, ReadingSink, RefusalReason } from './contract.js'
import { type DeliveryStore, RecentDeliveries, digestOf } from './subscribe-deliveries.js'
import { Link } from './subscribe-link.js'
import { badTopicReason, forwardedTopics } from './topics.js'

export interface SubscribeAdapterOptions {
  url: string
  /** the persistent session's client id */
  clientId: string
  /** topic filters subscribed to */
  topics: readonly string[]
  qos: 0 | 1
  username?: string
  password?: string
  /** read at start when `password` is not given */
  passwordFile?: string
  /** where this subscription is in the config ("ingest.subscribe[0]"), for errors */
  configPath: string
  /** ingest.topics: readings on other topics are acknowledged and not stored */
  forward: readonly string[]
  sink: ReadingSink
  /** the record of recent deliveries, and what it needs to know of the buffer */
  deliveries: { store: DeliveryStore, epoch: string, recoveredSeq: number, distrust?: string }
  logger: Logger
  clock?: () => number
  /** reconnect delays in milliseconds: exponential from min to max, with jitter */
  backoff?: { min: number, max: number }
  /**
   * most messages received and not yet acknowledged (default 128: a whole burst fits in one
   * group commit, and memory stays bounded when the broker ignores its in-flight limit)
   */
  window?: number
  /** milliseconds a clean stop waits for received readings to be stored and acknowledged */
  closeGraceMs?: number
}

export interface SubscribeStats {
  /** connections made so far */
  connections: number
  /** messages received (QoS 0 and 1, redeliveries included) */
  received: number
  /** readings put into the buffer */
  stored: number
  /** redeliveries recognised as readings already stored, and not stored again (docs/guarantees.md §7) */
  redeliveries: number
  /** messages acknowledged and not stored: retained copies, topics not forwarded */
  skipped: number
  /** PUBACKs sent to the local broker */
  acked: number
}

type Status = 'new' | 'opening' | 'open' | 'closing' | 'closed'

/** A connection that lasted this long (ms) was not a flap: the next reconnect starts fresh. */
const STABLE_MS = 10_000

/**
 * Readings from an existing local broker (e.g. mosquitto): an MQTT client with a persistent
 * QoS 1 session, so the broker queues readings while sluice is away.
 *
 * Each message is acknowledged to the broker only once its reading is durable in the buffer
 * (docs/guarantees.md §1); MQTT.js goes on to the next message at once, so the readings of many messages
 * share a group commit, and the PUBACKs follow in arrival order (subscribe-acks.ts). Measured
 * here against mosquitto 2.0.11 draining a 30k backlog (forwarding upstream in the same
 * process, a shared 2-core machine): 15-21k readings/s, against 2.8-3.1k/s when each PUBACK
 * waits in MQTT.js for its own commit.
 *
 * When the buffer is slow the PUBACKs stop; at `window` unacknowledged messages the adapter
 * stops reading the socket, the broker's in-flight window (or, when mosquitto resumes a session
 * and sends its whole queue at once, TCP) fills and it stops sending: the subscription pauses
 * (docs/guarantees.md §6) and the broker keeps the rest queued. A redelivery after a crash is recognised and
 * not stored twice (subscribe-deliveries.ts says when it cannot be).
 */
export class SubscribeAdapter extends EventEmitter<IngestAdapterEvents> implements IngestAdapter {
  readonly name = 'subscribe'
  private readonly counts: Omit<SubscribeStats, 'acked'> = { connections: 0, received: 0, stored: 0, redeliveries: 0, skipped: 0 }
  /** PUBACKs sent on connections that are gone */
  private ackedBefore = 0
  private readonly options: SubscribeAdapterOptions
  private readonly isForwarded: (topic: string) => boolean
  private readonly clock: () => number
  private readonly abort = new AbortController()
  private readonly warned = new Set<string>()
  private deliveries: RecentDeliveries | null = null
  private password: string | undefined
  private link: Link | null = null
  private status: Status = 'new'
  private running: Promise<void> | null = null
  private closing: Promise<void> | null = null

  constructor (options: SubscribeAdapterOptions) {
    super()
    this.options = options
    this.isForwarded = forwardedTopics(options.forward)
    this.clock = options.clock ?? Date.now
  }

  get connected (): boolean {
    return this.link?.connected === true
  }

  /** For readiness: false while the local broker is out of reach (no readings come in). */
  get listening (): boolean {
    return this.connected
  }

  get stats (): SubscribeStats {
    return { ...this.counts, acked: this.ackedBefore + (this.link?.acks.sent ?? 0) }
  }

  /** Reads the password file and the record of recent deliveries, then connects in the background. */
  async start (): Promise<void> {
    if (this.status !== 'new') throw new Error(`the subscribe adapter cannot start when ${this.status}`)
    this.status = 'opening'
    const { url, clientId, deliveries, logger } = this.options
    this.password = this.options.password ?? await this.readPasswordFile()
    this.deliveries = RecentDeliveries.open({ ...deliveries, url, clientId, logger })
    this.status = 'open'
    // [contract: start resolves once readings can come in] Once subscribed, or once the first
    // attempt failed: the loop goes on trying in the background, and a local broker that already
    // holds sluice's session queues the readings meanwhile.
    let firstOutcome!: () => void
    const first = new Promise<void>((resolve) => { firstOutcome = resolve })
    this.running = this.keepConnected(firstOutcome).catch((err: unknown) => {
      logger.error({ err }, 'local broker connection loop failed')
    }).finally(firstOutcome)
    await first
  }

  describe (): Record<string, unknown> {
    const { url, clientId, topics } = this.options
    return { url, clientId, topics, connected: this.connected, ...this.stats }
  }

  private async readPasswordFile (): Promise<string | undefined> {
    const file = this.options.passwordFile
    if (file === undefined) return undefined
    return await readPasswordFile(file, `${this.options.configPath}.passwordFile`)
  }

  /** Connects and reconnects until closed; `firstOutcome` is called once subscribed or failed. */
  private async keepConnected (firstOutcome: () => void): Promise<void> {
    const { logger } = this.options
    const backoff = this.options.backoff ?? { min: 200, max: 10_000 }
    // Connections in a row that dropped soon after they were made (another client taking over
    // the session's client id, a broker refusing us after CONNACK): each waits longer.
    let flaps = 0
    while (this.status === 'open') {
      let link: Link
      try {
        link = await connectWithBackoff(async () => await this.connectOnce(), {
          backoff,
          signal: this.abort.signal,
          onFailure: (err, attempt) => {
            firstOutcome()
            logger.warn({ url: this.options.url, err: err.message, attempt }, 'local broker connect failed; retrying with backoff')
          }
        })
      } catch (err) {
        if (this.status !== 'open') return
        throw err
      }
      if (this.status !== 'open') {
        link.drop()
        return
      }
      this.counts.connections++
      this.link = link
      firstOutcome()
      if (!link.sessionPresent && this.counts.connections > 1) {
        logger.warn({ url: this.options.url, clientId: this.options.clientId }, 'the local broker kept no session for sluice: readings published while sluice was disconnected may be lost')
      }
      const level = flaps === 0 ? 'info' : 'debug'
      logger[level]({ url: this.options.url, clientId: this.options.clientId, topics: this.options.topics, sessionPresent: link.sessionPresent }, 'subscribed to the local broker')
      const connectedAt = Date.now()
      const err = await link.closed
      this.ackedBefore += link.acks.sent
      this.link = null
      if (this.status !== 'open') return
      flaps = Date.now() - connectedAt < STABLE_MS ? flaps + 1 : 0
      if (flaps <= 1 || flaps % 10 === 0) {
        logger.warn({ url: this.options.url, err: err?.message, dropsInARow: flaps }, 'local broker connection lost')
      }
      // A link that drops right after connecting must not become a hot reconnect loop.
      const wait = Math.min(backoff.max, backoff.min * 2 ** Math.min(flaps, 20))
      await delay(wait * (0.5 + Math.random()), this.abort.signal)
    }
  }

  private async connectOnce (): Promise<Link> {
    const { url, clientId, username, topics, qos, window } = this.options
    const link = new Link({
      url,
      clientId,
      username,
      password: this.password,
      topics,
      qos,
      window: window ?? 128,
      connectTimeout: 10_000,
      signal: this.abort.signal
    }, (l, packet, ready) => { this.onMessage(l, packet, ready) })
    await link.open()
    return link
  }

  private onMessage (link: Link, packet: IPublishPacket, ready: (() => void) | null): void {
    this.counts.received++
    const deliveries = this.deliveries as RecentDeliveries
    const messageId = packet.messageId ?? 0
    const topic = packet.topic
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
    const bad = badTopicReason(topic)
    if (bad !== null || !this.isForwarded(topic) || packet.retain) {
      if (bad !== null) this.refuse('bad-topic', `topic refused: ${bad}`)
      // A retained copy is what a (re)subscription replays, not a new reading: the live one
      // arrived with RETAIN 0 [MQTT-3.3.1-9].
      else this.counts.skipped++
      if (ready !== null) {
        deliveries.forget(messageId)
        ready()
      }
      return
    }
    if (ready === null) {
      // QoS 0: nothing to acknowledge and no way to slow the sender: stored without waiting, or
      // dropped (and announced by the buffer) when the buffer holds readings back (docs/guarantees.md §6).
      // Nothing waits for it: a reading that is not stored is the buffer's to announce.
      this.append(topic, payload, false)?.durable.catch(() => {})
      return
    }
    const digest = digestOf(topic, payload)
    const earlier = packet.dup ? deliveries.redeliveryOf(messageId, digest) : undefined
    let stored: Promise<void>
    if (earlier !== undefined) {
      this.counts.redeliveries++
      stored = earlier.durable
    } else {
      const appended = this.append(topic, payload, true)
      if (appended === null) {
        // Not stored, so not acknowledged; every later PUBACK would wait behind it.
        link.drop()
        return
      }
      deliveries.record(messageId, digest, appended.seq, appended.durable)
      stored = appended.durable
    }
    stored.then(ready, (err: Error) => {
      this.refuse('buffer-unavailable', `reading not stored: ${err.message}`)
      link.drop()
    })
  }

  private append (topic: string, payload: Uint8Array, canWait: boolean): { seq: number, durable: Promise<void> } | null {
    try {
      const appended = this.options.sink.append({ time: this.clock(), topic, payload }, { canWait })
      this.counts.stored++
      return appended
    } catch (err) {
      this.refuse('buffer-unavailable', `not accepting readings: ${(err as Error).message}`)
      return null
    }
  }

  private refuse (reason: RefusalReason, message: string): void {
    this.emit('refused', reason, null)
    // Once per kind of fault: a bad publisher on the local broker must not flood the journal.
    if (this.warned.has(message)) return
    if (this.warned.size >= 1000) this.warned.clear()
    this.warned.add(message)
    this.options.logger.warn({ url: this.options.url }, message)
  }

  /**
   * Stops taking messages, gives the ones received their moment to be stored and acknowledged,
   * disconnects (the session stays) and saves the record of recent deliveries. Safe to call twice.
   */
  async close (): Promise<void> {
    this.closing ??= this.shutdown()
    return await this.closing
  }

  private async shutdown (): Promise<void> {
    this.status = 'closing'
    this.abort.abort()
    const link = this.link
    if (link !== null) {
      link.stopped = true
      const grace = this.options.closeGraceMs ?? 2000
      let timer: NodeJS.Timeout | undefined
      await Promise.race([link.drained(), new Promise<void>((resolve) => { timer = setTimeout(resolve, grace) })])
      clearTimeout(timer)
      await link.end(grace)
    }
    await this.running
    this.deliveries?.close()
    this.status = 'closed'
  }
}
