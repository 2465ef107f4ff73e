/**
 * 1. End-to-end throughput: sensors (10 QoS 1 publishers in a child process) -> the system under
 * test (in its own child) -> an upstream aedes -> a subscriber counting arrivals (both here).
 * Timed from the first publish to the last arrival upstream.
 *
 * sluice runs with a real LevelDB in a temp dir, `sync: interval` and again `sync: always`. The
 * baseline is a bare aedes that republishes every reading upstream at QoS 1 with no disk.
 */
import { cpuUsage, type Worker } from './ipc.js'
import type { RunResult } from './load.js'
import { UPSTREAM_PREFIX } from './common.js'
import { fmtRate, makeRow, progress, rate, scoped, waitUpstreamConnected, warnIfResent, type ScenarioResult, type Sizes } from './runner.js'

type System = 'sluice-interval' | 'sluice-always' | 'bare-forwarder'

interface E2eRun {
  system: System
  repeat: number
  messages: number
  /** first publish to last arrival upstream */
  ms: number
  rate: number
  /** first publish to last PUBACK at the sensors */
  ackedMs: number
  /** CPU time of the process hosting the system under test, per message, µs */
  hostCpuPerMessage: number
  /** CPU time of the bench's own process (upstream broker and subscriber), per message, µs */
  upstreamCpuPerMessage: number
  upstreamBytes: number
  hostStats: unknown
}

async function startSystem (host: Worker, system: System, upstreamUrl: string, dir: string, sizes: Sizes): Promise<number> {
  if (system === 'bare-forwarder') {
    const { port } = await host.call<{ port: number }>('startBare', { forwardTo: upstreamUrl, topicPrefix: UPSTREAM_PREFIX, waitUpstream: true })
    return port
  }
  const sync = system === 'sluice-interval' ? 'interval' : 'always'
  const { port } = await host.call<{ port: number }>('startSluice', { dir, sync, upstreamUrl, inflight: sizes.forwarderInflight })
  await waitUpstreamConnected(host, 10_000)
  return port
}

async function runOnce (system: System, repeat: number, sizes: Sizes): Promise<E2eRun> {
  return await scoped(async (scope) => {
    const upstream = await scope.upstream()
    const dir = await scope.dir('e2e')
    const host = await scope.host()
    const load = await scope.load()
    const port = await startSystem(host, system, upstream.url, dir, sizes)
    await load.call('connect', { port, clients: sizes.publishers })

    // A short warm-up through the whole path (JIT, connections, LevelDB's first files).
    await load.call('run', { total: sizes.e2eWarmup, window: sizes.window }, sizes.timeoutMs)
    await upstream.waitForCount(sizes.e2eWarmup, sizes.timeoutMs)
    upstream.reset()

    const hostCpu = await host.call<number>('cpuUsage')
    const upstreamCpu = cpuUsage()
    const run = await load.call<RunResult>('run', { total: sizes.e2eMessages, window: sizes.window }, sizes.timeoutMs)
    const lastArrival = await upstream.waitForCount(sizes.e2eMessages, sizes.timeoutMs)
    const ms = lastArrival - run.t0
    const hostCpuPerMessage = (await host.call<number>('cpuUsage') - hostCpu) / sizes.e2eMessages
    const upstreamCpuPerMessage = (cpuUsage() - upstreamCpu) / sizes.e2eMessages
    const result: E2eRun = {
      system,
      repeat,
      messages: sizes.e2eMessages,
      ms,
      rate: rate(sizes.e2eMessages, ms),
      ackedMs: run.tAcked - run.t0,
      hostCpuPerMessage,
      upstreamCpuPerMessage,
      upstreamBytes: upstream.bytes,
      hostStats: await host.call('stats')
    }
    progress(`e2e ${system} #${repeat + 1}: ${fmtRate(result.rate)} (${Math.round(ms)} ms; PUBACKs done at ${Math.round(result.ackedMs)} ms; ` +
      `CPU/msg ${hostCpuPerMessage.toFixed(1)} µs in the gateway, ${upstreamCpuPerMessage.toFixed(1)} µs upstream)`)
    warnIfResent(result.hostStats)
    return result
  })
}

export async function endToEnd (sizes: Sizes): Promise<ScenarioResult> {
  const runs: E2eRun[] = []
  // Interleaved, so a noisy neighbour hurts every system alike rather than one of them.
  for (let repeat = 0; repeat < sizes.repeats; repeat++) {
    for (const system of ['sluice-interval', 'bare-forwarder', 'sluice-always'] as const) {
      runs.push(await runOnce(system, repeat, sizes))
    }
  }
  const of = (system: System): E2eRun[] => runs.filter((r) => r.system === system)
  const rates = (system: System): number[] => of(system).map((r) => r.rate)
  const cpu = (system: System): number[] => of(system).map((r) => r.hostCpuPerMessage)
  const baselineName = 'bare aedes republishing each reading upstream (QoS 1, MQTT.js), no disk'
  const section = '1. end-to-end'
  const name = (sync: string): string => `e2e throughput, ${sizes.publishers} pubs x ${sizes.window} in flight, sync ${sync}`
  return {
    rows: [
      makeRow({ section, name: name('interval'), unit: 'msg/s', better: 'higher', baselineName, sluiceRuns: rates('sluice-interval'), baselineRuns: rates('bare-forwarder') }),
      makeRow({ section, name: name('always'), unit: 'msg/s', better: 'higher', baselineName, sluiceRuns: rates('sluice-always'), baselineRuns: rates('bare-forwarder') }),
      makeRow({ section, name: 'CPU per message of the gateway process, sync interval', unit: 'µs/msg', better: 'lower', baselineName, sluiceRuns: cpu('sluice-interval'), baselineRuns: cpu('bare-forwarder') })
    ],
    runs
  }
}
