/**
 * The forwarder's in-flight window, kept apart from its plumbing so it can be read (and tested
 * against a model) on its own: which messages are published and not yet answered, the contiguous
 * acknowledged prefix (the ack cursor), and where a resend starts.
 *
 * Messages are named by the buffer positions they carry (`firstPos`..`lastPos`). Acknowledgements
 * may come in any order; the cursor only moves over a contiguous acknowledged prefix, so after a
 * disconnect the forwarder resends from the first unacknowledged position: a receiver sees at
 * most a resent suffix, never a reading out of order (guarantees §3).
 */

/** One message published upstream in the current session. */
export interface InFlightMessage {
  readonly firstPos: number
  readonly lastPos: number
  /** a gap event standing for readings already set aside */
  readonly gap: boolean
  readonly readings: number
  readonly events: number
  /** monotonic milliseconds when it was published */
  readonly sentAt: number
  acked: boolean
  /** the PUBACK reason code when the upstream refused it */
  rejected: number | null
  /** the window's session it was published in: an answer from an earlier one is ignored */
  readonly session: number
}

/** What an acknowledgement moved the cursor over. */
export interface Advance {
  /** the new cursor: everything up to here is acknowledged or passed over */
  ackedPos: number
  /** readings and events of the messages the cursor moved over */
  readings: number
  events: number
  /** nothing is left in the window */
  drained: boolean
}

export type Published = Omit<InFlightMessage, 'acked' | 'rejected' | 'session'>

export class InFlightWindow {
  private messages: InFlightMessage[] = []
  /** bumped by clear(): messages of an earlier session are no longer held */
  private session = 0
  /** messages held and not acknowledged: kept as a count, asked for on every publish */
  private _unacked = 0
  private _ackedPos: number
  private _sentPos: number

  /** `ackedPos`: the buffer's ack cursor, where the window starts */
  constructor (ackedPos: number) {
    this._ackedPos = ackedPos
    this._sentPos = ackedPos
  }

  /** Every entry up to here is acknowledged upstream (or passed over): the contiguous prefix. */
  get ackedPos (): number { return this._ackedPos }
  /** After a disconnect or a refusal, sending starts again after this position. */
  get resumeAfter (): number { return this._ackedPos }
  /** The highest position ever published: what is published again at or before it is a resend. */
  get sentPos (): number { return this._sentPos }
  /** Messages held: the unanswered ones and those acknowledged behind them. */
  get size (): number { return this.messages.length }
  /** Messages published and not acknowledged (refused ones included). */
  get unacked (): number { return this._unacked }
  /** The last position of the newest message held, or null when none is. */
  get lastPos (): number | null { return this.messages.length === 0 ? null : this.messages[this.messages.length - 1].lastPos }

  oldestUnacked (): InFlightMessage | undefined { return this.messages.find((m) => !m.acked) }
  /** The oldest message the upstream refused (and has not acknowledged since). */
  firstRefused (): InFlightMessage | undefined { return this.messages.find((m) => !m.acked && m.rejected !== null) }
  /** Every message held has its answer: acknowledged or refused. */
  allAnswered (): boolean { return this.messages.every((m) => m.acked || m.rejected !== null) }

  /** A message was published; `resent` when it carries nothing past what was published before. */
  sent (published: Published): { message: InFlightMessage, resent: boolean } {
    const message: InFlightMessage = {
      firstPos: published.firstPos,
      lastPos: published.lastPos,
      gap: published.gap,
      readings: published.readings,
      events: published.events,
      sentAt: published.sentAt,
      acked: false,
      rejected: null,
      session: this.session
    }
    this.messages.push(message)
    this._unacked++
    const resent = message.lastPos <= this._sentPos
    if (!resent) this._sentPos = message.lastPos
    return { message, resent }
  }

  /** The upstream acknowledged `message`; null when the cursor did not move (or it is from an old session). */
  acknowledge (message: InFlightMessage): Advance | null {
    // Held means: of this session and not yet acknowledged (an acknowledged one leaves with the prefix).
    if (message.session !== this.session || message.acked) return null
    message.acked = true
    message.rejected = null
    this._unacked--
    return this.advance()
  }

  /** The upstream refused `message` (MQTT 5 PUBACK reason >= 0x80). */
  refuse (message: InFlightMessage, reasonCode: number): void {
    if (message.session !== this.session || message.acked) return
    message.rejected = reasonCode
  }

  /** A message that will never be sent (set aside, passed over) counts as done, in its place. */
  passOver (firstPos: number, lastPos: number, at: number): Advance | null {
    if (lastPos <= this._ackedPos) return null
    if (lastPos > this._sentPos) this._sentPos = lastPos
    this.messages.push({ firstPos, lastPos, gap: false, readings: 0, events: 0, sentAt: at, acked: true, rejected: null, session: this.session })
    return this.advance()
  }

  /** A disconnect or a new session: forget what is in flight; sending resumes after the cursor. */
  clear (): void {
    this.messages = []
    this._unacked = 0
    this.session++
  }

  private advance (): Advance | null {
    let readings = 0
    let events = 0
    let moved = false
    while (this.messages.length > 0 && this.messages[0].acked) {
      const done = this.messages.shift() as InFlightMessage
      this._ackedPos = Math.max(this._ackedPos, done.lastPos)
      readings += done.readings
      events += done.events
      moved = true
    }
    return moved ? { ackedPos: this._ackedPos, readings, events, drained: this.messages.length === 0 } : null
  }
}
