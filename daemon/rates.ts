/** Totals the rate window samples. */
export interface RateTotals { ingested: number, forwarded: number }

export interface Rates {
  /** seconds the rates are taken over: a minute, or less just after start */
  windowSeconds: number
  ingestPerSecond: number
  forwardPerSecond: number
}

const RATE_WINDOW_MS = 60_000
const RATE_SAMPLE_MS = 5000

/**
 * Readings per second over the last minute, for `/status` and `sluice status` (Prometheus takes
 * its own rates from the counters). A sample of the totals every 5 s; the rate is the difference
 * between now and the oldest sample still inside the minute.
 */
export class RateWindow {
  private readonly totals: () => RateTotals
  private readonly now: () => number
  private readonly samples: Array<{ at: number } & RateTotals> = []
  private timer: NodeJS.Timeout | null = null

  constructor (totals: () => RateTotals, now: () => number = () => performance.now()) {
    this.totals = totals
    this.now = now
  }

  start (): void {
    this.sample()
    this.timer = setInterval(() => { this.sample() }, RATE_SAMPLE_MS)
    this.timer.unref()
  }

  private sample (): void {
    const at = this.now()
    this.samples.push({ at, ...this.totals() })
    while (this.samples.length > 1 && at - this.samples[1].at >= RATE_WINDOW_MS) this.samples.shift()
  }

  rates (): Rates {
    const at = this.now()
    const first = this.samples[0]
    const current = this.totals()
    const seconds = first === undefined ? 0 : (at - first.at) / 1000
    if (first === undefined || seconds < 0.001) return { windowSeconds: 0, ingestPerSecond: 0, forwardPerSecond: 0 }
    return {
      windowSeconds: Math.round(seconds * 10) / 10,
      ingestPerSecond: round((current.ingested - first.ingested) / seconds),
      forwardPerSecond: round((current.forwarded - first.forwarded) / seconds)
    }
  }

  stop (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }
}

function round (n: number): number {
  return Math.round(n * 100) / 100
}
