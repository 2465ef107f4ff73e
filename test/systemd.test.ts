/**
 * Running under systemd (docs/operations.md): the unit file as systemd's own tools judge it, and the built
 * daemon speaking the notification protocol to a stand-in for systemd (there is no running
 * systemd here: a datagram socket in NOTIFY_SOCKET is what a Type=notify service sees).
 */
import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { connectAsync } from 'mqtt'
import { parse as parseYaml } from 'yaml'
import { startDaemon, writeConfig } from './helpers/daemon.js'
import { startNotifySocket, type Notification } from './helpers/notify-socket.js'
import { freePort } from './helpers/ports.js'

const UNIT = fileURLToPath(new URL('../systemd/sluice.service', import.meta.url))
const EXAMPLE = fileURLToPath(new URL('../config/example.yaml', import.meta.url))

/** The unit's [Service] and [Unit] keys; a key given twice keeps every value. */
function unitKeys (text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>()
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';') || line.startsWith('[')) continue
    const eq = line.indexOf('=')
    const key = line.slice(0, eq)
    keys.set(key, [...(keys.get(key) ?? []), line.slice(eq + 1)])
  }
  return keys
}

function one (keys: Map<string, string[]>, key: string): string | undefined {
  return keys.get(key)?.at(-1)
}

/** systemd time spans as the unit uses them ("30s", "5min", "90"), in seconds. */
function seconds (span: string): number {
  const m = /^(\d+)\s*(ms|s|sec|min|m)?$/.exec(span.trim())
  if (m === null) throw new Error(`not a time span this test reads: ${span}`)
  const n = Number(m[1])
  switch (m[2]) {
    case 'ms': return n / 1000
    case 'min': case 'm': return n * 60
    default: return n
  }
}

/** A copy of the unit whose ExecStart names an executable that exists (verify checks that). */
function unitCopy (t: Test): string {
  const dir = t.testdir()
  const bin = join(dir, 'sluice')
  writeFileSync(bin, '#!/bin/sh\nexit 0\n')
  chmodSync(bin, 0o755)
  const text = readFileSync(UNIT, 'utf8')
  t.match(text, /^ExecStart=\/opt\/sluice\/bin\/sluice /m, 'the shipped unit runs /opt/sluice/bin/sluice')
  const file = join(dir, 'sluice.service')
  writeFileSync(file, text.replace(/^ExecStart=\/opt\/sluice\/bin\/sluice /m, `ExecStart=${bin} `))
  return file
}

t.test('systemd-analyze verify finds nothing to say about the unit', async (t) => {
  const result = spawnSync('systemd-analyze', ['verify', unitCopy(t)], { encoding: 'utf8' })
  t.equal(result.error, undefined, 'systemd-analyze runs (Debian package systemd)')
  t.equal(result.status, 0, `verify exits 0: ${result.stderr}`)
  t.equal(`${result.stdout}${result.stderr}`.trim(), '', 'no warning at all')
})

t.test('systemd-analyze security rates the exposure at 2.0 or lower', async (t) => {
  const result = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', unitCopy(t)], { encoding: 'utf8' })
  t.equal(result.error, undefined, 'systemd-analyze runs')
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(result.stdout)
  t.ok(m, `an exposure score is printed: ${result.stdout.slice(-300)} ${result.stderr}`)
  const score = Number(m?.[1])
  t.ok(score <= 2.0, `exposure ${score} <= 2.0`)
  t.comment(`systemd-analyze security --offline=true: exposure ${score}`)
})

t.test('the unit runs sluice the way the daemon and the installer expect', async (t) => {
  const keys = unitKeys(readFileSync(UNIT, 'utf8'))
  t.equal(one(keys, 'Type'), 'notify', 'Type=notify: systemd waits for READY=1')
  t.equal(one(keys, 'NotifyAccess'), 'all', 'the notification comes from the systemd-notify helper, not the main pid')
  t.equal(one(keys, 'ExecStart'), '/opt/sluice/bin/sluice run -c /etc/sluice/sluice.yaml')
  t.equal(one(keys, 'User'), 'sluice', 'an unprivileged user')
  t.equal(one(keys, 'Restart'), 'on-failure')
  t.equal(one(keys, 'RestartPreventExitStatus'), '2', 'a bad config (exit 2) is not restarted in a loop')
  t.equal(keys.get('CapabilityBoundingSet')?.join(''), '', 'no capabilities (1883 is not a privileged port)')
  // ProtectSystem=strict leaves only the StateDirectory writable: the default buffer must be there.
  t.equal(one(keys, 'ProtectSystem'), 'strict')
  const example = parseYaml(readFileSync(EXAMPLE, 'utf8')) as { buffer: { path: string } }
  t.equal(example.buffer.path, `/var/lib/${one(keys, 'StateDirectory') ?? ''}`, 'the config\'s buffer.path is the StateDirectory')
  // The daemon drains for up to 2 s on SIGTERM, then closes LevelDB: the stop timeout leaves room.
  t.ok(seconds(one(keys, 'TimeoutStopSec') ?? '0') >= 10, 'TimeoutStopSec leaves room for the drain')
  t.ok(seconds(one(keys, 'WatchdogSec') ?? '0') >= 10, 'a watchdog, not so tight that a busy Pi trips it')
  // What Node needs: V8's JIT writes code (no MemoryDenyWriteExecute); the health readings read
  // /proc/stat (no ProcSubset=pid).
  t.notOk(keys.has('MemoryDenyWriteExecute'), 'no MemoryDenyWriteExecute')
  t.not(one(keys, 'ProcSubset'), 'pid', 'no ProcSubset=pid')
  t.match(one(keys, 'RestrictAddressFamilies') ?? '', /AF_UNIX/, 'AF_UNIX allowed: the notify socket is one')
})

/** The built daemon's config: sensors on `port`, an upstream nobody listens on (sluice buffers). */
async function daemonConfig (dir: string): Promise<{ file: string, port: number }> {
  const port = await freePort()
  const nobody = await freePort()
  const file = writeConfig(dir, {
    gateway: { id: 'gw-systemd' },
    ingest: { broker: { listen: `127.0.0.1:${port}` } },
    buffer: { path: join(dir, 'buffer') },
    upstream: { url: `mqtt://127.0.0.1:${nobody}`, backoff: { min: '1s', max: '5s' } },
    log: { level: 'info' }
  })
  return { file, port }
}

/** A sensor's QoS 1 publish: resolves once PUBACKed, i.e. the reading is in the buffer. */
async function publishOne (port: number): Promise<void> {
  const client = await connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 })
  try {
    await client.publishAsync('sensors/probe', '{"v":1}', { qos: 1 })
  } finally {
    await client.endAsync()
  }
}

const kinds = (messages: Notification[]): string[] => messages.map((m) =>
  Object.keys(m.fields).filter((k) => k !== 'STATUS').join('+'))

t.test('READY=1 once sensors can publish, WATCHDOG=1 every half WATCHDOG_USEC, STOPPING=1 on SIGTERM', async (t) => {
  const systemd = await startNotifySocket(t)
  const { file, port } = await daemonConfig(t.testdir())
  // What a sensor gets the moment systemd hears READY=1: the buffer must be open, the port bound.
  // (a cast, not an annotation: TypeScript cannot see the callback assign it, and would narrow it to null)
  let probe = null as Promise<string> | null
  systemd.onMessage((n) => {
    if (n.fields.READY === '1' && probe === null) {
      probe = publishOne(port).then(() => 'acked', (err: Error) => `failed: ${err.message}`)
    }
  })
  const watchdogUsec = 600_000
  const daemon = await startDaemon(t, file, { NOTIFY_SOCKET: systemd.path, WATCHDOG_USEC: String(watchdogUsec) })
  await systemd.waitFor((ms) => ms.some((m) => m.fields.READY === '1'), 15_000, 'READY=1')
  t.equal(await probe, 'acked', 'a sensor publishing as READY=1 arrives is PUBACKed')
  t.equal(systemd.messages.filter((m) => m.fields.READY === '1').length, 1, 'READY=1 once')

  const afterReady = (): Notification[] => systemd.messages.slice(systemd.messages.findIndex((m) => m.fields.READY === '1'))
  await systemd.waitFor(() => afterReady().filter((m) => m.fields.WATCHDOG === '1').length >= 5, 20_000, '5 watchdog pings after READY')
  const pings = afterReady().filter((m) => m.fields.WATCHDOG === '1').map((m) => m.at)
  const gaps = pings.slice(1).map((at, i) => at - pings[i]).sort((a, b) => a - b)
  const median = gaps[Math.floor(gaps.length / 2)]
  t.ok(median < watchdogUsec / 1000, `pings come well within the watchdog timeout (median gap ${median} ms < ${watchdogUsec / 1000} ms)`)
  t.ok(median >= watchdogUsec / 1000 / 4, `and are not spammed (median gap ${median} ms, asked: half of ${watchdogUsec / 1000} ms)`)

  const exit = daemon.kill('SIGTERM')
  await systemd.waitFor((ms) => ms.some((m) => m.fields.STOPPING === '1'), 15_000, 'STOPPING=1')
  t.same(await exit, { code: 0, signal: null }, 'then exits 0')
  const order = kinds(systemd.messages).filter((k) => k !== 'WATCHDOG')
  t.same(order, ['READY', 'STOPPING'], 'READY before STOPPING, each once')
  t.ok(daemon.lines.some((l) => l.msg === 'sluice stopped'), 'a clean stop')
})

t.test('WATCHDOG_PID naming another process: READY and STOPPING, but no pings', async (t) => {
  const systemd = await startNotifySocket(t)
  const { file } = await daemonConfig(t.testdir())
  // sd_watchdog_enabled(3): the variables were meant for another process (inherited through a
  // wrapper), so pinging would keep the wrong process alive.
  const daemon = await startDaemon(t, file, { NOTIFY_SOCKET: systemd.path, WATCHDOG_USEC: '200000', WATCHDOG_PID: '1' })
  await systemd.waitFor((ms) => ms.some((m) => m.fields.READY === '1'), 15_000, 'READY=1')
  t.same(await daemon.kill('SIGTERM'), { code: 0, signal: null })
  await systemd.waitFor((ms) => ms.some((m) => m.fields.STOPPING === '1'), 15_000, 'STOPPING=1')
  // The daemon pings once at start when it pings at all, so a wrong one shows before READY.
  t.same(kinds(systemd.messages), ['READY', 'STOPPING'], 'no WATCHDOG=1')
})

/** A fake systemd-notify first on PATH that records its calls and exits with `code`. */
function fakeNotify (dir: string, code: number): { env: NodeJS.ProcessEnv, calls: () => string[] } {
  const log = join(dir, 'calls')
  const bin = join(dir, 'systemd-notify')
  writeFileSync(bin, `#!/bin/sh\necho "$*" >> '${log}'\necho "Failed to notify init system: stand-in" >&2\nexit ${code}\n`)
  chmodSync(bin, 0o755)
  return {
    env: { PATH: `${dir}:${process.env.PATH ?? '/usr/bin:/bin'}` },
    calls: () => existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []
  }
}

t.test('without NOTIFY_SOCKET nothing is sent, even with WATCHDOG_USEC set', async (t) => {
  const dir = t.testdir()
  const fake = fakeNotify(dir, 0)
  const { file, port } = await daemonConfig(dir)
  const env: NodeJS.ProcessEnv = { ...fake.env, WATCHDOG_USEC: '200000' }
  // undefined: the variable is left out of the child's environment altogether.
  const daemon = await startDaemon(t, file, { ...env, NOTIFY_SOCKET: undefined })
  await publishOne(port)
  t.same(await daemon.kill('SIGTERM'), { code: 0, signal: null })
  t.same(fake.calls(), [], 'systemd-notify never ran')
})

t.test('a systemd-notify that fails is logged once, with its code, and sluice goes on', async (t) => {
  const dir = t.testdir()
  const fake = fakeNotify(dir, 1)
  const { file, port } = await daemonConfig(dir)
  const daemon = await startDaemon(t, file, { ...fake.env, NOTIFY_SOCKET: '/nonexistent/notify.sock', WATCHDOG_USEC: '200000' })
  await daemon.waitForLine('could not notify systemd through systemd-notify; the unit needs NotifyAccess=all and systemd >= 246')
  await publishOne(port)
  t.pass('readings are still accepted')
  t.same(await daemon.kill('SIGTERM'), { code: 0, signal: null }, 'and it stops cleanly')
  const failures = daemon.lines.filter((l) => l.code === 'SLUICE_NOTIFY_FAILED')
  t.equal(failures.length, 1, 'one error line, not one per watchdog ping')
  t.equal(failures[0]?.level, 50, 'at level error')
  t.ok(fake.calls().length >= 3, `the helper was tried for every message (${fake.calls().length} calls)`)
})
