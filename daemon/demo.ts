import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setInterval as every, setTimeout as sleep } from 'node:timers/promises'
import { Aedes } from 'aedes'
import mqtt, { type MqttClient } from 'mqtt'
import { validateConfig } from '../config/index.js'
import { Gateway } from './gateway.js'
import type { GatewayStats } from './view.js'
import { createLogger } from './logger.js'

const DEFAULTS = {
  /** simulated sensors */
  sensors: 5,
  /** readings each sensor publishes, spread evenly over online + outage + recovery */
  readingsPerSensor: 240,
  /** phase lengths in ms: upstream reachable, upstream cut, upstream back */
  onlineMs: 8000,
  outageMs: 10_000,
  recoveryMs: 6000,
  /** longest wait in ms for the last PUBACKs and arrivals after the sensors stop */
  settleTimeoutMs: 15_000,
  /** ms between progress lines when `out` is not a terminal (a terminal gets one live line) */
  progressEveryMs: 2000
}

/** `sluice demo`: sensors -> a real gateway -> a stand-in upstream -> a receiver, with an outage. */
export type DemoOptions = { out: NodeJS.WritableStream } & Partial<typeof DEFAULTS>

type Phase = 'starting' | 'online' | 'outage' | 'recovery' | 'settling'

/** The stand-in upstream: one aedes broker, a port for the receiver and one for the gateway. */
interface StandIn {
  aedes: Aedes
  receiverSide: Server
  gatewaySide: Server
  gatewayPort: number
  gatewaySockets: Set<Socket>
}

/** What the demo saw; `reading` keys are `sensor#n`, taken from the sensor's own payload. */
interface Tally {
  published: number
  /** readings whose PUBACK reached their sensor: the gateway owes each one to the upstream */
  acked: Set<string>
  /** distinct readings at the receiver */
  arrived: Set<string>
  /** `epoch/seq` -> the reading first seen under it */
  bySeq: Map<string, string>
  /** per epoch, the highest seq seen */
  lastSeq: Map<string, number>
  duplicates: number
  problems: string[]
  sawUpstreamDown: boolean
  peakBacklog: number
}

interface DemoContext {
  out: NodeJS.WritableStream
  tty: boolean
  plan: typeof DEFAULTS & { intervalMs: number }
  phase: Phase
  startedAt: number
  tally: Tally
  abort: AbortController
  standIn?: StandIn
  receiver?: MqttClient
  gateway?: Gateway
  sensors: MqttClient[]
  bufferDir?: string
  /** a progress line is on screen without its newline (terminal only) */
  lineOpen: boolean
}

export async function runDemo (opts: DemoOptions): Promise<number> {
  const { out, ...given } = opts
  const plan = { ...DEFAULTS, ...given }
  for (const [key, value] of Object.entries(plan)) {
    if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`demo option ${key} must be a positive number, got ${value}`)
  }
  const ctx: DemoContext = {
    out,
    tty: (out as { isTTY?: boolean }).isTTY === true,
    plan: { ...plan, intervalMs: (plan.onlineMs + plan.outageMs + plan.recoveryMs) / plan.readingsPerSensor },
    phase: 'starting',
    startedAt: Date.now(),
    tally: { published: 0, acked: new Set(), arrived: new Set(), bySeq: new Map(), lastSeq: new Map(), duplicates: 0, problems: [], sawUpstreamDown: false, peakBacklog: 0 },
    abort: new AbortController(),
    sensors: [],
    lineOpen: false
  }
  const progress = showProgress(ctx)
  try {
    await setUp(ctx)
    const passed = await play(ctx)
    return passed ? 0 : 1
  } catch (err) {
    say(ctx, `sluice demo: failed: ${(err as Error).message}`)
    return 1
  } finally {
    ctx.abort.abort()
    clearInterval(progress)
    await tearDown(ctx)
  }
}

async function setUp (ctx: DemoContext): Promise<void> {
  const standIn = ctx.standIn = await startStandIn()
  ctx.receiver = await mqtt.connectAsync(`mqtt://127.0.0.1:${port(standIn.receiverSide)}`, { clientId: 'sluice-demo-receiver', reconnectPeriod: 0 }, false)
  ctx.receiver.on('message', (_topic, payload) => { receive(ctx.tally, payload) })
  await ctx.receiver.subscribeAsync('sluice/#', { qos: 1 })
  ctx.bufferDir = await mkdtemp(join(tmpdir(), 'sluice-demo-'))
  const config = validateConfig({
    gateway: { id: 'demo-gw' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: ctx.bufferDir },
    upstream: { url: `mqtt://127.0.0.1:${standIn.gatewayPort}`, backoff: { min: '100ms', max: '1s' } },
    admin: { listen: '127.0.0.1:0' },
    health: { enabled: false }, // the demo's verdict counts sensor readings only
    log: { level: 'silent' }
  })
  const gateway = ctx.gateway = await Gateway.start({ config, logger: createLogger(config.log.level), drainGraceMs: 500 })
  const ingest = gateway.broker?.address()
  if (ingest === undefined) throw new Error('the gateway has no embedded broker')
  for (let i = 1; i <= ctx.plan.sensors; i++) {
    ctx.sensors.push(await mqtt.connectAsync(`mqtt://${ingest.host}:${ingest.port}`, { clientId: `sluice-demo-s${i}` }, false))
  }
  const { sensors, readingsPerSensor, intervalMs } = ctx.plan
  say(ctx, `sluice demo: ${sensors} sensors -> gateway (sensor port ${ingest.port}, buffer ${ctx.bufferDir})` +
    ` -> stand-in upstream (gateway port ${standIn.gatewayPort}) -> receiver`)
  say(ctx, `each sensor publishes ${readingsPerSensor} QoS 1 readings, one every ${Math.round(intervalMs)} ms\n`)
}

/** Runs the schedule; resolves to the verdict. */
async function play (ctx: DemoContext): Promise<boolean> {
  const { plan, standIn } = ctx
  if (standIn === undefined) throw new Error('not set up')
  enter(ctx, 'online', `upstream reachable for ${seconds(plan.onlineMs)}: readings flow straight through`)
  const publishing = Promise.all(ctx.sensors.map(async (client, i) => await publishReadings(ctx, client, `s${i + 1}`, i)))
  await sleep(plan.onlineMs)
  await cutGatewaySide(standIn)
  enter(ctx, 'outage', `upstream cut for ${seconds(plan.outageMs)}: sensors still get PUBACKs, the backlog grows on disk`)
  await sleep(plan.outageMs)
  await listen(standIn.gatewaySide, standIn.gatewayPort) // the same address the gateway knows
  enter(ctx, 'recovery', 'upstream back: the gateway reconnects and drains the backlog in order')
  await publishing
  enter(ctx, 'settling', `sensors done; waiting (at most ${seconds(plan.settleTimeoutMs)}) for the last PUBACKs and arrivals`)
  const { tally } = ctx
  const deadline = Date.now() + plan.settleTimeoutMs
  while ((tally.acked.size < tally.published || missing(tally).length > 0) && Date.now() < deadline) await sleep(100)
  const stats = ctx.gateway?.stats()
  if (stats !== undefined) showLine(ctx, stats)
  return verdict(ctx)
}

async function publishReadings (ctx: DemoContext, client: MqttClient, sensor: string, index: number): Promise<void> {
  const { readingsPerSensor, intervalMs, sensors } = ctx.plan
  const { signal } = ctx.abort
  let celsius = 19 + Math.random() * 4
  let n = 0
  try {
    await sleep(intervalMs * index / sensors, undefined, { signal }) // spread the sensors out
    for await (const _ of every(intervalMs, undefined, { signal })) {
      const reading = ++n
      celsius += (Math.random() - 0.5) * 0.2
      const payload = JSON.stringify({ sensor, n: reading, celsius: Math.round(celsius * 10) / 10 })
      ctx.tally.published++
      // The callback runs on PUBACK: from then on the gateway owes this reading to the upstream.
      client.publish(`sensors/${sensor}/temperature`, payload, { qos: 1 }, (err) => {
        if (err === undefined || err === null) ctx.tally.acked.add(`${sensor}#${reading}`)
      })
      if (n >= readingsPerSensor) break
    }
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err
  }
}

/** One message at the receiver: checks order per epoch and counts duplicates (docs/guarantees.md §3). */
function receive (tally: Tally, payload: Buffer): void {
  let event: { type?: string, sequence?: string, sluiceepoch?: string, data?: { sensor?: unknown, n?: unknown } }
  try { event = JSON.parse(payload.toString('utf8')) } catch { return }
  if (event.type !== 'io.sluice.reading' || event.sluiceepoch === undefined) return
  const seq = Number(event.sequence)
  const reading = `${String(event.data?.sensor)}#${String(event.data?.n)}`
  const id = `${event.sluiceepoch}/${seq}`
  const first = tally.bySeq.get(id)
  if (first !== undefined) {
    tally.duplicates++
    if (first !== reading) tally.problems.push(`seq ${seq} came again with other content (${first}, then ${reading})`)
    return
  }
  tally.bySeq.set(id, reading)
  const last = tally.lastSeq.get(event.sluiceepoch) ?? 0 // a new buffer starts at seq 1
  if (seq !== last + 1) tally.problems.push(`seq ${seq} arrived first after seq ${last}: ${seq > last ? 'a gap' : 'out of order'}`)
  tally.lastSeq.set(event.sluiceepoch, Math.max(last, seq))
  tally.arrived.add(reading)
}

function missing (tally: Tally): string[] {
  return [...tally.acked].filter((reading) => !tally.arrived.has(reading))
}

function verdict (ctx: DemoContext): boolean {
  const { tally, plan } = ctx
  const lost = missing(tally)
  const stats = ctx.gateway?.stats()
  const reconnected = (stats?.upstreamConnections ?? 0) >= 2
  const epochs = [...tally.lastSeq].map(([epoch, last]) => `epoch ${epoch.slice(0, 8)}...: seq 1..${last}`).join(', ')
  const checks: Array<[boolean, string]> = [
    [tally.acked.size === tally.published && tally.published > 0 && lost.length === 0,
      `${tally.published} readings published, ${tally.acked.size} PUBACKed, ${tally.acked.size - lost.length} of those arrived` +
      (lost.length > 0 ? ` (missing: ${lost.slice(0, 5).join(', ')}${lost.length > 5 ? ', ...' : ''})` : '')],
    [tally.problems.length === 0, tally.problems.length === 0
      ? `first arrivals in increasing sequence with no gap (${epochs})`
      : `order broken: ${tally.problems.slice(0, 3).join('; ')}`],
    [tally.sawUpstreamDown && reconnected, `the gateway saw the outage (upstream down: ${tally.sawUpstreamDown ? 'yes' : 'no'}, ` +
      `connections: ${stats?.upstreamConnections ?? 0}, backlog peaked at ${tally.peakBacklog})`]
  ]
  const passed = checks.every(([ok]) => ok)
  say(ctx, '\nverdict:')
  for (const [ok, text] of checks) say(ctx, `  ${ok ? 'ok  ' : 'FAIL'}  ${text}`)
  say(ctx, `  info  ${tally.duplicates} duplicates at the receiver` + (tally.duplicates > 0
    ? ' (readings resent after the reconnect because their PUBACK was lost with the link; a receiver drops them by event id)'
    : ' (no PUBACK was lost with the link this time; when one is, the reading is resent and arrives twice)'))
  say(ctx, passed
    ? `\nPASS: ${plan.sensors} sensors kept publishing through a ${seconds(plan.outageMs)} upstream outage; the gateway PUBACKed ` +
      'each reading once it was on disk, buffered the backlog, and after the reconnect forwarded all of it, in order, ' +
      'at least once. A receiver that keeps the first arrival of each (gateway, epoch, seq) sees every reading exactly once.'
    : '\nFAIL: see the lines above.')
  return passed
}

/** Samples the gateway's stats every 250 ms; shows one live line on a terminal, else a line every few seconds. */
function showProgress (ctx: DemoContext): NodeJS.Timeout {
  let printedAt = 0
  return setInterval(() => {
    const stats = ctx.gateway?.stats()
    if (stats === undefined) return
    if (!stats.upstreamConnected) ctx.tally.sawUpstreamDown = true
    ctx.tally.peakBacklog = Math.max(ctx.tally.peakBacklog, stats.backlog)
    if (ctx.tty || Date.now() - printedAt >= ctx.plan.progressEveryMs) {
      printedAt = Date.now()
      showLine(ctx, stats)
    }
  }, 250)
}

/** A terminal gets the line rewritten in place (`\r`), anything else a new line. */
function showLine (ctx: DemoContext, stats: GatewayStats): void {
  if (!ctx.tty) return say(ctx, progressLine(ctx, stats))
  ctx.out.write(`\r\x1b[K${progressLine(ctx, stats)}`)
  ctx.lineOpen = true
}

function progressLine (ctx: DemoContext, stats: GatewayStats): string {
  const at = ((Date.now() - ctx.startedAt) / 1000).toFixed(1).padStart(5)
  const n = (value: number): string => String(value).padStart(5)
  return `  [${ctx.phase.padEnd(8)} ${at}s]  ingested ${n(ctx.tally.acked.size)}  buffered ${n(stats.backlog)}` +
    `  forwarded ${n(stats.forwarded)}  duplicates ${n(ctx.tally.duplicates)}  upstream ${stats.upstreamConnected ? 'up' : 'down'}`
}

function enter (ctx: DemoContext, phase: Phase, what: string): void {
  ctx.phase = phase
  say(ctx, `-- ${phase}: ${what}`)
}

function say (ctx: DemoContext, text: string): void {
  if (ctx.lineOpen) ctx.out.write('\n') // keep the live line's last state on screen
  ctx.lineOpen = false
  ctx.out.write(`${text}\n`)
}

async function startStandIn (): Promise<StandIn> {
  const aedes = await Aedes.createBroker()
  const gatewaySockets = new Set<Socket>()
  const receiverSide = createServer((socket) => { aedes.handle(socket) })
  const gatewaySide = createServer((socket) => {
    gatewaySockets.add(socket)
    socket.on('close', () => { gatewaySockets.delete(socket) })
    aedes.handle(socket)
  })
  await listen(receiverSide, 0)
  await listen(gatewaySide, 0)
  return { aedes, receiverSide, gatewaySide, gatewayPort: port(gatewaySide), gatewaySockets }
}

/** The outage: the gateway's port refuses connections and its open connection is dropped. */
async function cutGatewaySide (standIn: StandIn): Promise<void> {
  const closed = closeServer(standIn.gatewaySide)
  for (const socket of standIn.gatewaySockets) socket.destroy()
  await closed
}

async function tearDown (ctx: DemoContext): Promise<void> {
  const quietly = async (step: () => Promise<unknown> | undefined): Promise<void> => {
    try { await step() } catch { /* tearing down: the first failure was already reported */ }
  }
  for (const sensor of ctx.sensors) await quietly(async () => await sensor.endAsync(true))
  await quietly(async () => await ctx.gateway?.close())
  await quietly(async () => await ctx.receiver?.endAsync(true))
  const standIn = ctx.standIn
  if (standIn !== undefined) {
    for (const socket of standIn.gatewaySockets) socket.destroy()
    await quietly(async () => await new Promise<void>((resolve) => { standIn.aedes.close(() => { resolve() }) }))
    await closeServer(standIn.receiverSide)
    await closeServer(standIn.gatewaySide)
  }
  const dir = ctx.bufferDir
  if (dir !== undefined) await quietly(async () => await rm(dir, { recursive: true, force: true }))
}

async function listen (server: Server, portNumber: number): Promise<void> {
  server.listen(portNumber, '127.0.0.1')
  await once(server, 'listening') // rejects on 'error' (EADDRINUSE)
}

async function closeServer (server: Server): Promise<void> {
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) }) // resolves when not running, too
}

function port (server: Server): number {
  return (server.address() as AddressInfo).port
}

function seconds (ms: number): string {
  return `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s`
}
