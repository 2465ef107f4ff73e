/**
 * mulberry32: a small seeded pseudo-random generator, so a randomized run (a model test, the
 * fuzzer, the power cuts) can be replayed from the seed it printed. Not for anything secret.
 */
export function mulberry32 (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), a | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}
