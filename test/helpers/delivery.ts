/**
 * The check a crash, fuzz or outage test ends with: every reading the sensors saw PUBACKed has
 * arrived upstream, and the first arrival of each seq came in increasing order (resends only from
 * an earlier point), with no seq missing unless the test says other readings may share the stream.
 */
import type { Test } from 'tap'
import type { Receiver } from './receiver.js'
import { orderProblems, readingArrivals, readingKey, type Arrival } from './sensors.js'

export interface DeliveryCheck {
  /** how long to wait for the last PUBACKed reading upstream (default 60 s) */
  timeoutMs?: number
  /** one epoch only: a crash is not a power loss (default false) */
  oneEpoch?: boolean
  /** every seq from 1 to the highest arrived (default true) */
  gapless?: boolean
}

/** Waits until every reading in `acked` (readingKey) has arrived, then checks order; returns the arrivals. */
export async function checkDelivered (t: Test, receiver: Receiver, acked: Iterable<string>, check: DeliveryCheck = {}): Promise<Arrival[]> {
  const expected = new Set(acked)
  await receiver.waitFor((msgs) => {
    const seen = new Set(readingArrivals(msgs).map((a) => readingKey(a.sensor, a.n)))
    for (const k of expected) if (!seen.has(k)) return false
    return true
  }, check.timeoutMs ?? 60_000, `all ${expected.size} PUBACKed readings upstream`)
  const arrivals = readingArrivals(receiver.messages)
  t.pass(`all ${expected.size} PUBACKed readings arrived (${arrivals.length} arrivals)`)
  if (check.oneEpoch === true) t.equal(new Set(arrivals.map((a) => a.epoch)).size, 1, 'one epoch: a crash is not a power loss')
  const { problems, highest } = orderProblems(arrivals)
  t.same(problems, [], 'in seq order: runs, and resends only from an earlier point')
  if (check.gapless !== false) t.equal(new Set(arrivals.map((a) => a.seq)).size, highest, `no seq gap: every seq from 1 to ${highest} arrived`)
  return arrivals
}
