/**
 * Recognising the local broker's redeliveries (docs/guarantees.md §7).
 *
 * A crash between writing a reading and acknowledging it makes the broker redeliver it on the
 * next connection, with the DUP flag and the same packet identifier [MQTT-3.3.1-1, MQTT-4.4.0-1].
 * This keeps, per subscription, the last few hundred deliveries it stored (packet id, a digest
 * of topic and payload, the seq it got), in memory and in a small append-only file next to the
 * buffer. A DUP delivery whose packet id and digest match a kept one is the same message: its
 * reading is not stored again, only acknowledged.
 *
 * When it is exact and when it cannot tell:
 * - A delivery's record is written (synchronously, into the page cache) right after its reading
 *   gets its seq, so before the group commit holding the reading is even started, and the PUBACK
 *   waits for that commit. After a process crash at any point, a reading that is in the buffer
 *   has its record: its redelivery is recognised.
 * - A record whose commit never happened (crash before it) is not trusted: records with a seq
 *   above the buffer's last durable seq at open are dropped, and the file is rewritten without
 *   them before anything is received, so they cannot come back once that seq is reused.
 * - After a power loss (the buffer begins a new epoch), with a new buffer, or a buffer LevelDB
 *   had to repair, the file is discarded: writes may be gone, so nothing is assumed stored.
 *   Redeliveries are then stored again, under new seqs. So are they when the file cannot be
 *   written (a full disk): logged once.
 * - The broker may reuse a packet id once it has our PUBACK. A reused id with another topic or
 *   payload never matches; with the same ones it would, so only the last CAPACITY deliveries
 *   are kept, far fewer than the 65535 ids a broker cycles through before reusing one, and a new
 *   delivery with an id replaces the record of that id. This assumes what mosquitto and aedes
 *   do: ids handed out in increasing order, messages delivered in that order. (A broker that
 *   dropped tens of thousands of queued messages could bring two equal ids within CAPACITY
 *   deliveries of each other; with the same topic and payload too, the later would be taken
 *   for the earlier.)
 * - The DUP flag narrows little: mosquitto 2.0.11 sets it on every message queued for a session
 *   when the session resumes, sent before or not (test/subscribe.test.ts's crash test counts
 *   them). The packet id and the digest decide.
 */
import { createHash } from 'node:crypto'
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import type { Logger } from 'pino'

/** How many recent deliveries are kept: well above the unacknowledged window (128). */
export const CAPACITY = 512
/** Past this size the file is rewritten with only the deliveries kept (about 2,500 records). */
const COMPACT_BYTES = 64 * 1024

const MAGIC = Buffer.from('SLDR')
const VERSION = 1
const DIGEST_BYTES = 12
/** packet id (2), seq (8), digest (12), checksum (4) */
const RECORD_BYTES = 2 + 8 + DIGEST_BYTES + 4
/** magic (4), version (1), epoch (16), subscription (12), checksum (4) */
const HEADER_BYTES = 4 + 1 + 16 + 12 + 4

/**
 * Where the record is kept between runs. Synchronous on purpose: a record must be in the page
 * cache before the reading's group commit starts, which is on the next microtask (a write of
 * 26 bytes costs about 5 µs). A seam for keeping it in the buffer's LevelDB instead.
 */
export interface DeliveryStore {
  /** the saved bytes, or undefined when nothing was saved */
  load: () => Uint8Array | undefined
  /** replaces the saved bytes atomically; `sync` also makes them survive a power cut */
  replace: (bytes: Uint8Array, options: { sync: boolean }) => void
  /** adds bytes at the end (after a crash, a torn last append is possible) */
  append: (bytes: Uint8Array) => void
  /** makes what was saved survive a power cut, and lets go of the file */
  close: () => void
  /** for logs */
  readonly where: string
}

/**
 * A store in one file: replaced through a temp file and a rename, appended to with one write per
 * delivery. Appends are not fsynced: the record is trusted only after a process crash (the page
 * cache survives it) or a clean stop (close syncs); a power loss makes the buffer begin a new
 * epoch, and then the record is discarded.
 */
export function fileDeliveryStore (path: string): DeliveryStore {
  const temp = `${path}.tmp`
  let fd: number | null = null
  const release = (sync: boolean): void => {
    if (fd === null) return
    const open = fd
    fd = null
    try {
      if (sync) fsyncSync(open)
    } finally {
      closeSync(open)
    }
  }
  return {
    where: path,
    load: () => {
      try {
        return readFileSync(path)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        throw err
      }
    },
    replace: (bytes, { sync }) => {
      release(false)
      const tempFd = openSync(temp, 'w')
      try {
        writeSync(tempFd, bytes)
        if (sync) fsyncSync(tempFd)
      } finally {
        closeSync(tempFd)
      }
      renameSync(temp, path)
    },
    append: (bytes) => {
      fd ??= openSync(path, 'a')
      writeSync(fd, bytes)
    },
    close: () => { release(true) }
  }
}

/** A file name for one subscription's record: readable, and unique per broker and client id. */
export function deliveryFileName (url: string, clientId: string): string {
  const readable = clientId.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40)
  return `subscribe-${readable}-${subscriptionId(url, clientId).toString('hex')}.deliveries`
}

function subscriptionId (url: string, clientId: string): Buffer {
  return createHash('sha256').update(`${url}\0${clientId}`).digest().subarray(0, 12)
}

/** Identifies a message's content: its topic and payload. */
export function digestOf (topic: string, payload: Uint8Array): Buffer {
  return createHash('sha256').update(topic).update('\0').update(payload).digest().subarray(0, DIGEST_BYTES)
}

export interface Delivery {
  digest: Buffer
  seq: number
  /** resolves once the reading is durable; rejects if it is not stored */
  durable: Promise<void>
}

export interface RecentDeliveriesOptions {
  store: DeliveryStore
  /** the subscription: a record made for another broker or client id is not used */
  url: string
  clientId: string
  /** the buffer's epoch now (32 hex characters): a record of another epoch is discarded */
  epoch: string
  /** the buffer's last durable seq when it was opened, before anything was appended */
  recoveredSeq: number
  /** set when what the buffer holds cannot be vouched for (it was repaired): the record is discarded */
  distrust?: string
  logger: Logger
}

export class RecentDeliveries {
  private readonly options: RecentDeliveriesOptions
  /** by packet id, least recent first (a Map keeps insertion order) */
  private readonly entries = new Map<number, Delivery>()
  private fileBytes = 0
  /** the file may end in a torn write: rewrite it whole next time */
  private rewrite = false
  private warned = false

  private constructor (options: RecentDeliveriesOptions) {
    this.options = options
  }

  /**
   * Loads what earlier runs wrote and keeps what can be trusted, then rewrites the file with only
   * that (synced), before any delivery is received.
   */
  static open (options: RecentDeliveriesOptions): RecentDeliveries {
    const deliveries = new RecentDeliveries(options)
    let bytes: Uint8Array | undefined
    try {
      bytes = options.store.load()
    } catch (err) {
      deliveries.warn(err, 'cannot read the record of recent deliveries; redeliveries of readings stored before this start will be stored again')
    }
    if (bytes !== undefined && options.distrust !== undefined) {
      options.logger.info({ file: options.store.where, why: options.distrust }, 'the record of recent deliveries is discarded, redeliveries will be stored again')
    } else if (bytes !== undefined) {
      deliveries.restore(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
    }
    deliveries.compact(true)
    return deliveries
  }

  get size (): number {
    return this.entries.size
  }

  /** The stored delivery this message is a redelivery of, if it is one that can be recognised. */
  redeliveryOf (messageId: number, digest: Buffer): Delivery | undefined {
    const entry = this.entries.get(messageId)
    return entry !== undefined && entry.digest.equals(digest) ? entry : undefined
  }

  /**
   * Keeps a delivery whose reading just got `seq` (call it before returning to the event loop:
   * the record must be written before the reading's group commit starts).
   */
  record (messageId: number, digest: Buffer, seq: number, durable: Promise<void>): void {
    const entry: Delivery = { digest, seq, durable }
    this.entries.delete(messageId)
    this.entries.set(messageId, entry)
    if (this.entries.size > CAPACITY) this.entries.delete(this.entries.keys().next().value as number)
    // Not stored after all (the write failed for good): nothing to recognise a redelivery by.
    durable.catch(() => { if (this.entries.get(messageId) === entry) this.entries.delete(messageId) })
    if (this.rewrite || this.fileBytes + RECORD_BYTES > COMPACT_BYTES) this.compact(false)
    else this.append(encodeRecord(messageId, seq, digest))
  }

  /**
   * A delivery with this packet id that is not stored (not forwarded, refused): the broker has
   * reused the id, so it has our PUBACK for the delivery that had it before, which can no longer
   * be redelivered. (Not written down: a record that outlives this can only match a message
   * with the same id, topic and payload, CAPACITY deliveries later at the earliest.)
   */
  forget (messageId: number): void {
    this.entries.delete(messageId)
  }

  /** Syncs the file and lets go of it (a clean stop). */
  close (): void {
    try {
      this.options.store.close()
    } catch (err) {
      this.warn(err, 'cannot sync the record of recent deliveries')
    }
  }

  /**
   * Failures are logged once and otherwise ignored: without the record a crash only makes
   * redeliveries be stored twice, which at-least-once allows.
   */
  private append (bytes: Buffer): void {
    try {
      this.options.store.append(bytes)
      this.fileBytes += bytes.length
    } catch (err) {
      this.rewrite = true
      this.warn(err, 'cannot write the record of recent deliveries; a crash may make readings be stored twice')
    }
  }

  /** Rewrites the file with the deliveries kept, and nothing else. */
  private compact (sync: boolean): void {
    const { url, clientId, epoch } = this.options
    const parts = [encodeHeader(epoch, subscriptionId(url, clientId))]
    for (const [messageId, { seq, digest }] of this.entries) parts.push(encodeRecord(messageId, seq, digest))
    const bytes = Buffer.concat(parts)
    try {
      this.options.store.replace(bytes, { sync })
      this.fileBytes = bytes.length
      this.rewrite = false
    } catch (err) {
      this.rewrite = true
      this.warn(err, 'cannot write the record of recent deliveries; a crash may make readings be stored twice')
    }
  }

  private restore (bytes: Buffer): void {
    const { url, clientId, epoch, recoveredSeq, logger } = this.options
    const header = decodeHeader(bytes)
    if (header === null) {
      logger.warn({ file: this.options.store.where }, 'the record of recent deliveries is unreadable; ignoring it')
      return
    }
    if (!header.subscription.equals(subscriptionId(url, clientId))) return
    if (header.epoch !== epoch) {
      logger.info({ file: this.options.store.where }, 'the buffer has a new epoch: the record of recent deliveries is discarded, redeliveries will be stored again')
      return
    }
    // Later records of a packet id replace earlier ones: the broker reused the id, so it had our
    // PUBACK for the earlier one. A torn last append (a crash mid-write) ends the scan.
    const stored = Promise.resolve()
    for (let at = HEADER_BYTES; at + RECORD_BYTES <= bytes.length; at += RECORD_BYTES) {
      const record = decodeRecord(bytes.subarray(at, at + RECORD_BYTES))
      if (record === null) break
      this.entries.delete(record.messageId)
      this.entries.set(record.messageId, { digest: record.digest, seq: record.seq, durable: stored })
    }
    let untrusted = 0
    for (const [messageId, { seq }] of this.entries) {
      // Written before its commit, and the commit never happened.
      if (seq > recoveredSeq) { this.entries.delete(messageId); untrusted++ }
    }
    while (this.entries.size > CAPACITY) this.entries.delete(this.entries.keys().next().value as number)
    logger.debug({ entries: this.entries.size, untrusted }, 'record of recent deliveries loaded')
  }

  private warn (err: unknown, message: string): void {
    if (this.warned) return
    this.warned = true
    this.options.logger.warn({ err: (err as Error).message, file: this.options.store.where }, message)
  }
}

function encodeHeader (epoch: string, subscription: Buffer): Buffer {
  const bytes = Buffer.alloc(HEADER_BYTES)
  MAGIC.copy(bytes, 0)
  bytes[4] = VERSION
  Buffer.from(epoch, 'hex').copy(bytes, 5, 0, 16)
  subscription.copy(bytes, 21)
  bytes.writeUInt32BE(fnv1a(bytes.subarray(0, HEADER_BYTES - 4)), HEADER_BYTES - 4)
  return bytes
}

function decodeHeader (bytes: Buffer): { epoch: string, subscription: Buffer } | null {
  if (bytes.length < HEADER_BYTES || !bytes.subarray(0, 4).equals(MAGIC) || bytes[4] !== VERSION) return null
  if (fnv1a(bytes.subarray(0, HEADER_BYTES - 4)) !== bytes.readUInt32BE(HEADER_BYTES - 4)) return null
  return { epoch: bytes.subarray(5, 21).toString('hex'), subscription: Buffer.from(bytes.subarray(21, 33)) }
}

function encodeRecord (messageId: number, seq: number, digest: Buffer): Buffer {
  const bytes = Buffer.allocUnsafe(RECORD_BYTES)
  bytes.writeUInt16BE(messageId, 0)
  bytes.writeUInt32BE(Math.floor(seq / 2 ** 32), 2)
  bytes.writeUInt32BE(seq % 2 ** 32, 6)
  digest.copy(bytes, 10, 0, DIGEST_BYTES)
  bytes.writeUInt32BE(fnv1a(bytes.subarray(0, RECORD_BYTES - 4)), RECORD_BYTES - 4)
  return bytes
}

function decodeRecord (bytes: Buffer): { messageId: number, seq: number, digest: Buffer } | null {
  if (fnv1a(bytes.subarray(0, RECORD_BYTES - 4)) !== bytes.readUInt32BE(RECORD_BYTES - 4)) return null
  return {
    messageId: bytes.readUInt16BE(0),
    seq: bytes.readUInt32BE(2) * 2 ** 32 + bytes.readUInt32BE(6),
    digest: Buffer.from(bytes.subarray(10, 10 + DIGEST_BYTES))
  }
}

/** FNV-1a, 32 bits: enough to tell a torn or garbled record from a written one. */
function fnv1a (bytes: Uint8Array): number {
  let hash = 0x811c9dc5
  for (const byte of bytes) hash = Math.imul(hash ^ byte, 0x01000193)
  return hash >>> 0
}
