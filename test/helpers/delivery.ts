/**
 * The check a crash, fuzz or outage test ends with: every reading the sensors saw PUBACKed has
 * arrived upstream, and the first arrival of each seq came in increasing order (resends only from
 * an earlier point), with no seq missing unless the test says other readings may share the stream.
 */
import type { Test } from 'tap'
import type { Receiver } from './receiver.js'
import { orderProblems, readingArrivals, readingKey } from './sensors.js'

export interface DeliveryCheck {
  /** how long to wait for the last PUBACKed reading upstream (default 60 s) */
  timeoutMs?: number
  /** one epoch only: a crash is not a power loss (default false) */
  oneEpoch?: boolean
  /** every seq from 1 to the highest arrived (default true) */
  gapless?: boolean
  /** who acknowledged the readings, for the messages (default 'PUBACKed') */
  ackedBy?: string
}

/**
 * Waits until every reading in `acked` (readingKey) has arrived. Each message is looked at once,
 * as it arrives: a test that saturates the daemon ends with tens of thousands of arrivals, and a
 * check that went over all of them again for every new one made the wait quadratic.
 */
async function waitForReadings (receiver: Receiver, acked: Iterable<string>, timeoutMs: number, what: string): Promise<void> {
  const missing = new Set(acked)
  let looked = 0
  await receiver.waitFor((msgs) => {
    if (looked > msgs.length) looked = 0 // the receiver was cleared
    for (const a of readingArrivals(msgs.slice(looked))) missing.delete(readingKey(a.sensor, a.n))
    looked = msgs.length
    return missing.size === 0
  }, timeoutMs, what)
}

/**
 * Waits until every reading in `acked` has arrived, then checks order (and, by default, that no
 * seq is missing); returns how many arrivals were resends and the highest seq.
 */
export async function checkDelivered (t: Test, receiver: Receiver, acked: Iterable<string>, check: DeliveryCheck = {}): Promise<{ duplicates: number, highest: number }> {
  const expected = new Set(acked)
  const ackedBy = check.ackedBy ?? 'PUBACKed'
  await waitForReadings(receiver, expected, check.timeoutMs ?? 60_000, `all ${expected.size} ${ackedBy} readings upstream`)
  const arrivals = readingArrivals(receiver.messages)
  t.pass(`all ${expected.size} ${ackedBy} readings arrived (${arrivals.length} arrivals)`)
  if (check.oneEpoch === true) t.equal(new Set(arrivals.map((a) => a.epoch)).size, 1, 'one epoch: a crash is not a power loss')
  const { problems, duplicates, highest } = orderProblems(arrivals)
  t.same(problems, [], 'in seq order: runs, and resends only from an earlier point')
  if (check.gapless !== false) t.equal(new Set(arrivals.map((a) => a.seq)).size, highest, `no seq gap: every seq from 1 to ${highest} arrived`)
  return { duplicates, highest }
}
