/** What every scenario shares: sizes, result rows, progress output and cleanup of what a run starts. */
import { Worker } from './ipc.js'
import { HOST_SCRIPT, LOAD_SCRIPT, tempDir } from './common.js'
import { Upstream } from './upstream.js'
import { Daemon } from './daemon.js'
import { summarize, type Summary } from './stats.js'

export interface Sizes {
  /** each measurement is repeated this often; the table quotes the median */
  repeats: number
  /** sensor clients publishing at once */
  publishers: number
  /** QoS 1 publishes each sensor client keeps awaiting PUBACK */
  window: number
  /** sluice's upstream.inflight, and the baseline publisher's window in the drain test */
  forwarderInflight: number
  e2eMessages: number
  e2eWarmup: number
  ingestMessages: number
  /** readings before memory is first read: enough for V8's heap to reach its working size */
  ingestWarmup: number
  drainMessages: number
  readyBacklogs: number[]
  /** readings sent to the spawned daemon, upstream down, while its memory is read */
  backlogReadings: number
  /** readings a second offered in the fixed-rate scenario, and for how long, ms */
  rate: number
  rateDurationMs: number
  /** readings buffered with the upstream down, then drained, against the bridge */
  peerBacklog: number
  /** longest any one wait may take before the run is failed, ms */
  timeoutMs: number
}

export interface Row {
  section: string
  name: string
  unit: string
  /** which direction is good for sluice */
  better: 'higher' | 'lower'
  sluice: Summary
  baseline: Summary
  baselineName: string
  /** median(sluice) / median(baseline) */
  ratio: number
}

export interface ScenarioResult {
  rows: Row[]
  /** every run's raw figures, for the JSON */
  runs: unknown[]
}

export function makeRow (fields: Omit<Row, 'sluice' | 'baseline' | 'ratio'> & { sluiceRuns: number[], baselineRuns: number[] }): Row {
  const { sluiceRuns, baselineRuns, ...rest } = fields
  const sluice = summarize(sluiceRuns)
  const baseline = summarize(baselineRuns)
  return { ...rest, sluice, baseline, ratio: baseline.median === 0 ? Number.NaN : sluice.median / baseline.median }
}

export function progress (message: string): void {
  process.stderr.write(`  ${message}\n`)
}

/**
 * Collects what a run starts (child processes, brokers, temp dirs) and tears it all down, last
 * first, whatever happened: `const scope = new Scope(); try { ... } finally { await scope.close() }`.
 */
export class Scope {
  private readonly cleanups: Array<() => Promise<void>> = []

  add (cleanup: () => Promise<void>): void {
    this.cleanups.push(cleanup)
  }

  /**
   * A host child (the system under test), with --expose-gc so memory is read after a full GC.
   * BENCH_HOST_NODE_ARGS adds node flags to it, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to see
   * where the gateway spends its time.
   */
  async host (): Promise<Worker> {
    const extra = (process.env.BENCH_HOST_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '')
    const worker = await Worker.spawn('host', HOST_SCRIPT, { execArgv: ['--expose-gc', ...extra] })
    this.add(async () => {
      await worker.call('close', {}, 30_000).catch(() => {})
      await worker.close()
    })
    return worker
  }

  /** A load-generator child. */
  async load (): Promise<Worker> {
    const worker = await Worker.spawn('load', LOAD_SCRIPT)
    this.add(async () => {
      await worker.call('close', {}, 10_000).catch(() => {})
      await worker.close()
    })
    return worker
  }

  /** The built daemon, `sluice run -c configFile`, once it is ready. */
  async daemon (configFile: string, timeoutMs: number): Promise<Daemon> {
    const daemon = await Daemon.start(configFile, timeoutMs)
    this.add(async () => { await daemon.kill() })
    return daemon
  }

  async upstream (): Promise<Upstream> {
    const upstream = await Upstream.start()
    this.add(async () => { await upstream.close() })
    return upstream
  }

  async dir (label: string): Promise<string> {
    const dir = await tempDir(label)
    this.add(dir.remove)
    return dir.path
  }

  async close (): Promise<void> {
    for (const cleanup of this.cleanups.splice(0).reverse()) {
      await cleanup().catch((err: unknown) => { progress(`cleanup failed: ${String(err)}`) })
    }
  }
}

export async function scoped<T> (fn: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = new Scope()
  try {
    return await fn(scope)
  } finally {
    await scope.close()
  }
}

/** Polls the host until the gateway is connected upstream. */
export async function waitUpstreamConnected (host: Worker, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const stats = await host.call<{ upstreamConnected?: boolean }>('stats')
    if (stats?.upstreamConnected === true) return
    if (Date.now() > deadline) throw new Error('the gateway did not connect upstream')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/**
 * The upstream counts arrivals, duplicates included: a gateway that reconnected and resent would
 * reach the count early. It never should on loopback; say so loudly if it did.
 */
export function warnIfResent (stats: unknown): void {
  const resent = (stats as { resent?: number } | null)?.resent ?? 0
  if (resent > 0) progress(`WARNING: sluice resent ${resent} readings in this run (a reconnect): its count includes duplicates`)
}

export function rate (messages: number, ms: number): number {
  return messages / (ms / 1000)
}

export function fmtRate (perSecond: number): string {
  return `${Math.round(perSecond).toLocaleString('en-US')} msg/s`
}
