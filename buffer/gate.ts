/**
 * Shared and exclusive sections over the log's LevelDB handle.
 *
 * Shared: reads, commits, acknowledgements, compactions: they touch disjoint keys or are safe
 * together. Exclusive: whatever must not run beside a read, namely dropping readings (a read in
 * progress could return a reading that the drop then announces as lost, so it would be both
 * delivered and announced) and closing and reopening the database after a failed write or a
 * repair. An exclusive section waits for the shared ones in progress; shared ones that arrive
 * meanwhile wait for it, so it is not starved.
 */
export class Gate {
  private active = 0
  private exclusiveHeld: Promise<void> | null = null
  private drained: (() => void) | null = null

  async shared<T> (fn: () => Promise<T>): Promise<T> {
    while (this.exclusiveHeld !== null) await this.exclusiveHeld
    this.active++
    try {
      return await fn()
    } finally {
      this.active--
      if (this.active === 0) this.drained?.()
    }
  }

  async exclusive<T> (fn: () => Promise<T>): Promise<T> {
    while (this.exclusiveHeld !== null) await this.exclusiveHeld
    let release!: () => void
    this.exclusiveHeld = new Promise<void>((resolve) => { release = resolve })
    try {
      while (this.active > 0) await new Promise<void>((resolve) => { this.drained = resolve })
      this.drained = null
      return await fn()
    } finally {
      this.exclusiveHeld = null
      release()
    }
  }
}
