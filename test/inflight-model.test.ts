/**
 * The forwarder's in-flight window (daemon/inflight.ts) against a simple model, over random
 * sequences of publishes, acknowledgements in any order, refusals, disconnects, set-asides (a
 * message passed over) and late acknowledgements from an old connection; checked after every
 * step. The model keeps one flag per buffer position and knows nothing of the window's list.
 *
 * The seed is printed; SLUICE_INFLIGHT_SEED=<seed> replays a run.
 */
import t, { type Test } from 'tap'
import { type InFlightMessage, InFlightWindow } from '../daemon/inflight.js'
import { mulberry32 } from '../scripts/random.js'

interface ModelMessage { first: number, last: number, state: 'sent' | 'acked' | 'refused', real: InFlightMessage | null }

/** What the window must say, from per-position facts only. */
class Model {
  /** positions acknowledged upstream (or passed over) and not forgotten */
  readonly done = new Set<number>()
  /** the messages of the current connection, in the order they were sent */
  session: ModelMessage[] = []
  /** the highest position ever published */
  sentPos: number
  constructor (readonly start: number) { this.sentPos = start }

  /** Positions start+1.. all done, as far as they go. */
  get ackedPos (): number {
    let p = this.start
    while (this.done.has(p + 1)) p++
    return p
  }

  /** Where the next message of this connection starts. */
  get nextPos (): number {
    const last = this.session[this.session.length - 1]
    return last === undefined ? this.ackedPos + 1 : last.last + 1
  }

  /** Messages the window holds: those of this connection not wholly at or before the cursor. */
  get held (): ModelMessage[] { return this.session.filter((m) => m.last > this.ackedPos) }
}

function check (t: Test, step: string, w: InFlightWindow, m: Model): boolean {
  const problems: string[] = []
  const expect = (what: string, actual: unknown, expected: unknown): void => {
    if (JSON.stringify(actual) !== JSON.stringify(expected)) problems.push(`${what}: ${JSON.stringify(actual)} != ${JSON.stringify(expected)}`)
  }
  const held = m.held
  expect('ackedPos', w.ackedPos, m.ackedPos)
  expect('resumeAfter', w.resumeAfter, m.ackedPos)
  expect('sentPos', w.sentPos, m.sentPos)
  expect('size', w.size, held.length)
  expect('unacked', w.unacked, held.filter((x) => x.state !== 'acked').length)
  expect('lastPos', w.lastPos, held.length === 0 ? null : held[held.length - 1].last)
  expect('oldestUnacked', w.oldestUnacked()?.firstPos, held.find((x) => x.state !== 'acked')?.first)
  expect('firstRefused', w.firstRefused()?.firstPos, held.find((x) => x.state === 'refused')?.first)
  expect('allAnswered', w.allAnswered(), held.every((x) => x.state !== 'sent'))
  if (problems.length > 0) t.fail(`after ${step}: ${problems.join('; ')}`)
  return problems.length === 0
}

function run (t: Test, seed: number, steps: number): void {
  const rnd = mulberry32(seed)
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)]
  const start = Math.floor(rnd() * 5)
  const w = new InFlightWindow(start)
  const m = new Model(start)
  /** messages of earlier connections, whose answers may still come late */
  const stale: InFlightMessage[] = []
  for (let i = 0; i < steps; i++) {
    const r = rnd()
    let step: string
    const open = m.session.filter((x) => x.state === 'sent' && x.last > m.ackedPos)
    if (r < 0.35 && m.held.length < 8) {
      // publish the next 1..4 positions
      const first = m.nextPos
      const last = first + Math.floor(rnd() * 4)
      const { message, resent } = w.sent({ firstPos: first, lastPos: last, gap: false, readings: last - first + 1, events: 0, sentAt: i })
      const wasResent = last <= m.sentPos
      if (resent !== wasResent) t.fail(`publish ${first}..${last}: resent ${String(resent)}, the model says ${String(wasResent)}`)
      m.sentPos = Math.max(m.sentPos, last)
      m.session.push({ first, last, state: 'sent', real: message })
      step = `publish ${first}..${last}`
    } else if (r < 0.65 && open.length > 0) {
      const x = pick(open)
      const before = m.ackedPos
      x.state = 'acked'
      for (let p = x.first; p <= x.last; p++) m.done.add(p)
      const advance = w.acknowledge(x.real as InFlightMessage)
      const moved = m.ackedPos !== before
      if ((advance !== null) !== moved) t.fail(`ack ${x.first}..${x.last}: advance ${JSON.stringify(advance)}, the model moved ${String(moved)}`)
      if (advance !== null && (advance.ackedPos !== m.ackedPos || advance.drained !== (m.held.length === 0))) {
        t.fail(`ack ${x.first}..${x.last}: ${JSON.stringify(advance)}, the model: cursor ${m.ackedPos}, held ${m.held.length}`)
      }
      step = `ack ${x.first}..${x.last}`
    } else if (r < 0.72 && open.length > 0) {
      const x = pick(open)
      x.state = 'refused'
      w.refuse(x.real as InFlightMessage, 0x80)
      step = `refuse ${x.first}..${x.last}`
    } else if (r < 0.8) {
      // a disconnect, or a refusal handled (every message answered): a new connection
      for (const x of m.session) if (x.real !== null) stale.push(x.real)
      // positions acknowledged past an unacknowledged one are forgotten: they are sent again
      for (const p of [...m.done]) if (p > m.ackedPos) m.done.delete(p)
      m.session = []
      w.clear()
      step = 'disconnect'
    } else if (r < 0.87 && m.held.length === 0) {
      // a message set aside at the head of a new connection: passed over in its place
      const first = m.nextPos
      const last = first + Math.floor(rnd() * 3)
      const advance = w.passOver(first, last, i)
      for (let p = first; p <= last; p++) m.done.add(p)
      m.sentPos = Math.max(m.sentPos, last)
      m.session.push({ first, last, state: 'acked', real: null })
      if (advance?.ackedPos !== m.ackedPos) t.fail(`pass over ${first}..${last}: ${JSON.stringify(advance)}, the model's cursor ${m.ackedPos}`)
      step = `pass over ${first}..${last}`
    } else if (stale.length > 0) {
      // an answer from an old connection changes nothing
      const x = pick(stale)
      const advance = w.acknowledge(x)
      w.refuse(x, 0x80)
      if (advance !== null) t.fail(`a late ack of ${x.firstPos}..${x.lastPos} moved the cursor`)
      step = `late answer ${x.firstPos}..${x.lastPos}`
    } else {
      continue
    }
    if (!check(t, `step ${i} (${step})`, w, m)) {
      t.comment(`seed ${seed}: replay with SLUICE_INFLIGHT_SEED=${seed}`)
      return
    }
  }
}

t.test('the in-flight window agrees with the model after every step', async (t) => {
  const fixed = process.env.SLUICE_INFLIGHT_SEED
  const seeds = fixed !== undefined ? [Number(fixed)] : Array.from({ length: 200 }, () => Math.floor(Math.random() * 2 ** 32))
  for (const seed of seeds) run(t, seed, 400)
  t.comment(`seeds ${seeds.slice(0, 3).join(', ')}, ... (${seeds.length} runs of 400 steps; replay one with SLUICE_INFLIGHT_SEED=<seed>)`)
  t.pass(`${seeds.length} random runs checked`)
})

t.test('the model can tell a wrong window: a cursor that moves over an unacknowledged message is caught', async (t) => {
  // The window as it would be if it took any acknowledgement as the new cursor.
  class Eager extends InFlightWindow {
    override acknowledge (message: InFlightMessage): ReturnType<InFlightWindow['acknowledge']> {
      const advance = super.acknowledge(message)
      Object.defineProperty(this, 'ackedPos', { value: Math.max(this.ackedPos, message.lastPos), configurable: true })
      return advance
    }
  }
  const w = new Eager(0)
  const m = new Model(0)
  const a = w.sent({ firstPos: 1, lastPos: 1, gap: false, readings: 1, events: 0, sentAt: 0 }).message
  const b = w.sent({ firstPos: 2, lastPos: 2, gap: false, readings: 1, events: 0, sentAt: 0 }).message
  m.sentPos = 2
  m.session.push({ first: 1, last: 1, state: 'sent', real: a }, { first: 2, last: 2, state: 'acked', real: b })
  m.done.add(2)
  w.acknowledge(b)
  const problems: string[] = []
  check({ fail: (msg: string) => { problems.push(msg) } } as unknown as Test, 'ack 2 before 1', w, m)
  t.match(problems, [/ackedPos: 2 != 0/], 'the check reports the cursor past seq 1')
})
