/**
 * Child process hosting one system under test: a sluice Gateway (real LevelDB in a temp dir) or
 * the bare aedes baseline. Running it apart from the load generator and the upstream keeps their
 * CPU out of its numbers, and lets the bench read this process's own memory. Started with
 * --expose-gc so memory can be read after a full collection.
 */
import { performance } from 'node:perf_hooks'
import { Gateway } from '../../daemon/gateway.js'
import { createLogger } from '../../daemon/logger.js'
import { DurableLog } from '../../buffer/index.js'
import { validateConfig } from '../../config/index.js'
import { BareBroker } from './bare.js'
import { serve, wallNow } from './ipc.js'
import { BENCH_PASSWORD, BOOT_ID, benchAcl, readingPayload, sensorTopic, type MemorySample, type SluiceSetup } from './common.js'
import { hashPassword } from '../../adapters/password-hash.js'

let gateway: Gateway | null = null
let bare: BareBroker | null = null
let sampler: { timer: NodeJS.Timeout, samples: MemorySample[] } | null = null

async function sluiceConfig (setup: SluiceSetup): Promise<ReturnType<typeof validateConfig>> {
  const hash = setup.users === undefined ? '' : await hashPassword(BENCH_PASSWORD)
  const users = setup.users === undefined
    ? []
    : Array.from({ length: setup.users.count }, (_, i) => ({ username: `s${i}`, passwordHash: hash, publish: benchAcl(setup.users?.patternsPerUser ?? 1) }))
  return validateConfig({
    gateway: { id: 'bench' },
    ingest: { broker: { listen: '127.0.0.1:0', users } },
    buffer: { path: setup.dir, sync: setup.sync, syncInterval: '1s' },
    upstream: { url: setup.upstreamUrl, inflight: setup.inflight, backoff: { min: '200ms', max: '1s' } },
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'silent' }
  })
}

async function startGateway (setup: SluiceSetup): Promise<{ gateway: Gateway, startMs: number, t0: number }> {
  const config = await sluiceConfig(setup)
  const t0 = wallNow()
  const started = performance.now()
  const gw = await Gateway.start({ config, logger: createLogger('silent'), bootId: BOOT_ID })
  return { gateway: gw, startMs: performance.now() - started, t0 }
}

/** Readings taken in so far, whatever the system. */
function readings (): number {
  if (gateway !== null) return gateway.stats().lastSeq
  return bare?.received ?? 0
}

function memory (): MemorySample {
  const m = process.memoryUsage()
  return { at: wallNow(), readings: readings(), rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers }
}

function fullGc (): void {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('the host needs --expose-gc')
  gc()
  gc()
}

serve({
  async startSluice (setup: SluiceSetup) {
    const started = await startGateway(setup)
    gateway = started.gateway
    const broker = gateway.broker
    if (broker === null) throw new Error('the gateway has no broker')
    return { port: broker.address().port, startMs: started.startMs, t0: started.t0 }
  },

  async startBare (options: { forwardTo: string | null, topicPrefix: string, waitUpstream: boolean }) {
    bare = await BareBroker.start(options)
    if (options.waitUpstream) await bare.waitUpstream()
    return { port: bare.port }
  },

  /** Until `readings` are taken in (the load generator's PUBACKs can run ahead of QoS 0 counts). */
  async waitReadings ({ n, timeoutMs }: { n: number, timeoutMs: number }) {
    const deadline = Date.now() + timeoutMs
    while (readings() < n) {
      if (Date.now() > deadline) throw new Error(`only ${readings()} of ${n} readings taken in`)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return readings()
  },

  stats () {
    if (gateway !== null) return { system: 'sluice', ...gateway.stats() }
    if (bare !== null) return { system: 'bare', received: bare.received, forwarded: bare.forwarded, queued: bare.queued }
    return null
  },

  memory ({ gc }: { gc: boolean }) {
    if (gc) fullGc()
    return memory()
  },

  startSampling ({ intervalMs }: { intervalMs: number }) {
    if (sampler !== null) clearInterval(sampler.timer)
    const samples: MemorySample[] = [memory()]
    sampler = { timer: setInterval(() => { samples.push(memory()) }, intervalMs), samples }
  },

  stopSampling () {
    if (sampler === null) return []
    clearInterval(sampler.timer)
    const { samples } = sampler
    sampler = null
    samples.push(memory())
    return samples
  },

  /**
   * Writes `n` readings straight into a buffer (no broker, no network): the fast way to make a
   * backlog. Appends in chunks so each group commit stays a reasonable LevelDB batch.
   */
  async fill ({ dir, n, chunk = 2000 }: { dir: string, n: number, chunk?: number }) {
    const started = performance.now()
    const log = await DurableLog.open({ path: dir, sync: 'interval', syncIntervalMs: 1000, bootId: BOOT_ID })
    const now = Date.now()
    for (let done = 0; done < n;) {
      const size = Math.min(chunk, n - done)
      let durable: Promise<void> = Promise.resolve()
      for (let i = 0; i < size; i++, done++) {
        durable = log.append({ time: now + done, topic: sensorTopic(done % 10), payload: readingPayload(done % 10, done) }).durable
      }
      await durable
    }
    await log.close()
    return { ms: performance.now() - started }
  },

  /**
   * Times Gateway.start on each buffer in turn (closing the gateway after each). The first
   * buffer is a warm-up: module loading and JIT would otherwise be charged to whichever is first.
   */
  async timeStarts ({ runs, upstreamUrl }: { runs: Array<{ label: string, dir: string }>, upstreamUrl: string }) {
    const results: Array<{ label: string, startMs: number, closeMs: number, stats: unknown }> = []
    for (const run of runs) {
      const { gateway: gw, startMs } = await startGateway({ dir: run.dir, sync: 'interval', upstreamUrl, inflight: 64 })
      const stats = gw.stats()
      const closing = performance.now()
      await gw.close()
      results.push({ label: run.label, startMs, closeMs: performance.now() - closing, stats })
    }
    return results
  },

  async close () {
    if (sampler !== null) clearInterval(sampler.timer)
    await gateway?.close()
    await bare?.close()
    gateway = null
    bare = null
  }
})
