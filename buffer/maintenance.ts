/**
 * The log's periodic work, once a second by default: giving space back (room.ts), keeping
 * LevelDB's own journals short, saving the TTL clock, and dropping expired readings.
 */
import { journalLimit } from './bounds.js'
import { clockSaveOps } from './meta.js'
import { dropExpired } from './dropping.js'
import type { Room } from './room.js'
import type { LogState } from './state.js'

/** how often the TTL clock is saved, so a crash loses little buffer time */
const CLOCK_SAVE_MS = 10_000

/** Runs the maintenance rounds; rounds never overlap. */
export class Maintenance {
  private readonly state: LogState
  private readonly room: Room
  private readonly intervalMs: number
  private timer: NodeJS.Timeout | null = null
  private running: Promise<void> | null = null
  private lastClockSave = 0
  private lastTtlSweep = Number.NEGATIVE_INFINITY

  constructor (state: LogState, room: Room, intervalMs: number) {
    this.state = state
    this.room = room
    this.intervalMs = intervalMs
  }

  /** The log is open: rounds start. */
  start (): void {
    this.timer = setInterval(() => { this.tick() }, this.intervalMs)
    this.timer.unref()
  }

  /** The log is closing: no new round starts. */
  stop (): void {
    if (this.timer !== null) clearInterval(this.timer)
  }

  /** Closing: waits for the round in progress. */
  async settle (): Promise<void> {
    while (this.running !== null) await this.running
  }

  /**
   * Drops the readings that have been in the buffer longer than the TTL (in buffer time,
   * clock.ts) and compacts their range away. Returns how many were dropped.
   */
  async expire (): Promise<number> {
    const { dropped, range } = await dropExpired(this.state)
    if (range !== null) {
      await this.room.compact(range.first, range.last)
      this.room.wake()
    }
    return dropped
  }

  private tick (): void {
    if (this.running !== null || this.state.status !== 'open') return
    this.running = this.round().catch(() => {}).finally(() => { this.running = null })
  }

  private async round (): Promise<void> {
    const state = this.state
    const now = performance.now()
    await this.room.upkeep(now)
    // LevelDB's LOG and MANIFEST grow with every compaction until the database is reopened.
    if (state.usage.journalBytes > journalLimit(state.bounds.maxBytes)) {
      await state.reopen()
      await state.usage.sample()
    }
    if (now - this.lastClockSave >= CLOCK_SAVE_MS) {
      this.lastClockSave = now
      await state.gate.shared(async () => {
        await state.db.batch(clockSaveOps({ epochs: state.epochs, clock: state.ttlClock.save() }))
      })
    }
    if (state.bounds.ttlMs > 0 && now - this.lastTtlSweep >= ttlSweepInterval(state.bounds.ttlMs)) {
      this.lastTtlSweep = now
      await this.expire()
    }
  }
}

/** How often expired readings are looked for: a twentieth of the TTL, between 1 s and 60 s. */
function ttlSweepInterval (ttlMs: number): number {
  return Math.min(60_000, Math.max(1000, Math.floor(ttlMs / 20)))
}
