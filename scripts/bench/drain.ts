/**
 * 3. Drain rate: a buffer holding N readings (written straight through DurableLog, once, then
 * copied for each run) and a Gateway started on it with the upstream up; timed from
 * Gateway.start to the Nth arrival at the upstream subscriber.
 *
 * Baseline: the same N messages (the very topic and bytes sluice sent upstream) published straight
 * to the upstream by one MQTT.js client with the same in-flight window as sluice's forwarder: what
 * the upstream link and broker can take, with no buffer in between.
 */
import type { RunResult } from './load.js'
import { copyDir } from './common.js'
import { fmtRate, makeRow, progress, rate, scoped, warnIfResent, type ScenarioResult, type Sizes } from './runner.js'
import type { Upstream } from './upstream.js'

type System = 'sluice' | 'direct-publisher'

interface DrainRun {
  system: System
  repeat: number
  messages: number
  ms: number
  rate: number
  /** CPU time of the publishing process (sluice's host, or the direct publisher), per message, µs */
  cpuPerMessage: number
  upstreamBytes: number
  hostStats?: unknown
}

async function drainSluice (template: string, repeat: number, sizes: Sizes): Promise<{ run: DrainRun, sample: Upstream['sample'] }> {
  return await scoped(async (scope) => {
    const upstream = await scope.upstream()
    const dir = await scope.dir('drain')
    await copyDir(template, dir)
    const host = await scope.host()
    const cpu = await host.call<number>('cpuUsage')
    const { t0 } = await host.call<{ t0: number }>('startSluice', { dir, sync: 'interval', upstreamUrl: upstream.url, inflight: sizes.forwarderInflight })
    const lastArrival = await upstream.waitForCount(sizes.drainMessages, sizes.timeoutMs)
    const ms = lastArrival - t0
    const cpuPerMessage = (await host.call<number>('cpuUsage') - cpu) / sizes.drainMessages
    const run: DrainRun = {
      system: 'sluice', repeat, messages: sizes.drainMessages, ms, rate: rate(sizes.drainMessages, ms), cpuPerMessage, upstreamBytes: upstream.bytes, hostStats: await host.call('stats')
    }
    warnIfResent(run.hostStats)
    progress(`drain sluice #${repeat + 1}: ${fmtRate(run.rate)} (${Math.round(ms)} ms, ${Math.round(upstream.bytes / upstream.count)} B/message, CPU/msg ${cpuPerMessage.toFixed(1)} µs)`)
    return { run, sample: upstream.sample }
  })
}

async function drainDirect (sample: { topic: string, payload: Buffer }, repeat: number, sizes: Sizes): Promise<DrainRun> {
  return await scoped(async (scope) => {
    const upstream = await scope.upstream()
    const load = await scope.load()
    await load.call('connect', { port: upstream.port, clients: 1 })
    const cpu = await load.call<number>('cpuUsage')
    const result = await load.call<RunResult>('run', {
      total: sizes.drainMessages, window: sizes.forwarderInflight, topic: sample.topic, payload: sample.payload.toString('utf8')
    }, sizes.timeoutMs)
    const lastArrival = await upstream.waitForCount(sizes.drainMessages, sizes.timeoutMs)
    const ms = lastArrival - result.t0
    const cpuPerMessage = (await load.call<number>('cpuUsage') - cpu) / sizes.drainMessages
    const run: DrainRun = { system: 'direct-publisher', repeat, messages: sizes.drainMessages, ms, rate: rate(sizes.drainMessages, ms), cpuPerMessage, upstreamBytes: upstream.bytes }
    progress(`drain direct publisher #${repeat + 1}: ${fmtRate(run.rate)} (${Math.round(ms)} ms, CPU/msg ${cpuPerMessage.toFixed(1)} µs)`)
    return run
  })
}

export async function drain (sizes: Sizes, template: string): Promise<ScenarioResult> {
  const runs: DrainRun[] = []
  for (let repeat = 0; repeat < sizes.repeats; repeat++) {
    const { run, sample } = await drainSluice(template, repeat, sizes)
    runs.push(run)
    if (sample === null) throw new Error('sluice delivered nothing to copy for the baseline')
    runs.push(await drainDirect(sample, repeat, sizes))
  }
  const of = (system: System): DrainRun[] => runs.filter((r) => r.system === system)
  const rates = (system: System): number[] => of(system).map((r) => r.rate)
  const baselineName = `one MQTT.js client publishing the same messages straight upstream, ${sizes.forwarderInflight} in flight`
  return {
    rows: [makeRow({
      section: '3. drain',
      name: `drain a ${Math.round(sizes.drainMessages / 1000)}k backlog, ${sizes.forwarderInflight} in flight`,
      unit: 'msg/s',
      better: 'higher',
      baselineName,
      sluiceRuns: rates('sluice'),
      baselineRuns: rates('direct-publisher')
    }), makeRow({
      section: '3. drain',
      name: 'CPU per message of the publishing process',
      unit: 'µs/msg',
      better: 'lower',
      baselineName,
      sluiceRuns: of('sluice').map((r) => r.cpuPerMessage),
      baselineRuns: of('direct-publisher').map((r) => r.cpuPerMessage)
    })],
    runs
  }
}
