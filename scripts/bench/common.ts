/** What the bench's processes share: the readings sensors send, setups, small helpers. */
import { mkdtemp, rm, cp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A fixed boot id, so no run of the bench ever looks like a reboot (which would start a new epoch). */
export const BOOT_ID = 'sluice-bench-boot'

/** Where sluice (and the bare forwarder, on the same pattern) publish upstream. */
export const UPSTREAM_PREFIX = 'sluice/bench/'
export const UPSTREAM_FILTER = 'sluice/#'

export function sensorTopic (sensor: number): string {
  return `sensors/s${sensor}/climate`
}

/** A typical sensor reading: a small JSON object (~60 bytes). */
export function readingPayload (sensor: number, n: number): Buffer {
  return Buffer.from(JSON.stringify({ sensor: `s${sensor}`, n, temp: 21.5 + (n % 7) / 10, hum: 40.25, bat: 3.71 }))
}

export interface SluiceSetup {
  dir: string
  sync: 'always' | 'interval'
  upstreamUrl: string
  inflight: number
  /** broker users s0, s1, ... (password BENCH_PASSWORD), each with this many ACL patterns */
  users?: { count: number, patternsPerUser: number }
}

/** The password of every bench broker user (one scrypt hash, made once per host). */
export const BENCH_PASSWORD = 'bench-sensor'

/**
 * A user's ACL for the bench: `patterns` publish rules, the one that matches the user's sensor
 * topic last (a deny and literal topics before it), so every publish walks the whole list.
 */
export function benchAcl (patterns: number): Array<string | { deny: string }> {
  const rules: Array<string | { deny: string }> = [{ deny: 'sensors/{username}/config/#' }]
  for (let i = 1; i < patterns - 1; i++) rules.push(`cmd/{username}/k${i}/+`)
  rules.push('sensors/{username}/#')
  return rules
}

export interface MemorySample {
  /** wall-clock ms */
  at: number
  /** readings taken in so far */
  readings: number
  rss: number
  heapUsed: number
  external: number
  arrayBuffers: number
}

export const HOST_SCRIPT = new URL('./host.js', import.meta.url)
export const LOAD_SCRIPT = new URL('./load.js', import.meta.url)

/** A fresh directory under the system temp dir; `remove()` deletes it. */
export async function tempDir (label: string): Promise<{ path: string, remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `sluice-bench-${label}-`))
  return { path, remove: async () => { await rm(path, { recursive: true, force: true }) } }
}

export async function copyDir (from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true })
}

export async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}
