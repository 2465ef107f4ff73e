import { EventEmitter } from 'node:events'
import { statfs } from 'node:fs/promises'
import { loadavg, uptime as systemUptime } from 'node:os'
import { cpuTemperature, currentLoad, mem } from 'systeminformation'
import type { Logger } from 'pino'
import type { IngestAdapter, IngestAdapterEvents, ReadingSink } from './contract.js'

/**
 * The topic of the gateway's own readings. A `$` topic: sensors cannot spoof it through the
 * default `ingest.topics` ("#" never matches a `$` topic [MQTT-4.7.2-1]), and with the default
 * `upstream.topic` it goes upstream as `sluice/{gateway}/$sluice/health`, the events topic of
 * kind `health` (docs/receiving.md).
 */
export const HEALTH_TOPIC = '$sluice/health'

/** What the daemon knows of the backlog; the adapter cannot see the buffer itself. */
export interface BacklogFigures {
  /** readings written and not yet acknowledged upstream */
  readings: number
  /** the buffer's size on disk, bytes (what buffer.maxBytes bounds) */
  bytes: number | null
  /** age of the oldest reading not yet acknowledged upstream, seconds; null when there is none */
  oldestUnsentAgeSeconds: number | null
}

/** One health reading, the JSON payload forwarded upstream. Figures not available are null. */
export interface HealthReading {
  cpu: {
    /** percent of all cores busy since the previous reading */
    loadPercent: number | null
    /** the kernel's 1-minute load average */
    loadAverage1m: number | null
  }
  /** the SoC/CPU temperature in degrees Celsius; null where the hardware reports none */
  temperatureCelsius: number | null
  memory: {
    totalBytes: number | null
    /** what the kernel can give to new work without swapping (MemAvailable) */
    availableBytes: number | null
    /** this process's resident memory */
    processRssBytes: number
  }
  disk: {
    /** the buffer's directory, on the volume measured */
    path: string
    /** space an unprivileged writer may still use on that volume */
    freeBytes: number | null
    totalBytes: number | null
  }
  uptimeSeconds: {
    system: number | null
    process: number
  }
  backlog: BacklogFigures
}

export interface SystemAdapterOptions {
  sink: ReadingSink
  /** milliseconds between readings; the first is taken one interval after start */
  intervalMs: number
  /** the buffer's directory: disk free is measured on its volume */
  diskPath: string
  /** the backlog, from the daemon */
  backlog: () => Promise<BacklogFigures>
  logger: Logger
  topic?: string
  /** milliseconds since 1970 */
  clock?: () => number
}

type Status = 'new' | 'open' | 'closing' | 'closed'

/** One slow figure (a hung `sensors` binary, a stuck NFS mount) must not hold back the reading. */
const FIGURE_TIMEOUT_MS = 5000

/**
 * The gateway's own health readings, as an ingest adapter: every `intervalMs` it takes CPU
 * load, temperature, memory (systeminformation), disk free on the buffer's volume (statfs),
 * uptime and the backlog, and appends them to the buffer as a reading of their own. They take a
 * seq and travel the normal path, so an operator sees a silent gateway's last state upstream.
 *
 * Readings are taken one after another (a timeout chain, never overlapping) and not awaited to
 * disk: like QoS 0, nothing waits for their PUBACK.
 */
export class SystemAdapter extends EventEmitter<IngestAdapterEvents> implements IngestAdapter {
  readonly name = 'system'
  private readonly options: SystemAdapterOptions
  private readonly clock: () => number
  private intervalMs: number
  private status: Status = 'new'
  private timer: NodeJS.Timeout | null = null
  private taking: Promise<void> | null = null
  private failing = false
  /** readings appended so far */
  taken = 0

  constructor (options: SystemAdapterOptions) {
    super()
    this.options = options
    this.intervalMs = options.intervalMs
    this.clock = options.clock ?? Date.now
  }

  get topic (): string { return this.options.topic ?? HEALTH_TOPIC }

  async start (): Promise<void> {
    if (this.status !== 'new') throw new Error(`the system adapter cannot start when ${this.status}`)
    this.status = 'open'
    this.schedule()
  }

  /** The gateway's own readings are no way in for sensors: readiness leaves them out. */
  readonly listening = null

  describe (): Record<string, unknown> {
    return { topic: this.topic, intervalMs: this.intervalMs }
  }

  /** Changes the interval live (SIGHUP); the next reading comes one new interval from now. */
  setInterval (ms: number): void {
    this.intervalMs = ms
    if (this.status !== 'open' || this.timer === null) return
    clearTimeout(this.timer)
    this.schedule()
  }

  private schedule (): void {
    this.timer = setTimeout(() => {
      this.timer = null
      this.taking = this.takeReading().finally(() => {
        this.taking = null
        if (this.status === 'open') this.schedule()
      })
    }, this.intervalMs)
    this.timer.unref()
  }

  private async takeReading (): Promise<void> {
    let reading: HealthReading
    try {
      reading = await this.sample()
    } catch (err) {
      this.warnOnce('could not take a health reading', err)
      return
    }
    if (this.status !== 'open') return
    try {
      const { durable } = this.options.sink.append({
        time: this.clock(),
        topic: this.topic,
        payload: Buffer.from(JSON.stringify(reading))
      }, { canWait: false }) // nothing waits for it: dropped and announced, not queued, while the buffer holds back
      this.taken++
      this.failing = false
      durable.catch((err: unknown) => { this.warnOnce('a health reading was not stored', err) })
    } catch (err) {
      this.emit('refused', 'buffer-unavailable', null)
      this.warnOnce('the buffer is not accepting health readings', err)
    }
  }

  /** Logs the first failure of a run of failures, so a broken figure cannot flood the journal. */
  private warnOnce (message: string, err: unknown): void {
    if (this.failing) return
    this.failing = true
    this.options.logger.warn({ err: (err as Error).message }, message)
  }

  /** Takes one reading now. */
  async sample (): Promise<HealthReading> {
    const { diskPath, backlog } = this.options
    const [load, temperature, memory, disk, figures] = await Promise.all([
      figure(currentLoad().then((l) => finite(l.currentLoad))),
      figure(cpuTemperature().then((t) => finite(t.main))),
      figure(mem().then((m) => ({ total: finite(m.total), available: finite(m.available) }))),
      figure(diskSpace(diskPath)),
      backlog()
    ])
    return {
      cpu: { loadPercent: round(load, 1), loadAverage1m: finite(loadavg()[0]) },
      temperatureCelsius: temperature,
      memory: {
        totalBytes: memory?.total ?? null,
        availableBytes: memory?.available ?? null,
        processRssBytes: process.memoryUsage.rss()
      },
      disk: { path: diskPath, freeBytes: disk?.freeBytes ?? null, totalBytes: disk?.totalBytes ?? null },
      uptimeSeconds: { system: finite(systemUptime()), process: round(process.uptime(), 3) as number },
      backlog: figures
    }
  }

  async close (): Promise<void> {
    if (this.status === 'closed') return
    this.status = 'closing'
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    // A reading being taken finds the adapter closing and is not appended.
    await this.taking
    this.status = 'closed'
  }
}

export interface DiskSpace {
  /** bytes an unprivileged writer may still use (statfs f_bavail) */
  freeBytes: number
  totalBytes: number
}

/** Free and total space of the volume holding `path`: one statfs, no `df`. */
export async function diskSpace (path: string): Promise<DiskSpace> {
  const s = await statfs(path)
  return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize }
}

/** A figure that may fail or hang: null then, never the whole reading. */
async function figure<T> (promise: Promise<T>): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<null>((resolve) => { timer = setTimeout(() => { resolve(null) }, FIGURE_TIMEOUT_MS) })
  try {
    return await Promise.race([promise.catch(() => null), timeout])
  } finally {
    clearTimeout(timer)
  }
}

function finite (value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null
}

function round (value: number | null, digits: number): number | null {
  if (value === null) return null
  const f = 10 ** digits
  return Math.round(value * f) / f
}
