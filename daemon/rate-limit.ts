/**
 * The cap on upstream publishes (`upstream.maxMessagesPerSecond`): a token bucket that refills at
 * `ratePerSecond` and holds one token, so publishes are spaced evenly and no second ever sees
 * more than the cap, bursts included (clouds count per connection and second: AWS IoT Core
 * 100/s, and throttles past it). With cbor-batch a message carries many readings, so a backlog
 * still drains fast under the cap.
 */
export class TokenBucket {
  private readonly ratePerMs: number
  private readonly now: () => number
  private tokens = 1
  private last: number

  /**
   * @param ratePerSecond publishes per second; 0 means no cap
   * @param now monotonic milliseconds (performance.now); injectable so tests decide the time
   */
  constructor (ratePerSecond: number, now: () => number = () => performance.now()) {
    this.ratePerMs = ratePerSecond / 1000
    this.now = now
    this.last = now()
  }

  get capped (): boolean { return this.ratePerMs > 0 }

  private refill (): void {
    const t = this.now()
    this.tokens = Math.min(1, this.tokens + (t - this.last) * this.ratePerMs)
    this.last = t
  }

  /** Milliseconds until a publish may go (0: now). */
  delay (): number {
    if (!this.capped) return 0
    this.refill()
    return this.tokens >= 1 ? 0 : Math.ceil((1 - this.tokens) / this.ratePerMs)
  }

  /** A publish went: spends a token (call only when delay() is 0). */
  take (): void {
    if (!this.capped) return
    this.refill()
    this.tokens -= 1
  }
}
