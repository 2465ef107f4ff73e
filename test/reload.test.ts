/**
 * SIGHUP on the spawned daemon: the config is read again; what can change live does, and one log
 * line says what changed, what applied and what needs a restart.
 */
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { startDaemon, writeConfig, type DaemonRun } from './helpers/daemon.js'
import { freePort } from './helpers/ports.js'
import { waitUntil } from './helpers/wait.js'

function baseConfig (dir: string, adminPort: number): Record<string, any> {
  return {
    gateway: { id: 'gw-reload' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: `${dir}/buffer` },
    // Nothing listens upstream: reload does not need it.
    upstream: { url: 'mqtt://127.0.0.1:9', backoff: { min: '1s', max: '10s' }, inflight: 64 },
    health: { interval: '60s' },
    admin: { listen: `127.0.0.1:${adminPort}` },
    log: { level: 'info' }
  }
}

/** Sends SIGHUP and waits for the next reload line; returns it and checks it is the only new one. */
async function hup (t: Test, daemon: DaemonRun): Promise<any> {
  const isReload = (l: any): boolean => typeof l.msg === 'string' && /^config reload/.test(l.msg)
  const before = daemon.lines.filter(isReload).length
  daemon.child.kill('SIGHUP')
  await waitUntil(() => daemon.lines.filter(isReload).length > before, 10_000, 'the reload log line')
  const lines = daemon.lines.filter(isReload).slice(before)
  t.equal(lines.length, 1, 'one line per reload')
  return lines[0]
}

async function healthz (port: number): Promise<number> {
  return (await fetch(`http://127.0.0.1:${port}/healthz`)).status
}

t.test('SIGHUP applies log.level, health and admin.listen live, and names what needs a restart', async (t) => {
  const dir = t.testdir()
  const adminPort = await freePort()
  const config = baseConfig(dir, adminPort)
  const file = writeConfig(dir, config)
  const daemon = await startDaemon(t, file)
  t.equal(await healthz(adminPort), 200)

  // Nothing changed.
  const same = await hup(t, daemon)
  t.match(same, { level: 30, msg: 'config reloaded: nothing changed', changed: [] })

  // log.level and health.interval live; upstream.inflight needs a restart.
  writeConfig(dir, { ...config, log: { level: 'debug' }, health: { interval: '200ms' }, upstream: { ...config.upstream, inflight: 8 } })
  const line = await hup(t, daemon)
  t.match(line, {
    level: 40, // a warning: something did not apply
    msg: 'config reloaded: applied health.interval 60s -> 200ms, log.level info -> debug; needs a restart to apply: upstream.inflight',
    changed: ['upstream.inflight', 'health.interval', 'log.level'],
    applied: ['health.interval 60s -> 200ms', 'log.level info -> debug'],
    needsRestart: ['upstream.inflight'],
    failed: []
  })
  t.notOk(daemon.lines.some((l) => l.msg === 'admin request'), 'no debug line before the reload')
  t.equal(await healthz(adminPort), 200)
  await waitUntil(() => daemon.lines.some((l) => l.msg === 'admin request' && l.level === 20), 10_000, 'a debug line: the new level is live')
  const status = async (): Promise<any> => await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json()
  const deadline = Date.now() + 10_000
  while (((await status()).totals.ingested.system ?? 0) < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
  t.ok((await status()).totals.ingested.system >= 2, 'health readings at the new interval')

  // A second reload with the same file: the restart-only change is still pending, nothing else.
  const again = await hup(t, daemon)
  t.match(again, { changed: ['upstream.inflight'], applied: [], needsRestart: ['upstream.inflight'] })

  // admin.listen moves live.
  const newPort = await freePort()
  writeConfig(dir, { ...config, log: { level: 'debug' }, health: { interval: '200ms' }, upstream: { ...config.upstream, inflight: 8 }, admin: { listen: `127.0.0.1:${newPort}` } })
  const moved = await hup(t, daemon)
  t.match(moved, { applied: [`admin.listen 127.0.0.1:${adminPort} -> 127.0.0.1:${newPort}`] })
  t.equal(await healthz(newPort), 200, 'the new address answers')
  await t.rejects(fetch(`http://127.0.0.1:${adminPort}/healthz`), 'the old one is closed')

  const stopped = await daemon.kill('SIGTERM')
  t.equal(stopped.code, 0)
})

t.test('SIGHUP with an invalid config changes nothing and says why', async (t) => {
  const dir = t.testdir()
  const adminPort = await freePort()
  const config = baseConfig(dir, adminPort)
  const file = writeConfig(dir, config)
  const daemon = await startDaemon(t, file)

  writeFileSync(file, 'gateway: { id: gw-reload }\nupstream: { url: "mqtt://127.0.0.1:9", password: 12345 }\nbuffer: { sync: sometimes }\nlog: { level: debug }\n')
  const line = await hup(t, daemon)
  t.match(line, {
    level: 50,
    msg: 'config reload failed: the file is invalid; nothing changed',
    errors: [/^buffer\.sync: expected one of/, 'upstream.password: invalid (value not shown)']
  })
  t.notMatch(JSON.stringify(daemon.lines), /12345/, 'not even a wrong password is shown')
  t.equal(await healthz(adminPort), 200, 'still running')
  t.equal(await healthz(adminPort), 200)
  t.notOk(daemon.lines.some((l) => l.msg === 'admin request'), 'log.level did not change')

  // The file fixed: with a port that is taken, admin.listen cannot apply: said, not fatal.
  const blocker = await import('node:net').then(({ createServer }) => createServer())
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { blocker.close() })
  const taken = (blocker.address() as { port: number }).port
  writeConfig(dir, { ...config, admin: { listen: `127.0.0.1:${taken}` } })
  const failed = await hup(t, daemon)
  t.match(failed, { level: 40, applied: [], failed: [/^admin\.listen: /] })
  t.equal(await healthz(adminPort), 200, 'the old address still serves')

  const stopped = await daemon.kill('SIGTERM')
  t.equal(stopped.code, 0)
})
