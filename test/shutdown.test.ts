/**
 * Stopping loses nothing and leaves nothing open: every step of the shutdown runs even when one
 * fails, the failures are logged and become exit 1; and a stop signal that comes while sluice is
 * still starting is a graceful stop too.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { connect as tcpConnect } from 'node:net'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { connect } from 'mqtt'
import { MqttUpstream } from '../adapters/upstream-mqtt.js'
import { DurableLog } from '../buffer/index.js'
import { Gateway } from '../daemon/gateway.js'
import { closeGateway } from '../daemon/cli.js'
import { createLogger } from '../daemon/logger.js'
import { BIN, writeConfig } from './helpers/daemon.js'
import { testConfig } from './helpers/gateway.js'
import { startMosquitto } from './helpers/mosquitto.js'
import { waitUntil } from './helpers/wait.js'
import { localServer } from './helpers/tcp-server.js'

/** A pino logger whose JSON lines the test reads. */
function capturedLogger (): { logger: ReturnType<typeof createLogger>, lines: any[] } {
  const lines: any[] = []
  const out = new Writable({
    write (chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line))
      done()
    }
  })
  return { logger: createLogger('info', out), lines }
}

t.test('a failed final ack write: every later shutdown step still runs, the error is logged, the exit code is 1', async (t) => {
  const upstream = await startMosquitto(t)
  const bufferPath = join(t.testdir(), 'buffer')
  let ackFails = false
  const { logger, lines } = capturedLogger()
  const gateway = await Gateway.start({
    config: testConfig({ upstreamUrl: upstream.url, bufferPath }),
    logger,
    beforeAck: async () => { if (ackFails) throw new Error('injected: the disk fails the ack write') }
  })
  let closed = false
  t.teardown(async () => { if (!closed) await gateway.close().catch(() => {}) })
  const admin = gateway.adminAddress()
  if (admin === null) throw new Error('no admin endpoint')

  const sensor = connect(`mqtt://127.0.0.1:${gateway.broker?.address().port ?? 0}`, { reconnectPeriod: 0 })
  t.teardown(async () => { await sensor.endAsync(true) })
  await new Promise<void>((resolve) => sensor.once('connect', () => { resolve() }))
  ackFails = true
  for (let n = 0; n < 5; n++) await sensor.publishAsync('sensors/a/temp', JSON.stringify({ n }), { qos: 1 })
  await waitUntil(() => gateway.stats().forwarded === 5, 10_000, 'the readings acknowledged upstream')
  await sensor.endAsync(true)

  const code = await closeGateway(gateway, logger)
  closed = true
  t.equal(code, 1, 'the shutdown ends in exit code 1')
  t.equal(gateway.status, 'closed')
  t.ok(lines.some((l) => l.level === 50 && l.code === 'SLUICE_SHUTDOWN_FAILED' && /ack/.test(JSON.stringify(l.err))),
    'the failed step is logged with its error')
  t.ok(lines.some((l) => /sluice stopped/.test(l.msg)), 'the stop is logged')
  await t.rejects(fetch(`http://127.0.0.1:${admin.port}/healthz`), 'the admin endpoint was closed')
  // LevelDB was closed (its lock released) and the stop marked clean.
  const log = await DurableLog.open({ path: bufferPath, sync: 'interval', syncIntervalMs: 1000, bootId: 'same-boot' })
  t.teardown(async () => { await log.close() })
  t.equal(log.report.uncleanStop, false, 'the buffer was closed cleanly')
  t.equal(log.lastSeq, 5, 'with every reading')
})

t.test('SIGTERM while sluice is still starting is a graceful stop: exit 0, the buffer closed cleanly', async (t) => {
  // A "local broker" that accepts the connection and never answers: the subscription's start
  // (which waits for its first attempt) keeps Gateway.start busy until the socket goes.
  const { server: silent, port: silentPort, sockets } = await localServer(t) // takes connections and never answers
  const dir = t.testdir()
  const config = writeConfig(dir, {
    gateway: { id: 'gw-start' },
    ingest: { broker: { enabled: false }, subscribe: [{ url: `mqtt://127.0.0.1:${silentPort}`, topics: ['sensors/#'], clientId: 'gw-start-ingest' }] },
    buffer: { path: join(dir, 'buffer') },
    upstream: { url: 'mqtt://127.0.0.1:1' },
    health: { enabled: false },
    admin: { enabled: false },
    log: { level: 'info' }
  })
  const run = (): { lines: any[], exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>, kill: (s: NodeJS.Signals) => void } => {
    const child = spawn(process.execPath, [BIN, 'run', '-c', config], { stdio: ['ignore', 'pipe', 'inherit'] })
    const lines: any[] = []
    let partial = ''
    child.stdout.on('data', (d: Buffer) => {
      const parts = (partial + d.toString()).split('\n')
      partial = parts.pop() ?? ''
      for (const line of parts) if (line.trim() !== '') lines.push(JSON.parse(line))
    })
    const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
      child.on('close', (code, signal) => { resolve({ code, signal }) })
    })
    t.teardown(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); await exited })
    return { lines, exited, kill: (s) => { child.kill(s) } }
  }

  const first = run()
  await waitUntil(() => sockets.length > 0, 15_000, 'the daemon, still starting, to connect to the local broker')
  t.notOk(first.lines.some((l) => l.msg === 'sluice ready'), 'it is still starting')
  first.kill('SIGTERM')
  await waitUntil(() => first.lines.some((l) => l.msg === 'stopping'), 10_000, 'the stop signal to be taken')
  // Let the start finish sooner: the local broker goes away (its first attempt fails).
  for (const s of sockets) s.destroy()
  const end = await first.exited
  t.same(end, { code: 0, signal: null }, 'exit 0, not killed by the signal')
  t.ok(first.lines.some((l) => l.msg === 'sluice stopped'), 'it stopped in order')

  silent.close()
  const second = run()
  await waitUntil(() => second.lines.some((l) => l.msg === 'sluice ready'), 15_000, 'the second start')
  t.equal(second.lines.find((l) => l.msg === 'sluice ready').uncleanStop, false, 'the first run closed the buffer cleanly')
  second.kill('SIGTERM')
  t.same(await second.exited, { code: 0, signal: null })
})

t.test('a stop while the upstream connection waits for its CONNACK ends that connection and returns', async (t) => {
  // The upstream's answer is held back until the stop has begun: the connection attempt then
  // succeeds after close() was called, and must not be left open with nobody to end it.
  const upstream = await startMosquitto(t)
  const { port: gatePort, sockets: held } = await localServer(t) // takes connections and never answers
  const adapter = new MqttUpstream({
    url: `mqtt://127.0.0.1:${gatePort}`,
    clientId: 'gw-stop-connecting',
    protocol: '3.1.1',
    backoff: { min: 50, max: 500 },
    logger: createLogger('silent')
  })
  adapter.start()
  await waitUntil(() => held.length > 0, 10_000, 'the upstream connection attempt')
  const socket = held[0]
  const socketClosed = new Promise<void>((resolve) => socket.once('close', () => { resolve() }))

  const closing = adapter.close()
  // Now let the CONNECT through to a real broker, whose CONNACK comes back.
  const broker = tcpConnect({ host: '127.0.0.1', port: upstream.port })
  broker.on('error', () => {})
  t.teardown(() => { broker.destroy() })
  socket.pipe(broker).pipe(socket)

  let stopped = false
  const deadline = new Promise<void>((resolve) => setTimeout(resolve, 5_000).unref())
  await Promise.race([closing.then(() => { stopped = true }), deadline])
  t.ok(stopped, 'close() returned (within 5 s; the connect timeout is 10 s)')
  t.notOk(adapter.connected, 'not connected after close')
  await Promise.race([socketClosed, deadline])
  t.ok(socket.destroyed, 'the upstream connection was closed by sluice, not left open')
})
