/**
 * When a message the upstream will not take is set aside (docs/guarantees.md §8), kept apart from the forwarder's
 * plumbing so the rules can be read (and tested) on their own. Messages are named by the
 * position of their first entry.
 *
 * - Refused (MQTT 5 PUBACK reason >= 0x80): retried `rejectRetries` times, then set aside.
 * - Disconnected on ("poison pill": MQTT 3.1.1 brokers close the connection on what they refuse):
 *   a strike is a disconnect while the message was the oldest unacknowledged one, sent less than
 *   `strikeWindowMs` before. At the 2nd strike in a row the forwarder isolates it (one message in
 *   flight, one entry per message), because with a window in flight any of them may be the
 *   culprit; at `strikes` in a row, the last one isolated, it is set aside. A link that drops
 *   for reasons of its own rarely drops within seconds of the same message three times running,
 *   and then only with that message alone in flight.
 */
export interface SetAsidePolicyOptions {
  rejectRetries: number
  /** disconnects in a row that set a message aside (the last with it alone in flight) */
  strikes: number
  /** a disconnect counts against the oldest message only this soon after it was sent, in ms */
  strikeWindowMs: number
}

export type RejectDecision = { action: 'retry', attempt: number } | { action: 'set-aside', attempts: number }

export interface DisconnectInfo {
  /** first position of the oldest unacknowledged message in flight */
  oldest: number
  /** milliseconds since it was sent */
  sentAgoMs: number
  /** it was the only message in flight */
  isolated: boolean
}

export interface DisconnectDecision {
  /** send one message at a time until past what was in flight */
  isolate: boolean
  /** set the oldest message aside */
  setAside: boolean
  strikes: number
}

export class SetAsidePolicy {
  private readonly options: SetAsidePolicyOptions
  private readonly rejections = new Map<number, number>()
  private suspect: { pos: number, strikes: number } | null = null

  constructor (options: SetAsidePolicyOptions) {
    this.options = options
  }

  /** The message at `pos` was refused; `attempt` counts its refusals so far. */
  rejected (pos: number): RejectDecision {
    const attempt = (this.rejections.get(pos) ?? 0) + 1
    this.rejections.set(pos, attempt)
    if (attempt > this.options.rejectRetries) {
      this.rejections.delete(pos)
      return { action: 'set-aside', attempts: attempt }
    }
    return { action: 'retry', attempt }
  }

  /** The connection dropped with messages in flight. */
  disconnected (info: DisconnectInfo): DisconnectDecision {
    if (info.sentAgoMs > this.options.strikeWindowMs) {
      // Unanswered for that long: the link or the upstream stalled, not an answer to that message.
      this.suspect = null
      return { isolate: false, setAside: false, strikes: 0 }
    }
    const strikes = this.suspect?.pos === info.oldest ? this.suspect.strikes + 1 : 1
    this.suspect = { pos: info.oldest, strikes }
    const setAside = strikes >= this.options.strikes && info.isolated
    if (setAside) this.suspect = null
    return { isolate: strikes >= 2, setAside, strikes }
  }

  /** Everything up to `pos` is acknowledged (or set aside): forget what was held against it. */
  acknowledged (pos: number): void {
    if (this.suspect !== null && this.suspect.pos <= pos) this.suspect = null
    for (const p of this.rejections.keys()) if (p <= pos) this.rejections.delete(p)
  }
}
