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
   * once the reading is on disk; only then may a sensor be acknowledged. An adapter that does not
   * wait for it (QoS 0) still handles its rejection: the sink need not. Throws when the buffer is
   * not accepting readings (closing, or failed).
   */
  append: (reading: Reading, options?: AppendOptions) => { seq: number, durable: Promise<void>, dropped?: boolean }
}

/** How a reading meets a full buffer. */
export interface AppendOptions {
  /**
   * false for a sender that cannot be slowed down (an MQTT QoS 0 publish): while the buffer holds
   * readings back (full under `overflow: block`, or failing writes) its reading is dropped at once,
   * counted and announced by a gap event, instead of queued in memory (docs/guarantees.md §6). It still gets its
   * seq first (docs/guarantees.md §2); `dropped` is then true. Default true.
   */
  canWait?: boolean
}

export interface IngestAdapterEvents {
  /** a client or message was refused; counted by the daemon */
  refused: [reason: RefusalReason, clientId: string | null]
}

/**
 * Why a sensor's connection, CONNECT or publish was refused; `/metrics` and `sluice status` show
 * a count for each, at 0 before the first.
 */
export const REFUSAL_REASONS = [
  'auth', 'acl', 'too-large', 'rate', 'timeout', 'bad-topic', 'malformed', 'max-clients', 'buffer-unavailable'
] as const

export type RefusalReason = typeof REFUSAL_REASONS[number]

/** Something that receives readings from sensors and puts them into a ReadingSink. */
export interface IngestAdapter extends EventEmitter<IngestAdapterEvents> {
  readonly name: string
  /**
   * starts receiving; resolves once readings can come in: sensors can connect (the embedded
   * broker), the subscription is made (a subscription; or its first attempt failed, and it goes
   * on trying in the background)
   */
  start: () => Promise<void>
  /** stops receiving; safe to call twice */
  close: () => Promise<void>
  /** what the adapter listens on or reads from, for logs and status */
  describe: () => Record<string, unknown>
  /**
   * For readiness (/readyz): whether readings can come in through this adapter now (false: a
   * subscription whose local broker is out of reach), or null for an adapter that is no way in
   * for sensors (the gateway's own health readings). The gateway is not ready when no adapter
   * says true.
   */
  readonly listening: boolean | null
}

/** One MQTT message to publish upstream. */
export interface UpstreamMessage {
  topic: string
  payload: Buffer
  /** MQTT 5 properties (CloudEvents attributes in binary mode, the content type); left out on MQTT 3.1.1 */
  properties?: MessageProperties
}

export interface MessageProperties {
  contentType?: string
  userProperties?: Record<string, string>
}

/** What the upstream announced in its CONNACK for the connection that is up (MQTT 5 only). */
export interface UpstreamLimits {
  /** most QoS 1 publishes it accepts unacknowledged at once [MQTT-3.3.4-9]; 65535 when not announced */
  receiveMaximum: number
  /** the largest packet it accepts, in bytes [MQTT-3.1.2-24]; Infinity when not announced */
  maximumPacketSize: number
}

/**
 * The upstream answered a publish with a PUBACK reason code >= 0x80 (MQTT 5): it refused that
 * message and the connection goes on. The forwarder retries it and, past the limit, sets it aside.
 */
export class UpstreamRejection extends Error {
  readonly code = 'SLUICE_UPSTREAM_REJECTED'
  /** the PUBACK reason code, e.g. 0x87 Not authorized, 0x97 Quota exceeded */
  readonly reasonCode: number

  constructor (reasonCode: number, message: string) {
    super(message)
    this.name = 'UpstreamRejection'
    this.reasonCode = reasonCode
  }
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
  /** the upstream's limits on the connection that is up (defaults while none is) */
  readonly limits: UpstreamLimits
  /** the size in bytes of the PUBLISH packet `message` makes on this connection */
  packetSize: (message: UpstreamMessage) => number
  /**
   * Publishes at QoS 1; `done` is called once, never before publish returns: with no error on the
   * upstream's acknowledgement, an UpstreamRejection when the upstream refuses the message (MQTT 5
   * PUBACK reason >= 0x80), another error if the connection drops first (the forwarder then
   * resends from its cursor on the next connection). A callback, not a promise: this runs once
   * per message upstream, and a promise with its handlers was most of what the forwarder
   * allocated per message.
   */
  publish: (message: UpstreamMessage, done: (err?: Error) => void) => void
  /** ends the connection and stops reconnecting; safe to call twice */
  close: () => Promise<void>
}

/** What the forwarder reads from the buffer and hands to an upstream format. */
export type OutgoingEntry =
  | { kind: 'reading', seq: number, epoch: string, time: number, topic: string, payload: Uint8Array }
  | { kind: 'epoch', seq: number, epoch: string, time: number, data: EpochAnnouncement }
  | { kind: 'gap', seq: number, epoch: string, time: number, data: GapAnnouncement }

/**
 * The data of an `io.sluice.gap` event (docs/guarantees.md §4, docs/receiving.md): readings `from`..`to` (inclusive) of the
 * entry's epoch were dropped and will never come.
 */
export interface GapAnnouncement {
  from: number
  to: number
  count: number
  /**
   * `overflow`, `ttl` and `corrupt` come from the buffer, `rejected` from the forwarder. The list
   * is the buffer's (buffer/codec.ts GAP_REASONS; adapters do not import the buffer): the daemon
   * checks at compile time that this type names the same reasons (daemon/next-message.ts).
   */
  reason: 'overflow' | 'ttl' | 'rejected' | 'corrupt'
}

/** The data of an `io.sluice.epoch` event (docs/guarantees.md §2). */
export interface EpochAnnouncement {
  epoch: string
  /** null when the previous epoch could not be read (a buffer set aside unreadable) */
  previous: string | null
  /** null when it could not be read */
  lastDurableSeq: number | null
  /** `power-loss`, `repaired` or `set-aside` (buffer/codec.ts EPOCH_REASONS) */
  reason: string
}

/** The bounds the forwarder puts on the next message. */
export interface TakeLimits {
  /** most entries in it (1 while the forwarder isolates a message the upstream may be refusing) */
  maxEntries: number
  /**
   * most bytes of payload: the upstream's Maximum Packet Size (Infinity when none). The packet
   * adds its topic and properties on top; the forwarder halves a message that then does not fit.
   */
  maxBytes: number
}

export interface Take {
  /** how many of the entries go into the next message; at least 1 */
  count: number
  /**
   * the message took every entry offered and has room for more: the forwarder may wait up to the
   * format's `lingerMs` for more entries before sending it
   */
  open: boolean
}

/**
 * How entries become upstream messages (docs/receiving.md). `take` says how many of the next
 * entries go into one message (1 for the CloudEvents formats; many for a batch format), and
 * `encode` makes that message.
 */
export interface UpstreamFormat {
  readonly name: string
  /** milliseconds an open message may wait for more entries (0: it is sent at once) */
  readonly lingerMs: number
  /** the most entries one message carries (1 for a message per reading): sizes the forwarder's reads */
  readonly maxEntries: number
  take: (entries: readonly OutgoingEntry[], limits: TakeLimits) => Take
  encode: (entries: readonly OutgoingEntry[]) => UpstreamMessage
}
