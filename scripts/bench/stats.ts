/** Summaries of repeated measurements: the median, and the spread of the runs around it. */

export interface Summary {
  runs: number[]
  median: number
  min: number
  max: number
  /** (max - min) / |median|: how far apart the runs were, relative to the median */
  spread: number
}

export function summarize (runs: number[]): Summary {
  if (runs.length === 0) throw new Error('no runs to summarize')
  const sorted = [...runs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  const median = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
  const min = sorted[0]
  const max = sorted[sorted.length - 1]
  return { runs, median, min, max, spread: median === 0 ? 0 : (max - min) / Math.abs(median) }
}

/**
 * Least-squares slope of y over x: used for memory growth per reading, from samples taken during
 * a run (less sensitive to where a GC happened to fall than two endpoints).
 */
export function slope (points: Array<{ x: number, y: number }>): number {
  const n = points.length
  if (n < 2) return 0
  const mx = points.reduce((s, p) => s + p.x, 0) / n
  const my = points.reduce((s, p) => s + p.y, 0) / n
  let num = 0
  let den = 0
  for (const p of points) {
    num += (p.x - mx) * (p.y - my)
    den += (p.x - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}
