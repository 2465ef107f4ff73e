import type { EventEmitter } from 'node:events'

/**
 * The contracts between sluice's parts and the outside world. Ingest adapters put readings into
 * a ReadingSink; the forwarder drives an UpstreamAdapter. Neither sees the buffer's implementation:
 * the daemon hands them these small interfaces.
 */

/** A reading as it arrives from a sensor. */
export interface Reading {
  /** ingest time, milliseconds since 1970 */
  time: number
  /** the sensor's MQTT topic */
  topic: string
  payload: Uint8Array
}

/** Where ingest adapters put readings: the durable buffer, seen through the daemon. */
export interface ReadingSink {
  /**
   * Gives the reading its seq at once and queues it for the next group commit. `durable` resolves
   * once the reading is on disk; only then may a sensor be acknowledged. Throws when the buffer is
   * not accepting readings (closing, or failed).
   */
  append: (reading: Reading) => { seq: number, durable: Promise<void> }
}

export interface IngestAdapterEvents {
  /** a client or message was refused; counted by the daemon */
  refused: [reason: RefusalReason, clientId: string | null]
}

export type RefusalReason = 'bad-topic' | 'buffer-unavailable' | 'malformed'

/** Something that receives readings from sensors and puts them into a ReadingSink. */
export interface IngestAdapter extends EventEmitter<IngestAdapterEvents> {
  readonly name: string
  /** starts receiving; resolves once sensors can connect */
  start: () => Promise<void>
  /** stops receiving; safe to call twice */
  close: () => Promise<void>
  /** what the adapter listens on or reads from, for logs and status */
  describe: () => Record<string, unknown>
}

/** One MQTT message to publish upstream. */
export interface UpstreamMessage {
  topic: string
  payload: Buffer
}

export interface UpstreamAdapterEvents {
  /** a connection is up; the forwarder (re)starts sending from its ack cursor */
  up: []
  /** the connection is gone; every publish not yet acknowledged has been rejected */
  down: [err: Error | undefined]
}

/** A connection to the upstream broker, kept up by the adapter (reconnecting with backoff). */
export interface UpstreamAdapter extends EventEmitter<UpstreamAdapterEvents> {
  readonly connected: boolean
  /** begins connecting; reconnects with exponential backoff and jitter until closed */
  start: () => void
  /**
   * Publishes at QoS 1; resolves on the upstream's acknowledgement, rejects if the connection
   * drops first (the forwarder then resends from its cursor on the next connection).
   */
  publish: (message: UpstreamMessage) => Promise<void>
  /** ends the connection and stops reconnecting; safe to call twice */
  close: () => Promise<void>
}

/** What the forwarder reads from the buffer and hands to an upstream format. */
export type OutgoingEntry =
  | { kind: 'reading', seq: number, epoch: string, time: number, topic: string, payload: Uint8Array }
  | { kind: 'epoch', seq: number, epoch: string, time: number, data: EpochAnnouncement }

/** The data of an `io.sluice.epoch` event [SPEC 2.2]. */
export interface EpochAnnouncement {
  epoch: string
  previous: string
  lastDurableSeq: number
  reason: string
}

/**
 * How entries become upstream messages (SPEC section 5). `take` says how many of the next
 * entries go into one message (1 for the CloudEvents formats; many for a batch format), and
 * `encode` makes that message.
 */
export interface UpstreamFormat {
  readonly name: string
  take: (entries: readonly OutgoingEntry[]) => number
  encode: (entries: readonly OutgoingEntry[]) => UpstreamMessage
}
