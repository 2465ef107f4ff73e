/**
 * 7-9. The spawned daemon (`sluice run`, nothing of the bench in its process) against the peer an
 * operator would otherwise run: an edge mosquitto with persistence, bridged QoS 1 to the upstream.
 * Both forward to the same upstream, a mosquitto with unbounded queues, counted by one subscriber.
 * Runs are interleaved, system by system within each repeat, so a noisy neighbour hurts all alike.
 *
 * Every run reports, from /proc: the forwarding process's peak RSS (VmHWM, since it started),
 * its CPU-seconds per 100k readings and the bytes it wrote to storage per reading.
 *
 *   7. saturating: 10 QoS 1 publishers, each keeping `window` publishes in flight;
 *   8. fixed rate: `rate` readings a second from 10 publishers, from the first publish after the
 *      process is ready (no warm-up: the first seconds count), latency from each sensor publish
 *      to its arrival upstream;
 *   9. backlog and drain: the upstream down (a gate that refuses connections) while the backlog is
 *      taken in, then up: drain rate from the first arrival to the last.
 */
import { writeFile } from 'node:fs/promises'
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import type { Worker } from './ipc.js'
import type { PaceResult, RunResult } from './load.js'
import { Mosquitto } from './mosquitto.js'
import { procCounters, type ProcCounters } from './proc.js'
import { Sink, quantile } from './sink.js'
import { UPSTREAM_FILTER, UPSTREAM_PREFIX } from './common.js'
import { makeRow, progress, type Row, type Scope, type ScenarioResult, type Sizes, scoped } from './runner.js'

export const PEER_SYSTEMS = ['sluice-cloudevents-json', 'sluice-cbor-batch', 'mosquitto-bridge'] as const
type System = typeof PEER_SYSTEMS[number]

const READY_TIMEOUT_MS = 30_000
const MB = 1024 * 1024

interface Started {
  pid: number
  /** where the sensors publish */
  port: number
}

/**
 * The daemon's config (JSON is YAML): defaults except where the bench must say otherwise.
 * BENCH_SLUICE_BUFFER (JSON) adds buffer keys, e.g. '{"sync":"always"}', to measure another setting.
 */
async function startSluice (scope: Scope, system: System, upstreamPort: number, inflight: number): Promise<Started> {
  const dir = await scope.dir('peer')
  const file = join(dir, 'sluice.yaml')
  await writeFile(file, JSON.stringify({
    gateway: { id: 'bench' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { ...JSON.parse(process.env.BENCH_SLUICE_BUFFER ?? '{}') as Record<string, unknown>, path: join(dir, 'buffer') },
    upstream: {
      url: `mqtt://127.0.0.1:${upstreamPort}`,
      format: system === 'sluice-cbor-batch' ? 'cbor-batch' : 'cloudevents-json',
      inflight,
      backoff: { min: '200ms', max: '1s' }
    },
    // The gateway's own health readings would add to the counts; nothing reads an admin endpoint.
    health: { enabled: false },
    admin: { enabled: false },
    log: { level: 'info' }
  }))
  const daemon = await scope.daemon(file, READY_TIMEOUT_MS)
  return { pid: daemon.pid, port: daemon.brokerPort }
}

async function startBridge (scope: Scope, upstreamPort: number, inflight: number): Promise<Started> {
  const dir = await scope.dir('bridge')
  const edge = await Mosquitto.start(dir, { bridge: { port: upstreamPort, remotePrefix: UPSTREAM_PREFIX, inflight } })
  scope.add(async () => { await edge.kill() })
  return { pid: edge.pid, port: edge.port }
}

async function startSystem (scope: Scope, system: System, upstreamPort: number, sizes: Sizes): Promise<Started> {
  return system === 'mosquitto-bridge'
    ? await startBridge(scope, upstreamPort, sizes.forwarderInflight)
    : await startSluice(scope, system, upstreamPort, sizes.forwarderInflight)
}

async function startUpstream (scope: Scope, stamped: boolean): Promise<{ upstream: Mosquitto, sink: Sink }> {
  const upstream = await Mosquitto.start(await scope.dir('upstream'))
  scope.add(async () => { await upstream.kill() })
  const sink = await Sink.start(upstream.url, UPSTREAM_FILTER, stamped)
  scope.add(async () => { await sink.close() })
  return { upstream, sink }
}

function perReading (before: ProcCounters, after: ProcCounters, readings: number): { cpuSPer100k: number, bytesWrittenPerReading: number } {
  return { cpuSPer100k: (after.cpuS - before.cpuS) / readings * 100_000, bytesWrittenPerReading: (after.writeBytes - before.writeBytes) / readings }
}

// ---------------------------------------------------------------------------- 7. saturating

interface SaturateRun { system: System, repeat: number, readings: number, rate: number, peakRss: number, cpuSPer100k: number, bytesWrittenPerReading: number }

async function saturateOnce (system: System, repeat: number, sizes: Sizes): Promise<SaturateRun> {
  return await scoped(async (scope) => {
    const { upstream, sink } = await startUpstream(scope, false)
    const started = await startSystem(scope, system, upstream.port, sizes)
    const load = await scope.load()
    await load.call('connect', { port: started.port, clients: sizes.publishers })
    await load.call('run', { total: sizes.e2eWarmup, window: sizes.window }, sizes.timeoutMs)
    await sink.waitFor(sizes.e2eWarmup, sizes.timeoutMs)
    sink.reset()
    const before = await procCounters(started.pid)
    const run = await load.call<RunResult>('run', { total: sizes.e2eMessages, window: sizes.window }, sizes.timeoutMs)
    const last = await sink.waitFor(sizes.e2eMessages, sizes.timeoutMs)
    const after = await procCounters(started.pid)
    await upstream.checkNothingDropped()
    const result: SaturateRun = {
      system, repeat, readings: sizes.e2eMessages, rate: sizes.e2eMessages / ((last - run.t0) / 1000), peakRss: after.peakRss, ...perReading(before, after, sizes.e2eMessages)
    }
    progress(`saturating ${system} #${repeat + 1}: ${Math.round(result.rate).toLocaleString('en-US')} readings/s, peak RSS ${(result.peakRss / MB).toFixed(0)} MB, ` +
      `${result.cpuSPer100k.toFixed(2)} CPU-s/100k, ${result.bytesWrittenPerReading.toFixed(0)} B written/reading`)
    return result
  })
}

// ---------------------------------------------------------------------------- 8. fixed rate

interface RateRun {
  system: System, repeat: number, readings: number, p50: number, p99: number, max: number,
  /** p99 of the readings published in the first second */
  p99FirstSecond: number, peakRss: number, cpuSPer100k: number, bytesWrittenPerReading: number
  /** p99 of each second's readings, in the order sent (for the JSON: where the tail comes from) */
  p99BySecond: number[]
}

async function rateOnce (system: System, repeat: number, sizes: Sizes): Promise<RateRun> {
  return await scoped(async (scope) => {
    const { upstream, sink } = await startUpstream(scope, true)
    const started = await startSystem(scope, system, upstream.port, sizes)
    const load = await scope.load()
    await load.call('connect', { port: started.port, clients: sizes.publishers })
    const before = await procCounters(started.pid)
    const paced = await load.call<PaceResult>('pace', { rate: sizes.rate, durationMs: sizes.rateDurationMs }, sizes.timeoutMs + sizes.rateDurationMs)
    await sink.waitFor(paced.sent, sizes.timeoutMs)
    const after = await procCounters(started.pid)
    await upstream.checkNothingDropped()
    // The first second's readings are the first `rate` sent: the sink saw them in about that order.
    const latencies = sink.latencies
    const firstSecond = latencies.slice(0, sizes.rate)
    const p99BySecond: number[] = []
    for (let at = 0; at < latencies.length; at += sizes.rate) p99BySecond.push(Math.round(quantile(latencies.slice(at, at + sizes.rate), 0.99) * 10) / 10)
    const result: RateRun = {
      system,
      repeat,
      readings: paced.sent,
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      max: latencies.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY),
      p99FirstSecond: quantile(firstSecond, 0.99),
      peakRss: after.peakRss,
      ...perReading(before, after, paced.sent),
      p99BySecond
    }
    progress(`${sizes.rate}/s ${system} #${repeat + 1}: latency p50 ${result.p50.toFixed(1)} ms, p99 ${result.p99.toFixed(1)} ms, max ${result.max.toFixed(1)} ms ` +
      `(p99 by second ${p99BySecond.join(' ')}), peak RSS ${(result.peakRss / MB).toFixed(0)} MB, ${result.cpuSPer100k.toFixed(2)} CPU-s/100k`)
    return result
  })
}

// ---------------------------------------------------------------------------- 9. backlog, drain

/** A TCP gate in front of the upstream: refuses connections while shut, forwards them once open. */
class UpstreamGate {
  private open = false
  private readonly sockets = new Set<Socket>()
  private constructor (private readonly server: Server, private readonly target: number) {}

  static async start (scope: Scope, target: number): Promise<UpstreamGate> {
    let gate: UpstreamGate | null = null
    const server = createServer((socket) => { gate?.handle(socket) })
    gate = new UpstreamGate(server, target)
    await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
    const opened = gate
    scope.add(async () => { await opened.close() })
    return gate
  }

  get port (): number { return (this.server.address() as AddressInfo).port }

  openUp (): void { this.open = true }

  private handle (socket: Socket): void {
    if (!this.open) { socket.destroy(); return }
    const peer = connect(this.target, '127.0.0.1')
    for (const s of [socket, peer]) {
      this.sockets.add(s)
      s.on('error', () => { socket.destroy(); peer.destroy() })
      s.once('close', () => { this.sockets.delete(s); socket.destroy(); peer.destroy() })
    }
    socket.pipe(peer)
    peer.pipe(socket)
  }

  async close (): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
  }
}

interface BacklogRun {
  system: System, repeat: number, readings: number, fillPeakRss: number, rssBuffered: number,
  drainRate: number, peakRss: number, bytesWrittenPerReading: number, cpuSPer100kDrain: number
}

async function backlogOnce (system: System, repeat: number, sizes: Sizes): Promise<BacklogRun> {
  return await scoped(async (scope) => {
    const { upstream, sink } = await startUpstream(scope, false)
    const gate = await UpstreamGate.start(scope, upstream.port)
    const started = await startSystem(scope, system, gate.port, sizes)
    const load = await scope.load()
    await load.call('connect', { port: started.port, clients: sizes.publishers })
    const n = sizes.peerBacklog
    const start = await procCounters(started.pid)
    await load.call<RunResult>('run', { total: n, window: sizes.window }, sizes.timeoutMs * 4)
    const filled = await procCounters(started.pid)
    gate.openUp()
    await sink.waitFor(n, sizes.timeoutMs * 4)
    const drained = await procCounters(started.pid)
    await upstream.checkNothingDropped()
    const result: BacklogRun = {
      system,
      repeat,
      readings: n,
      fillPeakRss: filled.peakRss,
      rssBuffered: filled.rss,
      drainRate: n / ((sink.lastAt - sink.firstAt) / 1000),
      peakRss: drained.peakRss,
      bytesWrittenPerReading: (filled.writeBytes - start.writeBytes) / n,
      cpuSPer100kDrain: (drained.cpuS - filled.cpuS) / n * 100_000
    }
    progress(`backlog ${system} #${repeat + 1}: RSS ${(result.rssBuffered / MB).toFixed(0)} MB with ${n.toLocaleString('en-US')} buffered ` +
      `(peak ${(result.fillPeakRss / MB).toFixed(0)} MB), drained at ${Math.round(result.drainRate).toLocaleString('en-US')} readings/s, ` +
      `peak RSS ${(result.peakRss / MB).toFixed(0)} MB, ${result.bytesWrittenPerReading.toFixed(0)} B written/reading`)
    return result
  })
}

// ---------------------------------------------------------------------------- the rows

function rowsFor<R extends { system: System }> (runs: R[], section: string, baselineName: string,
  figures: Array<{ name: string, unit: string, better: 'higher' | 'lower', pick: (r: R) => number }>): Row[] {
  const rows: Row[] = []
  for (const system of ['sluice-cloudevents-json', 'sluice-cbor-batch'] as const) {
    for (const figure of figures) {
      rows.push(makeRow({
        section,
        name: `${figure.name}, ${system.replace('sluice-', '')}`,
        unit: figure.unit,
        better: figure.better,
        baselineName,
        sluiceRuns: runs.filter((r) => r.system === system).map(figure.pick),
        baselineRuns: runs.filter((r) => r.system === 'mosquitto-bridge').map(figure.pick)
      }))
    }
  }
  return rows
}

const BRIDGE = 'edge mosquitto 2 (persistence on) bridged QoS 1 to the upstream mosquitto'
const mb = (bytes: number): number => bytes / MB

export async function peer (sizes: Sizes, which: { saturate: boolean, rate: boolean, backlog: boolean }): Promise<ScenarioResult> {
  const rows: Row[] = []
  const runs: unknown[] = []
  const interleave = async <R>(label: string, once: (system: System, repeat: number, sizes: Sizes) => Promise<R>): Promise<R[]> => {
    const done: R[] = []
    for (let repeat = 0; repeat < sizes.repeats; repeat++) {
      for (const system of PEER_SYSTEMS) done.push(await once(system, repeat, sizes))
    }
    runs.push({ scenario: label, runs: done })
    return done
  }
  if (which.saturate) {
    const done = await interleave('saturate', saturateOnce)
    rows.push(...rowsFor(done, `7. saturating, spawned daemon, ${sizes.publishers} pubs x ${sizes.window} in flight`, BRIDGE, [
      { name: 'throughput end to end', unit: 'readings/s', better: 'higher', pick: (r) => r.rate },
      { name: 'CPU per 100k readings', unit: 'CPU-s', better: 'lower', pick: (r) => r.cpuSPer100k },
      { name: 'peak RSS', unit: 'MB', better: 'lower', pick: (r) => mb(r.peakRss) },
      { name: 'bytes written per reading', unit: 'B', better: 'lower', pick: (r) => r.bytesWrittenPerReading }
    ]))
  }
  if (which.rate) {
    const done = await interleave('rate', rateOnce)
    rows.push(...rowsFor(done, `8. ${sizes.rate}/s offered for ${sizes.rateDurationMs / 1000} s from start, spawned daemon`, BRIDGE, [
      { name: 'latency p50', unit: 'ms', better: 'lower', pick: (r) => r.p50 },
      { name: 'latency p99', unit: 'ms', better: 'lower', pick: (r) => r.p99 },
      { name: 'latency max', unit: 'ms', better: 'lower', pick: (r) => r.max },
      { name: 'latency p99, first second', unit: 'ms', better: 'lower', pick: (r) => r.p99FirstSecond },
      { name: 'CPU per 100k readings', unit: 'CPU-s', better: 'lower', pick: (r) => r.cpuSPer100k },
      { name: 'peak RSS', unit: 'MB', better: 'lower', pick: (r) => mb(r.peakRss) }
    ]))
  }
  if (which.backlog) {
    const done = await interleave('backlog', backlogOnce)
    rows.push(...rowsFor(done, `9. ${sizes.peerBacklog.toLocaleString('en-US')} readings buffered with the upstream down, then drained`, BRIDGE, [
      { name: 'RSS with the backlog buffered', unit: 'MB', better: 'lower', pick: (r) => mb(r.rssBuffered) },
      { name: 'drain rate', unit: 'readings/s', better: 'higher', pick: (r) => r.drainRate },
      { name: 'CPU per 100k readings drained', unit: 'CPU-s', better: 'lower', pick: (r) => r.cpuSPer100kDrain },
      { name: 'peak RSS, taking in and draining', unit: 'MB', better: 'lower', pick: (r) => mb(r.peakRss) },
      { name: 'bytes written per reading taken in', unit: 'B', better: 'lower', pick: (r) => r.bytesWrittenPerReading }
    ]))
  }
  return { rows, runs }
}
