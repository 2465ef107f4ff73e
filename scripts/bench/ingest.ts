/**
 * 2. Ingest with PUBACK-after-durable, and 5. memory while buffering.
 *
 * The upstream is down (its URL points at a closed port), so every reading stays in the buffer.
 * The rate is PUBACKs per second at the sensors, first publish to last PUBACK: sluice PUBACKs only
 * once a reading's group commit is written (fsynced too with `sync: always`); the baseline is a
 * bare aedes, which PUBACKs with no disk at all.
 *
 * Memory is read in the process hosting the system, after a full GC, before and after the
 * measured readings (a warm-up comes first, so start-up allocations are not counted), and sampled
 * every 200 ms in between. Its baseline is the bare forwarder with its upstream down: a
 * store-in-memory design like a mosquitto bridge, whose queue holds the backlog.
 */
import type { RunResult } from './load.js'
import { BENCH_PASSWORD, UPSTREAM_PREFIX, type MemorySample } from './common.js'
import { freePort } from '../ports.js'
import { fmtRate, makeRow, progress, rate, scoped, type ScenarioResult, type Sizes } from './runner.js'
import { slope } from './stats.js'

type System = 'sluice-interval' | 'sluice-always' | 'sluice-acl' | 'bare' | 'bare-forwarder-down'

/** The ACL scenario: this many broker users, each with this many publish patterns. */
const ACL_USERS = 100
const ACL_PATTERNS = 20

interface IngestRun {
  system: System
  repeat: number
  messages: number
  ms: number
  rate: number
  /** CPU time of the process hosting the system, per reading, µs */
  hostCpuPerMessage: number
  memory: {
    /** after warm-up and a full GC */
    before: MemorySample
    /** after the run and a full GC */
    after: MemorySample
    peakRss: number
    /** bytes per 100k readings, endpoints after GC */
    rssGrowthPer100k: number
    heapGrowthPer100k: number
    /** bytes per 100k readings, least-squares over the samples taken during the run */
    rssSlopePer100k: number
    samples: MemorySample[]
  }
  hostStats: unknown
}

const MB = 1024 * 1024

async function runOnce (system: System, repeat: number, sizes: Sizes): Promise<IngestRun> {
  return await scoped(async (scope) => {
    const downUrl = `mqtt://127.0.0.1:${await freePort()}`
    const dir = await scope.dir('ingest')
    const host = await scope.host()
    const load = await scope.load()
    let port: number
    if (system === 'bare' || system === 'bare-forwarder-down') {
      const forwardTo = system === 'bare' ? null : downUrl
      port = (await host.call<{ port: number }>('startBare', { forwardTo, topicPrefix: UPSTREAM_PREFIX, waitUpstream: false })).port
    } else {
      const sync = system === 'sluice-always' ? 'always' : 'interval'
      const users = system === 'sluice-acl' ? { count: ACL_USERS, patternsPerUser: ACL_PATTERNS } : undefined
      port = (await host.call<{ port: number }>('startSluice', { dir, sync, upstreamUrl: downUrl, inflight: sizes.forwarderInflight, users }, sizes.timeoutMs)).port
    }
    await load.call('connect', { port, clients: sizes.publishers, password: system === 'sluice-acl' ? BENCH_PASSWORD : undefined })

    await load.call('run', { total: sizes.ingestWarmup, window: sizes.window }, sizes.timeoutMs)
    await host.call('waitReadings', { n: sizes.ingestWarmup, timeoutMs: 10_000 })
    const before = await host.call<MemorySample>('memory', { gc: true })
    await host.call('startSampling', { intervalMs: 200 })
    const hostCpu = await host.call<number>('cpuUsage')

    const run = await load.call<RunResult>('run', { total: sizes.ingestMessages, window: sizes.window }, sizes.timeoutMs)
    const total = sizes.ingestWarmup + sizes.ingestMessages
    await host.call('waitReadings', { n: total, timeoutMs: 10_000 })
    const hostCpuPerMessage = (await host.call<number>('cpuUsage') - hostCpu) / sizes.ingestMessages
    const samples = await host.call<MemorySample[]>('stopSampling')
    const after = await host.call<MemorySample>('memory', { gc: true })
    const ms = run.tAcked - run.t0
    const per100k = 100_000 / sizes.ingestMessages
    const result: IngestRun = {
      system,
      repeat,
      messages: sizes.ingestMessages,
      ms,
      rate: rate(sizes.ingestMessages, ms),
      hostCpuPerMessage,
      memory: {
        before,
        after,
        peakRss: Math.max(...samples.map((s) => s.rss)),
        rssGrowthPer100k: (after.rss - before.rss) * per100k,
        heapGrowthPer100k: (after.heapUsed - before.heapUsed) * per100k,
        rssSlopePer100k: slope(samples.map((s) => ({ x: s.readings, y: s.rss }))) * 100_000,
        samples
      },
      hostStats: await host.call('stats')
    }
    const m = result.memory
    progress(`ingest ${system} #${repeat + 1}: ${fmtRate(result.rate)}, CPU/msg ${hostCpuPerMessage.toFixed(1)} µs; RSS ${(before.rss / MB).toFixed(0)} -> ${(after.rss / MB).toFixed(0)} MB ` +
      `(peak ${(m.peakRss / MB).toFixed(0)}), heap ${(before.heapUsed / MB).toFixed(1)} -> ${(after.heapUsed / MB).toFixed(1)} MB`)
    return result
  })
}

export async function ingestAndMemory (sizes: Sizes): Promise<ScenarioResult> {
  const runs: IngestRun[] = []
  for (let repeat = 0; repeat < sizes.repeats; repeat++) {
    for (const system of ['sluice-interval', 'bare', 'sluice-always', 'bare-forwarder-down', 'sluice-acl'] as const) {
      runs.push(await runOnce(system, repeat, sizes))
    }
  }
  const of = (system: System): IngestRun[] => runs.filter((r) => r.system === system)
  const rates = (system: System): number[] => of(system).map((r) => r.rate)
  const mb = (system: System, pick: (m: IngestRun['memory']) => number): number[] => of(system).map((r) => pick(r.memory) / MB)
  const ingestBaseline = 'bare aedes, PUBACK with no disk'
  const memoryBaseline = 'bare aedes forwarder, upstream down: backlog queued in memory'
  const n = `${Math.round(sizes.ingestMessages / 1000)}k`
  return {
    rows: [
      makeRow({ section: '2. ingest', name: `PUBACK rate, upstream down, sync interval (${n})`, unit: 'msg/s', better: 'higher', baselineName: ingestBaseline, sluiceRuns: rates('sluice-interval'), baselineRuns: rates('bare') }),
      makeRow({ section: '2. ingest', name: `PUBACK rate, upstream down, sync always (${n})`, unit: 'msg/s', better: 'higher', baselineName: ingestBaseline, sluiceRuns: rates('sluice-always'), baselineRuns: rates('bare') }),
      makeRow({ section: '2. ingest', name: `PUBACK rate with ${ACL_USERS} broker users x ${ACL_PATTERNS} ACL patterns, sync interval (${n})`, unit: 'msg/s', better: 'higher', baselineName: 'the same with no users configured', sluiceRuns: rates('sluice-acl'), baselineRuns: rates('sluice-interval') }),
      makeRow({ section: '2. ingest', name: 'CPU per reading of the gateway process, sync interval', unit: 'µs/msg', better: 'lower', baselineName: ingestBaseline, sluiceRuns: of('sluice-interval').map((r) => r.hostCpuPerMessage), baselineRuns: of('bare').map((r) => r.hostCpuPerMessage) }),
      // On a shared machine the rates swing with other load; CPU per reading does not.
      makeRow({ section: '2. ingest', name: `CPU per reading with ${ACL_USERS} users x ${ACL_PATTERNS} ACL patterns, sync interval`, unit: 'µs/msg', better: 'lower', baselineName: 'the same with no users configured', sluiceRuns: of('sluice-acl').map((r) => r.hostCpuPerMessage), baselineRuns: of('sluice-interval').map((r) => r.hostCpuPerMessage) }),
      makeRow({ section: '5. memory', name: `RSS growth per 100k buffered (after GC, ${n})`, unit: 'MB/100k', better: 'lower', baselineName: memoryBaseline, sluiceRuns: mb('sluice-interval', (m) => m.rssGrowthPer100k), baselineRuns: mb('bare-forwarder-down', (m) => m.rssGrowthPer100k) }),
      makeRow({ section: '5. memory', name: 'heap growth per 100k buffered (after GC)', unit: 'MB/100k', better: 'lower', baselineName: memoryBaseline, sluiceRuns: mb('sluice-interval', (m) => m.heapGrowthPer100k), baselineRuns: mb('bare-forwarder-down', (m) => m.heapGrowthPer100k) }),
      makeRow({ section: '5. memory', name: 'peak RSS while buffering', unit: 'MB', better: 'lower', baselineName: memoryBaseline, sluiceRuns: mb('sluice-interval', (m) => m.peakRss), baselineRuns: mb('bare-forwarder-down', (m) => m.peakRss) })
    ],
    runs
  }
}
