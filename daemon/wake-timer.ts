/** Schedules and cancels the forwarder's wake-up. */
export interface ForwarderTimers {
  set: (callback: () => void, ms: number) => unknown
  clear: (handle: unknown) => void
}

/**
 * Node's timers, unref'd: the wake-up (a batch's linger, the rate cap, a retry's backoff) never
 * keeps the process alive by itself; the upstream connection does while there is work.
 */
const nodeTimers: ForwarderTimers = {
  set: (callback, ms) => setTimeout(callback, ms).unref(),
  clear: (handle) => { clearTimeout(handle as NodeJS.Timeout) }
}

/** One timer for the earliest of several reasons to wake up: a later request never delays it. */
export class WakeTimer {
  private readonly wake: () => void
  private readonly now: () => number
  private readonly timers: ForwarderTimers
  private timer: unknown = null
  private at = Number.POSITIVE_INFINITY

  constructor (wake: () => void, now: () => number, timers: ForwarderTimers = nodeTimers) {
    this.wake = wake
    this.now = now
    this.timers = timers
  }

  /** Calls `wake` in `ms` (monotonic), unless it is already due sooner. */
  in (ms: number): void {
    const at = this.now() + ms
    if (this.timer !== null && this.at <= at) return
    if (this.timer !== null) this.timers.clear(this.timer)
    this.at = at
    this.timer = this.timers.set(() => {
      this.timer = null
      this.at = Number.POSITIVE_INFINITY
      this.wake()
    }, Math.max(1, Math.ceil(ms)))
  }

  clear (): void {
    if (this.timer !== null) this.timers.clear(this.timer)
    this.timer = null
    this.at = Number.POSITIVE_INFINITY
  }
}
