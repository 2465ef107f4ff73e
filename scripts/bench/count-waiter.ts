/**
 * Waits for a running count (readings or messages arrived upstream) to reach a number: the arrival
 * that brings it there ends the wait, so the time of that arrival is the figure, not a poll's.
 */
export class CountWaiter {
  private target = Number.POSITIVE_INFINITY
  private reached: (() => void) | null = null

  /** To be called after every change of the count. */
  counted (count: number): void {
    if (count >= this.target) this.reached?.()
  }

  /** Resolves once `count()` is at least `n`; rejects after `timeoutMs`, saying `what` fell short. */
  async wait (count: () => number, n: number, timeoutMs: number, what: string): Promise<void> {
    if (count() >= n) return
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.reached = null
          reject(new Error(`upstream: ${count()} of ${n} ${what} arrived within ${timeoutMs} ms`))
        }, timeoutMs)
        this.target = n
        this.reached = () => { clearTimeout(timer); this.reached = null; resolve() }
      })
    } finally {
      this.target = Number.POSITIVE_INFINITY
    }
  }
}
