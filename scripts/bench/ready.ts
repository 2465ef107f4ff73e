/**
 * 4. Time to ready vs backlog size: Gateway.start on a buffer holding N unacknowledged readings,
 * beside Gateway.start on an empty buffer (the baseline), in the same host process. sluice's claim
 * is that start-up reads a few meta keys and one seek, never the backlog: the ratio should be ~1
 * whatever N.
 *
 * Each run starts on fresh copies of the buffers (so LevelDB replays its write-ahead log each time,
 * as after a real restart; the files are in the page cache, as they would be after a quick
 * restart). A throw-away start on another empty copy comes first, so module loading and JIT are
 * not charged to either. The order of empty and backlog alternates between runs.
 */
import { BOOT_ID, copyDir } from './common.js'
import { freePort } from '../ports.js'
import { makeRow, progress, scoped, type Scope, type ScenarioResult, type Sizes } from './runner.js'

export interface Templates {
  /** readings -> a closed buffer holding that many unacknowledged readings */
  backlogs: Map<number, string>
  empty: string
}

/** Writes each buffer the bench needs once (in a host child); runs copy them. */
export async function makeTemplates (scope: Scope, sizes: number[]): Promise<Templates> {
  const host = await scope.host()
  const empty = await scope.dir('template-empty')
  await host.call('fill', { dir: empty, n: 0 })
  const backlogs = new Map<number, string>()
  for (const n of [...new Set(sizes)].sort((a, b) => a - b)) {
    const dir = await scope.dir(`template-${n}`)
    const { ms } = await host.call<{ ms: number }>('fill', { dir, n }, 600_000)
    progress(`filled a buffer with ${n.toLocaleString('en-US')} readings in ${(ms / 1000).toFixed(1)} s (${Math.round(n / ms * 1000).toLocaleString('en-US')}/s, boot id ${BOOT_ID})`)
    backlogs.set(n, dir)
  }
  return { backlogs, empty }
}

interface StartTiming { label: string, startMs: number, closeMs: number, stats: unknown }
interface ReadyRun { repeat: number, timings: StartTiming[] }

export async function timeToReady (sizes: Sizes, templates: Templates): Promise<ScenarioResult> {
  const runs: ReadyRun[] = []
  const downUrl = `mqtt://127.0.0.1:${await freePort()}`
  for (let repeat = 0; repeat < sizes.repeats; repeat++) {
    const timings = await scoped(async (scope) => {
      const copy = async (template: string, label: string): Promise<{ label: string, dir: string }> => {
        const dir = await scope.dir(`ready-${label}`)
        await copyDir(template, dir)
        return { label, dir }
      }
      const measured = [await copy(templates.empty, 'empty')]
      for (const n of sizes.readyBacklogs) measured.push(await copy(templates.backlogs.get(n) as string, String(n)))
      if (repeat % 2 === 1) measured.reverse()
      const host = await scope.host()
      const all = await host.call<StartTiming[]>('timeStarts', { runs: [await copy(templates.empty, 'warm-up'), ...measured], upstreamUrl: downUrl }, sizes.timeoutMs)
      return all.slice(1)
    })
    runs.push({ repeat, timings })
    progress(`ready #${repeat + 1}: ${timings.map((t) => `${t.label} ${t.startMs.toFixed(1)} ms`).join(', ')}`)
  }
  const startMs = (label: string): number[] => runs.map((r) => (r.timings.find((t) => t.label === label) as StartTiming).startMs)
  const count = (n: number): string => n.toLocaleString('en-US')
  const rows = sizes.readyBacklogs.map((n) => makeRow({
    section: '4. ready',
    name: `Gateway.start with ${count(n)} readings buffered`,
    unit: 'ms',
    better: 'lower',
    baselineName: 'Gateway.start on an empty buffer',
    sluiceRuns: startMs(String(n)),
    baselineRuns: startMs('empty')
  }))
  // A start-up cost that does not grow with the backlog shows best between two backlog sizes.
  const [smallest, largest] = [Math.min(...sizes.readyBacklogs), Math.max(...sizes.readyBacklogs)]
  if (largest > smallest) {
    rows.push(makeRow({
      section: '4. ready',
      name: `Gateway.start, ${count(largest)} vs ${count(smallest)} buffered`,
      unit: 'ms',
      better: 'lower',
      baselineName: `Gateway.start with ${count(smallest)} readings buffered (for the ${count(largest)} row)`,
      sluiceRuns: startMs(String(largest)),
      baselineRuns: startMs(String(smallest))
    }))
  }
  return { rows, runs }
}
