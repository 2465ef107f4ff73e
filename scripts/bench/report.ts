/** The bench's output: a table on stdout and a JSON file under bench-results/. */
import { mkdir, writeFile } from 'node:fs/promises'
import { cpus, totalmem, loadavg, platform, arch, release } from 'node:os'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import type { Row } from './runner.js'
import type { Summary } from './stats.js'

export function machineInfo (): Record<string, unknown> {
  const cpu = cpus()
  return {
    cpus: cpu.length,
    cpuModel: cpu[0]?.model ?? 'unknown',
    totalMemMB: Math.round(totalmem() / 1024 / 1024),
    node: process.version,
    platform: platform(),
    arch: arch(),
    kernel: release(),
    loadavg: loadavg(),
    commit: gitCommit()
  }
}

function gitCommit (): string | null {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== ''
    return dirty ? `${head}+uncommitted` : head
  } catch {
    return null
  }
}

function value (x: number, unit: string): string {
  if (unit === 'msg/s' || unit === 'readings/s') return Math.round(x).toLocaleString('en-US')
  if (unit === 'ms') return x < 100 ? x.toFixed(1) : Math.round(x).toLocaleString('en-US')
  if (unit === 'MB') return x.toFixed(0)
  if (unit === 'MB/100k') return `${x >= 0 ? '+' : ''}${x.toFixed(2)}`
  if (unit === 'µs/msg') return x.toFixed(1)
  if (unit === 'CPU-s') return x.toFixed(2)
  if (unit === 'B') return x.toFixed(0)
  return x.toPrecision(3)
}

/**
 * How far apart the runs were: relative to the median, except for growth figures, which sit near
 * zero when all is well (a percentage of almost nothing says nothing): those show half the range.
 */
function spread (s: Summary, unit: string): string {
  if (unit === 'MB/100k') return `±${((s.max - s.min) / 2).toFixed(2)}`
  return `${Math.round(s.spread * 100)}%`
}

function ratio (r: number): string {
  if (!Number.isFinite(r)) return 'n/a'
  if (Math.abs(r) < 0.005) return '0.00x'
  return `${r >= 10 || r <= -10 ? r.toFixed(0) : r.toFixed(2)}x`
}

/** The table: medians of the repeats, their ratio, and how far apart the repeats were. */
export function formatTable (rows: Row[], repeats: number): string {
  const header = ['', 'unit', 'sluice', 'baseline', 'ratio', 'spread s / b']
  const lines: string[][] = []
  let section = ''
  const sectionOf: Array<string | null> = []
  for (const row of rows) {
    sectionOf.push(row.section !== section ? row.section : null)
    section = row.section
    lines.push(['  ' + row.name, row.unit, value(row.sluice.median, row.unit), value(row.baseline.median, row.unit), ratio(row.ratio), `${spread(row.sluice, row.unit)} / ${spread(row.baseline, row.unit)}`])
  }
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')
  const out = [fmt(header), widths.map((w) => '-'.repeat(w)).join('  ')]
  lines.forEach((line, i) => {
    const title = sectionOf[i]
    if (title !== null) out.push(title)
    out.push(fmt(line))
  })
  out.push('')
  out.push(`Medians of ${repeats} runs; ratio = sluice / baseline (median over median); spread = (max - min) / median of the runs`)
  out.push('(for MB/100k growth rows: half of max - min, in MB). Full runs and memory samples are in the JSON.')
  out.push('Baselines, measured in the same run:')
  const seen = new Set<string>()
  for (const row of rows) {
    const key = `${row.section}: ${row.baselineName}`
    if (seen.has(key)) continue
    seen.add(key)
    out.push(`  ${key}`)
  }
  return out.join('\n')
}

/** Writes the results under `dir` (and to `extra` when given); returns the file under `dir`. */
export async function writeResults (extra: string | null, result: Record<string, unknown>, dir = 'bench-results'): Promise<string> {
  await mkdir(dir, { recursive: true })
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const file = join(dir, `bench-${stamp}.json`)
  const text = JSON.stringify(result, null, 2) + '\n'
  await writeFile(file, text)
  await writeFile(join(dir, 'latest.json'), text)
  if (extra !== null) await writeFile(extra, text)
  return file
}
