/**
 * Waits for a condition on state that has no event of its own (a gateway's counters): checks it
 * every few milliseconds until it holds, and fails with `what` after the deadline.
 */
export async function waitUntil (predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}
