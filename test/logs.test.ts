/**
 * Logs: JSON lines on stdout (journald), pretty on a terminal, and never a secret. The daemon runs
 * at level trace with an upstream password from each of its three sources, meets refused
 * credentials, outages and reconnects, is reloaded and queried; all it printed is searched for
 * the passwords. A reader that goes away (EPIPE) costs log lines, not the daemon.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { join } from 'node:path'
import { Aedes } from 'aedes'
import { createLogger } from '../daemon/logger.js'
import { startProxy, type Proxy } from './helpers/proxy.js'
import { brokerUrl, runCli, startDaemon, writeConfig, type DaemonRun } from './helpers/daemon.js'
import { startSensors } from './helpers/sensors.js'
import { freePort } from './helpers/ports.js'
import { waitUntil } from './helpers/wait.js'

const RIGHT = 'Ri9ht-pw-6d1e'
const WRONG = 'Wr0ng-pw-93ab'
const SECRETS = [RIGHT, WRONG]

/** An upstream broker (aedes) that wants user `gw` with the right password. */
async function startAuthBroker (t: Test): Promise<{ port: number, refused: () => number }> {
  let refused = 0
  const aedes = await Aedes.createBroker({
    authenticate: (_client, username, password, done) => {
      if (username === 'gw' && password?.toString() === RIGHT) return done(null, true)
      refused++
      done(Object.assign(new Error('bad user name or password'), { returnCode: 4 }), false)
    }
  })
  const server = createServer((socket) => { aedes.handle(socket) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    await new Promise<void>((resolve) => { aedes.close(() => { resolve() }) })
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return { port: (server.address() as AddressInfo).port, refused: () => refused }
}

/** Everything that could carry a secret, gathered for the search. */
const seen: string[] = []

function config (dir: string, name: string, link: Proxy, upstream: Record<string, unknown>): Record<string, any> {
  return {
    gateway: { id: `gw-${name}` },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: join(dir, `buffer-${name}`) },
    upstream: { url: link.url, username: 'gw', backoff: { min: '50ms', max: '300ms' }, ...upstream },
    health: { interval: '200ms' },
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'trace' }
  }
}

const isLine = (msg: string) => (l: any): boolean => l.msg === msg
const count = (d: DaemonRun, msg: string): number => d.lines.filter(isLine(msg)).length

/** Connect failures, a connection, readings, an outage and a reconnect; then every route and CLI. */
async function exercise (t: Test, daemon: DaemonRun, link: Proxy, file: string, env: NodeJS.ProcessEnv): Promise<void> {
  const admin = `http://${String((await daemon.waitForLine('sluice ready')).admin)}`
  await waitUntil(() => count(daemon, 'upstream connect failed; retrying with backoff') >= 1, 10_000, 'a connect failure')
  link.restore()
  await waitUntil(() => count(daemon, 'upstream connected') >= 1, 10_000, 'the upstream connection')
  const sensors = await startSensors(t, brokerUrl(daemon), { count: 1, readingsPerSensor: 5 })
  await sensors.finished()
  link.cut()
  await waitUntil(() => count(daemon, 'upstream connection lost') >= 1, 10_000, 'the outage')
  link.restore()
  await waitUntil(() => count(daemon, 'upstream connected') >= 2, 10_000, 'the reconnect')
  for (const path of ['/status', '/metrics', '/readyz', '/healthz']) seen.push(await (await fetch(`${admin}${path}`)).text())
  const status = await runCli(['status', '--admin', admin])
  const check = await runCli(['check', '-c', file], env)
  t.equal(check.code, 0)
  seen.push(status.stdout, status.stderr, check.stdout, check.stderr)
  t.ok(daemon.lines.some((l) => l.level <= 20), 'verbose lines were logged (debug and below)')
}

function collect (daemon: DaemonRun): void {
  seen.push(JSON.stringify(daemon.lines), daemon.stderr())
}

t.test('no password reaches the logs, the admin endpoint or the CLI, from any of its sources', async (t) => {
  const dir = t.testdir()
  const broker = await startAuthBroker(t)
  const link = await startProxy(t, broker.port)

  // 1. The password in the YAML file. Then SIGHUP with a changed one.
  link.cut()
  const inYaml = config(dir, 'yaml', link, { password: RIGHT })
  const yamlFile = writeConfig(dir, inYaml, 'yaml.yaml')
  const a = await startDaemon(t, yamlFile)
  await exercise(t, a, link, yamlFile, {})
  writeConfig(dir, { ...inYaml, upstream: { ...inYaml.upstream, password: WRONG } }, 'yaml.yaml')
  a.child.kill('SIGHUP')
  await waitUntil(() => a.lines.some((l) => /^config reloaded/.test(l.msg)), 10_000, 'the reload line')
  t.match(a.lines.find((l) => /^config reloaded/.test(l.msg)), { needsRestart: ['upstream.password'] }, 'the change is named, not shown')
  t.equal((await a.kill('SIGTERM')).code, 0)
  collect(a)

  // 2. A password file holding a wrong password: refused credentials, retried and logged.
  link.restore()
  const passwordFile = join(dir, 'upstream.password')
  writeFileSync(passwordFile, `${WRONG}\n`)
  const viaFile = config(dir, 'file', link, { passwordFile })
  const fileConfig = writeConfig(dir, viaFile, 'file.yaml')
  const b = await startDaemon(t, fileConfig)
  await waitUntil(() => broker.refused() >= 2, 10_000, 'the upstream to refuse the credentials twice')
  await waitUntil(() => b.lines.some((l) => l.msg === 'upstream connect failed; retrying with backoff'), 10_000, 'the refusal logged')
  t.match(b.lines.find((l) => l.msg === 'upstream connect failed; retrying with backoff'), { err: /Bad username or password|Not authorized/i })
  // The file fixed, and the daemon restarted to apply it.
  writeFileSync(passwordFile, `${RIGHT}\n`)
  b.child.kill('SIGHUP')
  await waitUntil(() => b.lines.some((l) => /^config reloaded/.test(l.msg)), 10_000, 'the reload line')
  t.match(b.lines.find((l) => /^config reloaded/.test(l.msg)), { needsRestart: ['upstream.password'] })
  t.equal((await b.kill('SIGTERM')).code, 0)
  collect(b)
  link.cut()
  const b2 = await startDaemon(t, fileConfig)
  await exercise(t, b2, link, fileConfig, {})
  t.equal((await b2.kill('SIGTERM')).code, 0)
  collect(b2)

  // 3. The environment.
  link.cut()
  const env = { SLUICE_UPSTREAM_PASSWORD: RIGHT }
  const envFile = writeConfig(dir, config(dir, 'env', link, {}), 'env.yaml')
  const c = await startDaemon(t, envFile, env)
  await exercise(t, c, link, envFile, env)
  t.equal((await c.kill('SIGTERM')).code, 0)
  collect(c)

  const everything = seen.join('\n')
  t.ok(everything.length > 10_000, `searched ${everything.length} characters`)
  for (const secret of SECRETS) {
    t.notOk(everything.includes(secret), `"${secret}" appears nowhere`)
    t.notOk(everything.includes(JSON.stringify([...Buffer.from(secret)]).slice(1, -1)), 'not even as the bytes of a Buffer')
  }
  for (const d of [a, b, b2, c]) {
    t.ok(d.lines.every((l) => typeof l.level === 'number' && typeof l.time === 'number'), 'every stdout line is a JSON log record (journald)')
  }
})

t.test('a terminal gets readable lines; JSON and pretty both redact secrets', async (t) => {
  const capture = (tty: boolean): { stream: Writable & { isTTY?: boolean }, text: () => string } => {
    let text = ''
    const stream = Object.assign(new Writable({ write (chunk, _enc, done) { text += String(chunk); done() } }), tty ? { isTTY: true } : {})
    return { stream, text: () => text }
  }
  for (const tty of [false, true]) {
    const out = capture(tty)
    const logger = createLogger('info', out.stream)
    logger.info({ upstream: { url: 'mqtt://x', password: RIGHT } }, 'upstream options')
    logger.info({ config: { upstream: { password: RIGHT } } }, 'a whole config')
    logger.child({ part: 'upstream' }).warn({ password: RIGHT }, 'a child logger')
    const text = out.text()
    t.notMatch(text, RIGHT, `${tty ? 'pretty' : 'JSON'}: no secret`)
    t.match(text, /\[redacted\]/)
    const lines = text.trim().split('\n')
    if (tty) {
      t.throws(() => JSON.parse(lines[0]), 'not JSON on a terminal')
      t.match(text, /INFO.*upstream options/)
      t.match(text, /WARN.*a child logger/)
    } else {
      t.equal(lines.length, 3)
      t.match(JSON.parse(lines[0]), { level: 30, msg: 'upstream options', upstream: { password: '[redacted]' } })
    }
  }
})

t.test('a log reader that goes away (journald restarted, `| head`) costs log lines, not the daemon', async (t) => {
  const dir = t.testdir()
  const daemon = await startDaemon(t, writeConfig(dir, {
    gateway: { id: 'gw-epipe' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: join(dir, 'buffer') },
    // An upstream that is not there: the daemon logs a warning at every retry.
    upstream: { url: `mqtt://127.0.0.1:${await freePort()}`, backoff: { min: '20ms', max: '50ms' } },
    health: { enabled: false },
    admin: { enabled: false },
    log: { level: 'info' }
  }))
  daemon.child.stdout?.destroy()
  // It goes on logging into the closed pipe (EPIPE) and still takes readings, PUBACKed.
  const sensors = await startSensors(t, brokerUrl(daemon), { count: 1, readingsPerSensor: 200, inflight: 1 })
  await sensors.finished()
  t.equal(sensors.acked.size, 200, 'readings PUBACKed after the log reader went away')
  t.equal(daemon.child.exitCode, null, 'the daemon is still running')
  t.notMatch(daemon.stderr(), /EPIPE/, 'no EPIPE error')
  t.equal((await daemon.kill('SIGTERM')).code, 0, 'and stops cleanly')
})
