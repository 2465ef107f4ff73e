/**
 * The buffer's own clock, which the TTL is measured on.
 *
 * Gateways often have no real-time clock: a Raspberry Pi boots with the time it saved at its
 * last shutdown (fake-hwclock) or with 1970, and jumps forward when NTP sets it, by hours or
 * years. Readings stamped before that jump would all look ancient at once, and a wall-clock TTL
 * would drop them all. So the TTL never looks at the wall clock. It measures how long a reading
 * has been in the buffer in *buffer time*: milliseconds of a monotonic clock, counted while the
 * machine is up, carried across sluice's restarts in the buffer's meta.
 *
 * - While sluice runs, buffer time advances with the monotonic clock (performance.now).
 * - Across a restart on the same boot (sluice crashed or was restarted, the machine stayed up),
 *   the time sluice was down is counted too: the kernel's uptime tells exactly how long it was.
 * - Time the machine was switched off is not counted, because a gateway without a real-time
 *   clock cannot know how long that was. A reading therefore lives at least `ttl` of powered-on
 *   time: it may outlive `ttl` in calendar time by the gateway's downtime, never the other way.
 *
 * Each reading is stored with its buffer time (`storedAt`); the wall-clock `time` of the reading
 * goes upstream unchanged, only expiry ignores it.
 */
export interface StoredClock {
  /** buffer time when this was saved, ms */
  now: number
  /** the boot this was saved on */
  bootId: string
  /** the kernel's uptime when this was saved, seconds */
  uptime: number
}

export interface ClockSources {
  bootId: string
  /** seconds since the machine booted (os.uptime) */
  uptime: () => number
  /** a monotonic clock in milliseconds (performance.now) */
  monotonic: () => number
}

export class BufferClock {
  private readonly sources: ClockSources
  private readonly base: number
  private readonly startedAt: number

  /**
   * `stored` is what the last run saved; `lastStoredAt` the buffer time of the newest reading on
   * disk. The clock is saved every few seconds, so after a crash on another boot it may be behind
   * the newest reading: it resumes from whichever is later, so buffer time never runs backwards.
   */
  constructor (stored: StoredClock | undefined, sources: ClockSources, lastStoredAt = 0) {
    this.sources = sources
    this.startedAt = sources.monotonic()
    let base = stored?.now ?? 0
    if (stored !== undefined && stored.bootId === sources.bootId) {
      // Same boot: the machine was up while sluice was not, and uptime says for how long.
      base += Math.max(0, (sources.uptime() - stored.uptime) * 1000)
    }
    this.base = Math.round(Math.max(base, lastStoredAt))
  }

  /** buffer time now, in milliseconds */
  now (): number {
    return this.base + Math.round(this.sources.monotonic() - this.startedAt)
  }

  /** what to save so that the next start carries buffer time on */
  save (): StoredClock {
    return { now: this.now(), bootId: this.sources.bootId, uptime: this.sources.uptime() }
  }
}
