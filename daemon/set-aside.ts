import type { Logger } from 'pino'
import type { LogEntry } from '../buffer/index.js'
import type { DeadLetter, DeadLetterReason } from '../buffer/dead-letters.js'

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

/** A message to set aside, named by the positions it carries. */
export interface SetAsideRequest {
  firstPos: number
  lastPos: number
  /** the message is a gap event standing for readings already set aside */
  gap: boolean
  reason: DeadLetterReason
  reasonCode: number | null
  attempts: number
}

/** What setting a message aside reads and writes. */
export interface SetAsideParts {
  read: (after: number, limit: number) => Promise<LogEntry[]>
  add: (letters: readonly DeadLetter[]) => Promise<void>
  /** milliseconds since 1970, the time a reading is set aside */
  clock: () => number
  /** entries read at a time */
  chunk: number
  logger: Logger
}

/**
 * Puts a message's readings into the dead-letter store, so that the forwarder finds them set
 * aside and sends a gap event in their place; how many. 0 for a message without readings of its
 * own (an event, or the gap event standing for readings already set aside): the forwarder passes
 * over it.
 */
export async function setAsideReadings (request: SetAsideRequest, parts: SetAsideParts): Promise<number> {
  const { logger } = parts
  const readings: Array<Extract<LogEntry, { kind: 'reading' }>> = []
  if (!request.gap) {
    let after = request.firstPos - 1
    while (after < request.lastPos) {
      const chunk = await parts.read(after, parts.chunk)
      if (chunk.length === 0) break
      for (const e of chunk) if (e.pos <= request.lastPos && e.kind === 'reading') readings.push(e)
      after = chunk[chunk.length - 1].pos
    }
  }
  if (readings.length === 0) {
    logger.error({ firstPos: request.firstPos, lastPos: request.lastPos, reason: request.reason, reasonCode: request.reasonCode },
      'the upstream will not take an event: passed over')
    return 0
  }
  const at = parts.clock()
  const from = readings[0].seq
  const to = readings[readings.length - 1].seq
  await parts.add(readings.map((r) => ({
    seq: r.seq,
    epoch: r.epoch,
    time: r.time,
    topic: r.topic,
    payload: r.payload,
    at,
    reason: request.reason,
    reasonCode: request.reasonCode,
    attempts: request.attempts,
    from,
    to
  })))
  logger.warn({ from, to, reason: request.reason, reasonCode: request.reasonCode, attempts: request.attempts },
    'readings set aside as dead letters; a gap event announces them')
  return readings.length
}
