/**
 * The power-cut harness's judge, as a pure unit: given what the sensors got PUBACKs for and what
 * reached the upstream, it must find every kind of broken promise (the harness itself boots real
 * virtual machines and is run by `npm run powercut`, not here).
 */
import t from 'tap'
import { judgeCycle, type Acked, type Arrival, type CycleInput } from '../scripts/powercut/check.js'

const OLD = 'a'.repeat(32)
const NEW = 'b'.repeat(32)
const KILL = 10_000

/** Five readings PUBACKed at 5000, 6000, ... 9000 ms; the power cut at 10000 ms. */
const acked: Acked[] = [0, 1, 2, 3, 4].map((i) => ({ key: `1/0/${i}`, at: 5000 + i * 1000 }))
const reading = (i: number, at: number, epoch = OLD): Arrival => ({ kind: 'reading', at, epoch, seq: i + 1, key: `1/0/${i}` })
const epochEvent = (lastDurableSeq: number, at = 20_000): Arrival =>
  ({ kind: 'epoch', at, epoch: NEW, previous: OLD, lastDurableSeq, reason: 'power-loss' })

function input (arrivals: Arrival[], over: Partial<CycleInput> = {}): CycleInput {
  return { cycle: 1, sync: 'always', lossWindowMs: 2000, acked, killAt: KILL, arrivals, epochFrom: 1, ...over }
}

t.test('all PUBACKed readings arrived, the epoch announced: nothing broken; resends count as duplicates', async (t) => {
  const arrivals = [reading(0, 5500), reading(1, 6500), epochEvent(5), reading(1, 20_100), reading(2, 20_200), reading(3, 20_300), reading(4, 20_400)]
  const r = judgeCycle(input(arrivals))
  t.same(r.broken, [])
  t.equal(r.acked, 5)
  t.equal(r.lost, 0)
  t.equal(r.duplicates, 1)
  t.equal(r.epochsAnnounced, 1)
})

t.test('sync always: any lost PUBACKed reading is a broken promise', async (t) => {
  const r = judgeCycle(input([reading(0, 5500), reading(1, 6500), reading(2, 7500), reading(3, 8500), epochEvent(4)]))
  t.equal(r.lost, 1)
  t.match(r.broken, [/1 PUBACKed reading\(s\) lost with sync: always/])
})

t.test('sync interval: a loss inside the window is allowed, one older than it is not', async (t) => {
  const inside = judgeCycle(input([reading(0, 5500), reading(1, 6500), reading(2, 7500), epochEvent(3)], { sync: 'interval' }))
  t.equal(inside.lost, 2)
  t.equal(inside.oldestLossMs, 2000)
  t.same(inside.broken, [])
  const outside = judgeCycle(input([reading(0, 5500), reading(1, 6500), epochEvent(2)], { sync: 'interval' }))
  t.equal(outside.oldestLossMs, 3000)
  t.match(outside.broken, [/PUBACKed 3000 ms before the power cut, more than the 2000 ms/])
})

t.test('no epoch announced after the power cut is a broken promise', async (t) => {
  const r = judgeCycle(input([0, 1, 2, 3, 4].map((i) => reading(i, 5500 + i * 1000))))
  t.match(r.broken, [/no io.sluice.epoch event/])
})

t.test('a hole in the durable prefix is found, and a gap event covers one', async (t) => {
  const holed = [reading(0, 5500), reading(2, 7500), reading(3, 8500), reading(4, 9500), epochEvent(5)]
  t.match(judgeCycle(input(holed)).broken, [/1 seq\(s\) of the durable prefix never arrived \(first: 2\)/, /lost with sync: always/])
  const gap: Arrival = { kind: 'gap', at: 7000, epoch: OLD, from: 2, to: 2, reason: 'overflow' }
  t.same(judgeCycle(input([reading(0, 5500), gap, ...holed.slice(1)], { acked: acked.filter((a) => a.key !== '1/0/1') })).broken, [])
})

t.test('a new-epoch reading before the announcement, or an old seq past the last durable one after it', async (t) => {
  const early = judgeCycle(input([reading(0, 5500), reading(1, 6500), reading(2, 7500), reading(3, 8500), reading(4, 9500), { kind: 'reading', at: 19_000, epoch: NEW, seq: 6, key: 'x' }, epochEvent(5)]))
  t.match(early.broken, [/arrived before the epoch was announced/])
  const reused = judgeCycle(input([reading(0, 5500), reading(1, 6500), reading(2, 7500), epochEvent(3), reading(3, 20_100), reading(4, 20_200)]))
  t.match(reused.broken, [/seq 4 of the old epoch arrived after it was announced as ending at 3/])
})

t.test('an epoch begun for another reason than a power loss is named', async (t) => {
  const arrivals = [0, 1, 2, 3, 4].map((i) => reading(i, 5500 + i * 1000))
  const r = judgeCycle(input([...arrivals, { kind: 'epoch', at: 20_000, epoch: NEW, previous: OLD, lastDurableSeq: 5, reason: 'repaired' }]))
  t.match(r.broken, [/reason "repaired", not "power-loss"/])
})
