/**
 * 6. Backlog memory of the spawned daemon: `sluice run` as its own process (the built bin and a
 * config file, nothing of the bench in it), its upstream down (a closed port: the forwarder keeps
 * retrying, nothing drains), takes a backlog over MQTT QoS 1 in ten chunks; its resident memory
 * (VmRSS, from /proc) is read after each chunk. sluice keeps the backlog on disk, so its memory
 * should not grow with it.
 *
 * Baseline: the same chunks sent to the bare aedes forwarder with its upstream down (in a host
 * child), its RSS read after each chunk: a store-in-memory design like a mosquitto bridge, whose
 * queue holds the whole backlog. Neither process is made to collect garbage first: this is the
 * memory an operator would see.
 *
 * Growth is counted from the first chunk, not from start-up: the first chunk carries the JIT,
 * the connections and LevelDB's first files, which a longer backlog does not add to.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Worker } from './ipc.js'
import type { RunResult } from './load.js'
import type { ProcMemory } from './daemon.js'
import { UPSTREAM_PREFIX, type MemorySample } from './common.js'
import { freePort } from '../ports.js'
import { makeRow, progress, scoped, type Row, type ScenarioResult, type Sizes } from './runner.js'
import { slope } from './stats.js'

type System = 'sluice-daemon' | 'bare-forwarder-down'

/** Memory after a chunk; `readings`: PUBACKed so far, counted the same way for both systems. */
type Sample = (ProcMemory | MemorySample) & { readings: number }

interface Sent {
  samples: Sample[]
  /** first publish to the last PUBACK of the last chunk */
  ms: number
}

interface BacklogRun extends Sent {
  system: System
  repeat: number
  readings: number
  /** the last sample's RSS, bytes */
  rss: number
  /** from the first sample to the last, bytes */
  rssGrowth: number
  /** bytes per 100k readings, least squares over the samples */
  rssSlopePer100k: number
  /** sluice: how long it took to exit on SIGTERM */
  stopMs?: number
}

const CHUNKS = 10
const MB = 1024 * 1024
/** start to "sluice ready": a fresh buffer, so seconds would already be slow */
const READY_TIMEOUT_MS = 30_000
/** SIGTERM to exit; a clean stop closes the buffer, whatever its backlog */
const STOP_GRACE_MS = 10_000

/**
 * The in-process gateway's settings elsewhere in the bench (host.ts), as a config file (JSON is
 * YAML). The broker listens on port 0: the daemon picks a free port and names it when ready.
 */
async function writeDaemonConfig (dir: string, upstreamUrl: string, sizes: Sizes): Promise<string> {
  const file = join(dir, 'sluice.yaml')
  await writeFile(file, JSON.stringify({
    gateway: { id: 'bench' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: join(dir, 'buffer'), sync: 'interval' },
    upstream: { url: upstreamUrl, inflight: sizes.forwarderInflight, backoff: { min: '200ms', max: '1s' } },
    // The gateway's own health readings would add to the backlog; nothing reads an admin endpoint.
    health: { enabled: false },
    admin: { enabled: false },
    // The least verbose level that still logs "sluice ready".
    log: { level: 'info' }
  }))
  return file
}

/** Sends the backlog in CHUNKS chunks from `publishers` sensors, reading memory after each. */
async function sendBacklog (load: Worker, port: number, sizes: Sizes, memory: () => Promise<ProcMemory | MemorySample>): Promise<Sent> {
  await load.call('connect', { port, clients: sizes.publishers })
  const samples: Sample[] = []
  let t0 = 0
  let tAcked = 0
  for (let chunk = 1; chunk <= CHUNKS; chunk++) {
    const readings = Math.round(sizes.backlogReadings * chunk / CHUNKS)
    const total = readings - (samples.at(-1)?.readings ?? 0)
    const run = await load.call<RunResult>('run', { total, window: sizes.window }, sizes.timeoutMs)
    if (chunk === 1) t0 = run.t0
    tAcked = run.tAcked
    samples.push({ ...await memory(), readings })
  }
  return { samples, ms: tAcked - t0 }
}

function result (system: System, repeat: number, sent: Sent, stopMs?: number): BacklogRun {
  const { samples } = sent
  const first = samples[0]
  const last = samples[samples.length - 1]
  const run: BacklogRun = {
    system,
    repeat,
    readings: last.readings,
    ...sent,
    rss: last.rss,
    rssGrowth: last.rss - first.rss,
    rssSlopePer100k: slope(samples.map((s) => ({ x: s.readings, y: s.rss }))) * 100_000,
    stopMs
  }
  progress(`backlog ${system} #${repeat + 1}: RSS ${(first.rss / MB).toFixed(0)} -> ${(last.rss / MB).toFixed(0)} MB ` +
    `from ${first.readings.toLocaleString('en-US')} to ${last.readings.toLocaleString('en-US')} readings ` +
    `(${(run.rssSlopePer100k / MB).toFixed(2)} MB/100k), sent in ${(sent.ms / 1000).toFixed(0)} s` +
    (stopMs === undefined ? '' : `, stopped in ${Math.round(stopMs)} ms`))
  return run
}

async function runSluice (repeat: number, sizes: Sizes): Promise<BacklogRun> {
  return await scoped(async (scope) => {
    const dir = await scope.dir('backlog')
    const config = await writeDaemonConfig(dir, `mqtt://127.0.0.1:${await freePort()}`, sizes)
    const daemon = await scope.daemon(config, READY_TIMEOUT_MS)
    const load = await scope.load()
    const sent = await sendBacklog(load, daemon.brokerPort, sizes, async () => await daemon.memory())
    const { ms } = await daemon.stop(STOP_GRACE_MS)
    return result('sluice-daemon', repeat, sent, ms)
  })
}

async function runBaseline (repeat: number, sizes: Sizes): Promise<BacklogRun> {
  return await scoped(async (scope) => {
    const downUrl = `mqtt://127.0.0.1:${await freePort()}`
    const host = await scope.host()
    const load = await scope.load()
    const { port } = await host.call<{ port: number }>('startBare', { forwardTo: downUrl, topicPrefix: UPSTREAM_PREFIX, waitUpstream: false })
    const sent = await sendBacklog(load, port, sizes, async () => await host.call<MemorySample>('memory', { gc: false }))
    return result('bare-forwarder-down', repeat, sent)
  })
}

export async function backlogMemory (sizes: Sizes): Promise<ScenarioResult> {
  const runs: BacklogRun[] = []
  for (let repeat = 0; repeat < sizes.repeats; repeat++) {
    runs.push(await runSluice(repeat, sizes))
    runs.push(await runBaseline(repeat, sizes))
  }
  const mb = (system: System, pick: (r: BacklogRun) => number): number[] => runs.filter((r) => r.system === system).map((r) => pick(r) / MB)
  const row = (name: string, unit: string, pick: (r: BacklogRun) => number): Row => makeRow({
    section: '6. backlog memory (spawned daemon)',
    name,
    unit,
    better: 'lower',
    baselineName: 'bare aedes forwarder, upstream down: backlog queued in memory',
    sluiceRuns: mb('sluice-daemon', pick),
    baselineRuns: mb('bare-forwarder-down', pick)
  })
  const n = sizes.backlogReadings.toLocaleString('en-US')
  return {
    rows: [
      row(`RSS with ${n} readings buffered`, 'MB', (r) => r.rss),
      row(`RSS growth from first chunk to ${n}`, 'MB', (r) => r.rssGrowth),
      row('RSS growth per 100k readings (least-squares slope over the chunks)', 'MB/100k', (r) => r.rssSlopePer100k)
    ],
    runs
  }
}
