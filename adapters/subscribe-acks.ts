/**
 * The PUBACKs the subscribe adapter owes the local broker on one connection.
 *
 * MQTT.js hands received messages to `handleMessage` one at a time and handles the next only once
 * the previous one is acknowledged, so delaying its own PUBACK until a reading is durable would
 * put every message in a group commit of its own (one disk write per reading). Instead the
 * adapter lets MQTT.js go on at once without acknowledging, and this queue writes the PUBACKs
 * itself: each once its message is ready (stored in the buffer, or not to be stored), always in
 * the order the PUBLISHes arrived [MQTT-4.6.0-2], several in one socket write.
 */

/** The one thing the queue needs of a connection: a way to put bytes on the wire. */
export type WriteBytes = (bytes: Buffer) => void

interface Pending {
  messageId: number
  ready: boolean
}

export class AckQueue {
  private readonly write: WriteBytes
  private readonly onFlush: () => void
  private queue: Pending[] = []
  private head = 0
  private abandoned = false
  /** PUBACKs written so far */
  sent = 0

  /**
   * @param write puts bytes on the connection's socket
   * @param onFlush called after PUBACKs were written (the adapter reopens its window)
   */
  constructor (write: WriteBytes, onFlush: () => void) {
    this.write = write
    this.onFlush = onFlush
  }

  /** Messages received and not acknowledged yet. */
  get pending (): number {
    return this.queue.length - this.head
  }

  /**
   * Takes the place of a message in the ack order; the returned function says it is ready. A
   * message that is never made ready holds back every later PUBACK: the adapter drops the
   * connection instead (the broker then redelivers all of them).
   */
  add (messageId: number): () => void {
    const entry: Pending = { messageId, ready: false }
    this.queue.push(entry)
    return () => {
      entry.ready = true
      this.flush()
    }
  }

  /** The connection is gone: nothing more is written (the broker redelivers what it had). */
  abandon (): void {
    this.abandoned = true
    this.queue = []
    this.head = 0
  }

  private flush (): void {
    if (this.abandoned) return
    let end = this.head
    while (end < this.queue.length && this.queue[end].ready) end++
    const count = end - this.head
    if (count === 0) return
    this.write(pubacks(this.queue, this.head, end))
    this.sent += count
    this.head = end
    // Drop the acknowledged prefix now and then rather than shifting on every ack.
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    this.onFlush()
  }
}

/**
 * PUBACK packets for queue[from..to): fixed header 0x40, remaining length 2, then the packet
 * identifier [MQTT-3.4]. MQTT 5 allows the same four bytes for reason code 0 (Success) with no
 * properties [MQTT-3.4.2.1].
 */
function pubacks (queue: readonly Pending[], from: number, to: number): Buffer {
  const bytes = Buffer.allocUnsafe((to - from) * 4)
  for (let i = from, at = 0; i < to; i++, at += 4) {
    bytes[at] = 0x40
    bytes[at + 1] = 0x02
    bytes.writeUInt16BE(queue[i].messageId, at + 2)
  }
  return bytes
}
