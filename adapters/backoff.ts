import pRetry from 'p-retry'

export interface BackoffOptions {
  /** delays in milliseconds: exponential from min to max, randomized */
  backoff: { min: number, max: number }
  signal: AbortSignal
  /** told of the first failure and then every tenth: an outage of days must not fill the journal */
  onFailure: (err: Error, attempt: number) => void
}

/**
 * Calls `connect` until it succeeds or `signal` aborts. MQTT.js reconnects on a fixed period,
 * so a fleet restarting together would retry in lockstep; this backoff is exponential with jitter.
 */
export async function connectWithBackoff<T> (connect: () => Promise<T>, options: BackoffOptions): Promise<T> {
  return await pRetry(connect, {
    retries: Number.POSITIVE_INFINITY,
    factor: 2,
    minTimeout: options.backoff.min,
    maxTimeout: options.backoff.max,
    randomize: true,
    signal: options.signal,
    onFailedAttempt: ({ error, attemptNumber }) => {
      if (attemptNumber === 1 || attemptNumber % 10 === 0) options.onFailure(error, attemptNumber)
    }
  })
}

/** Waits `ms` milliseconds, or less if `signal` aborts first (it resolves either way). */
export async function delay (ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms)
    function done (): void {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done)
  })
}
