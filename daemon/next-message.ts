import type { GapReason, LogEntry } from '../buffer/index.js'
import type { PendingRange } from '../buffer/dead-letters.js'
import { Slot, position } from '../buffer/keys.js'
import type { GapAnnouncement, OutgoingEntry, UpstreamAdapter, UpstreamFormat, UpstreamMessage } from '../adapters/contract.js'

/** The upstream contract's gap reasons are the buffer's list, no more, no less (compile-time check). */
type SameSet<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
const gapReasonsAgree: SameSet<GapReason, GapAnnouncement['reason']> = true
void gapReasonsAgree

/** A gap event the forwarder sends in place of readings it set aside. */
export type SetAsideGap = Extract<OutgoingEntry, { kind: 'gap' }> & { pos: number }
export type Entry = LogEntry | SetAsideGap

export type NextMessage =
  /** `open`: the format has room for more entries than were available (a batch may wait for more) */
  | { kind: 'send', entries: Entry[], message: UpstreamMessage, open: boolean }
  /** the next entry alone is larger than the upstream's Maximum Packet Size: it can never go */
  | { kind: 'too-large', entry: Entry, bytes: number }

export interface NextMessageContext {
  format: UpstreamFormat
  upstream: Pick<UpstreamAdapter, 'limits' | 'packetSize'>
  deadLetters: { pendingFrom: (seq: number) => PendingRange | undefined }
  /** one entry per message: the forwarder is isolating a message the upstream may be refusing */
  isolate: boolean
}

/**
 * The next message from the read-ahead (never empty): a gap event when the next readings were set
 * aside, else as many entries as the format takes, never past a reading set aside and never past
 * the upstream's Maximum Packet Size.
 */
export function nextMessage (readAhead: readonly Entry[], ctx: NextMessageContext): NextMessage {
  const { format, upstream, deadLetters } = ctx
  const head = readAhead[0]
  let candidates = readAhead
  let closed = false
  if (head.kind === 'reading') {
    const range = deadLetters.pendingFrom(head.seq)
    if (range !== undefined && range.from <= head.seq) {
      const gap = gapFor(range)
      return { kind: 'send', entries: [gap], message: format.encode([gap]), open: false }
    }
    if (range !== undefined) {
      const stop = readAhead.findIndex((e) => e.kind === 'reading' && e.seq >= range.from)
      if (stop > 0) {
        candidates = readAhead.slice(0, stop)
        closed = true
      }
    }
  }
  const maxPacket = upstream.limits.maximumPacketSize
  const take = format.take(candidates, { maxEntries: ctx.isolate ? 1 : Number.POSITIVE_INFINITY, maxBytes: maxPacket })
  let entries = candidates.slice(0, Math.max(1, take.count))
  let message = format.encode(entries)
  // Without a Maximum Packet Size announced (always on MQTT 3.1.1) there is nothing to measure.
  if (Number.isFinite(maxPacket)) {
    // The format bounds the payload; the packet adds the topic and properties. Halve until it fits.
    while (upstream.packetSize(message) > maxPacket && entries.length > 1) {
      entries = entries.slice(0, Math.ceil(entries.length / 2))
      message = format.encode(entries)
      closed = true
    }
    const bytes = upstream.packetSize(message)
    if (bytes > maxPacket) return { kind: 'too-large', entry: head, bytes }
  }
  return { kind: 'send', entries, message, open: take.open && !closed && entries.length === readAhead.length }
}

/** The gap event sent in place of readings set aside: it takes the position of the last of them. */
function gapFor (range: PendingRange): SetAsideGap {
  return {
    kind: 'gap',
    pos: position(range.to, Slot.Reading),
    seq: range.to,
    epoch: range.epoch,
    time: range.at,
    data: { from: range.from, to: range.to, count: range.to - range.from + 1, reason: 'rejected' }
  }
}

/** A gap event made here, as opposed to the log's own (overflow, ttl), which sit in the Gap slot. */
export function isSetAsideGap (entry: Entry): boolean {
  return entry.kind === 'gap' && entry.pos === position(entry.seq, Slot.Reading)
}
