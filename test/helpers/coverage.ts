/**
 * What a receiver can tell from sluice's events about the seqs of one epoch: which arrived as
 * readings, which were announced lost by gap events, and whether the stream kept its order
 * (docs/guarantees.md §3-§4: delivered + announced = assigned, with no gap the receiver is not told about).
 */
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { TestLike } from './mosquitto.js'

export interface GapEvent { id: string, from: number, to: number, count: number, reason: string }

export interface Coverage {
  /** seq -> "sensor:n" of each reading that arrived (first arrival) */
  readings: Map<number, string>
  /** gap events, one per id */
  gaps: GapEvent[]
  /** readings delivered + seqs announced, counting each seq once */
  covered: number
  /** seqs both delivered and announced, or announced twice: must be none */
  overlaps: number[]
  /** problems with the order: a reading or gap that starts past the next expected seq */
  problems: string[]
}

export function coverage (messages: Array<{ json?: any }>, epoch?: string): Coverage {
  const readings = new Map<number, string>()
  const gaps = new Map<string, GapEvent>()
  const problems: string[] = []
  let next = 1
  let highest = 0
  for (const [i, m] of messages.entries()) {
    const e = m.json
    if (e === undefined || (epoch !== undefined && e.sluiceepoch !== epoch)) continue
    let from: number
    let to: number
    if (e.type === 'io.sluice.reading') {
      from = to = Number(e.sequence)
      if (!readings.has(from)) readings.set(from, `${String(e.data?.sensor)}:${String(e.data?.n)}`)
    } else if (e.type === 'io.sluice.gap') {
      ;({ from, to } = e.data)
      gaps.set(e.id, { id: e.id, ...e.data })
    } else {
      continue
    }
    // A resend after a reconnect starts at or before where the stream was; nothing skips ahead.
    if (from > next && from > highest + 1) problems.push(`message ${i}: seq ${from} follows ${highest}: a gap nobody announced`)
    next = to + 1
    highest = Math.max(highest, to)
  }
  const seen = new Set<number>(readings.keys())
  const overlaps: number[] = []
  for (const g of gaps.values()) {
    if (g.count !== g.to - g.from + 1) problems.push(`gap ${g.id} counts ${g.count} for ${g.from}..${g.to}`)
    for (let s = g.from; s <= g.to; s++) {
      if (seen.has(s)) overlaps.push(s)
      seen.add(s)
    }
  }
  return { readings, gaps: [...gaps.values()], covered: seen.size, overlaps, problems }
}

/**
 * The number of seqs covered so far (delivered or announced, each once), kept up to date from
 * only the messages that arrived since the last call: a receiver's waitFor calls its predicate on
 * every message, and recounting thousands of them each time would stall the test's event loop.
 */
export function coverageCounter (epoch?: string): (messages: Array<{ json?: any }>) => number {
  const seen = new Set<number>()
  let done = 0
  return (messages) => {
    for (; done < messages.length; done++) {
      const e = messages[done].json
      if (e === undefined || (epoch !== undefined && e.sluiceepoch !== epoch)) continue
      if (e.type === 'io.sluice.reading') seen.add(Number(e.sequence))
      else if (e.type === 'io.sluice.gap') for (let s = e.data.from; s <= e.data.to; s++) seen.add(s)
    }
    return seen.size
  }
}

/**
 * Samples the allocated size of the files in `dir` every few milliseconds until the test ends:
 * `peak()` is the largest seen, what the disk saw at its fullest.
 */
export function watchDirectory (t: TestLike, dir: string, everyMs = 5): { peak: () => number } {
  let peak = 0
  let busy = false
  const timer = setInterval(() => {
    if (busy) return
    busy = true
    directorySize(dir).then((bytes) => { peak = Math.max(peak, bytes) }, () => {}).finally(() => { busy = false })
  }, everyMs)
  t.teardown(() => { clearInterval(timer) })
  return { peak: () => peak }
}

/** The allocated size of the regular files directly in `dir`, as `du` counts it. */
export async function directorySize (dir: string): Promise<number> {
  let total = 0
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const s = await stat(join(dir, name)).catch(() => null)
    if (s?.isFile() === true) total += Math.max(s.blocks * 512, s.size)
  }
  return total
}
