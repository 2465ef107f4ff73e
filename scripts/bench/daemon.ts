/**
 * The built daemon (`dist/daemon/bin.js`) as a child process, started as an operator would
 * (`sluice run -c FILE`, with the installed launcher's MALLOC_ARENA_MAX): for figures only a real
 * daemon gives, such as its own resident memory, with nothing of the bench in its process. Ready
 * once it logs "sluice ready"; stopped with SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import type { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { readyPorts } from '../ready-ports.js'
import type { MemoryBudget } from './memory-budget.js'

const DAEMON_SCRIPT = new URL('../../daemon/bin.js', import.meta.url)

/** A process's resident memory as the kernel counts it (/proc/PID/status, Linux only), bytes. */
export interface ProcMemory {
  /** VmRSS: every resident page */
  rss: number
  /** RssAnon: heaps, stacks and other private memory */
  rssAnon: number
  /** RssFile: resident pages of mapped files (node itself, libraries, LevelDB's mapped tables) */
  rssFile: number
}

interface Exit { code: number | null, signal: NodeJS.Signals | null }

/** The log lines a daemon that failed to start is quoted by. */
const QUOTED_LINES = 20

export class Daemon {
  /** `--memory`: every daemon started from here on runs in this cgroup (memory-budget.ts) */
  static budget: MemoryBudget | null = null

  private constructor (
    private readonly child: ChildProcess,
    private readonly exited: Promise<Exit>,
    /** the daemon's "sluice ready" log line */
    readonly ready: { ingest: Array<{ name: string, listen?: string }> }
  ) {}

  /**
   * Starts `sluice run -c configFile`; resolves once it logged "sluice ready" (bounded).
   * BENCH_DAEMON_NODE_ARGS adds node flags, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
   */
  static async start (configFile: string, timeoutMs: number): Promise<Daemon> {
    const extra = (process.env.BENCH_DAEMON_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '')
    const args = [...extra, fileURLToPath(DAEMON_SCRIPT), 'run', '-c', configFile]
    const start = Daemon.budget === null ? { command: process.execPath, args } : Daemon.budget.wrap(process.execPath, args)
    // The environment the installed launcher gives it (scripts/install.sh writes bin/sluice).
    const env = { ...process.env, MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2' }
    const child = spawn(start.command, start.args, { stdio: ['ignore', 'pipe', 'inherit'], env })
    const exited = new Promise<Exit>((resolve) => { child.once('exit', (code, signal) => { resolve({ code, signal }) }) })
    const stdout = child.stdout as Readable
    const lines: string[] = []
    let partial = ''
    let onData = (_: Buffer): void => {}
    try {
      const ready = await new Promise<Daemon['ready']>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`the daemon was not ready within ${timeoutMs} ms; its log:\n${lines.join('\n')}`)) }, timeoutMs)
        onData = (chunk) => {
          const parts = (partial + chunk.toString()).split('\n')
          partial = parts.pop() ?? ''
          for (const line of parts) {
            lines.push(line)
            if (lines.length > QUOTED_LINES) lines.shift()
            const entry = parseLogLine(line)
            if (entry?.msg === 'sluice ready') { clearTimeout(timer); resolve(entry as Daemon['ready']) }
          }
        }
        stdout.on('data', onData)
        child.once('error', (err) => { clearTimeout(timer); reject(err) })
        void exited.then(({ code, signal }) => {
          clearTimeout(timer)
          reject(new Error(`the daemon exited before it was ready (code ${code ?? '-'}, signal ${signal ?? '-'}); its log:\n${lines.join('\n')}`))
        })
      })
      // Still read, and dropped: a daemon writing into a full pipe would block.
      stdout.off('data', onData)
      stdout.resume()
      return new Daemon(child, exited, ready)
    } catch (err) {
      // (a child that never started has no exit to wait for)
      if (child.pid !== undefined) {
        child.kill('SIGKILL')
        await exited
      }
      throw err
    }
  }

  get pid (): number { return this.child.pid ?? -1 }

  /** The port of the embedded broker, as its ready line names it (the config may say port 0). */
  get brokerPort (): number {
    const { broker } = readyPorts(this.ready)
    if (broker === null) throw new Error('the daemon runs no embedded broker')
    return broker
  }

  async memory (): Promise<ProcMemory> {
    const status = await readFile(`/proc/${this.pid}/status`, 'utf8')
    const bytes = (field: string): number => {
      const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)
      if (match === null) throw new Error(`no ${field} in /proc/${this.pid}/status`)
      return Number(match[1]) * 1024
    }
    return { rss: bytes('VmRSS'), rssAnon: bytes('RssAnon'), rssFile: bytes('RssFile') }
  }

  /** SIGTERM, as systemd stops it; fails unless it exits with code 0 within `graceMs` (then it is killed). */
  async stop (graceMs: number): Promise<{ ms: number }> {
    const started = performance.now()
    this.child.kill('SIGTERM')
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, graceMs)
    const { code, signal } = await this.exited
    clearTimeout(timer)
    if (code !== 0) throw new Error(`the daemon did not stop cleanly on SIGTERM within ${graceMs} ms (code ${code ?? '-'}, signal ${signal ?? '-'})`)
    return { ms: performance.now() - started }
  }

  /**
   * Ends it if it still runs: SIGTERM, then SIGKILL after 5 s (a clean exit writes the profiles
   * that --cpu-prof or --heap-prof ask for).
   */
  async kill (): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM')
      const timer = setTimeout(() => { this.child.kill('SIGKILL') }, 5000)
      await this.exited
      clearTimeout(timer)
    }
    await this.exited
  }
}

/** A JSON log line, or null for anything else (pino-pretty, a stack trace). */
function parseLogLine (line: string): Record<string, unknown> | null {
  try {
    const entry: unknown = JSON.parse(line)
    return typeof entry === 'object' && entry !== null ? entry as Record<string, unknown> : null
  } catch {
    return null
  }
}
