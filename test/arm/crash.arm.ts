/**
 * The kill -9 crash check with the daemon on an emulated ARM Node.js (qemu user mode), run by
 * scripts/arm-check.sh. The daemon is the package as a Pi gets it (dist/ plus production
 * node_modules installed for that CPU); the sensors, the receiver and the mosquitto upstream are
 * this machine's, as network peers are. Not part of `npm test`: it needs the set-up that
 * scripts/arm-check.sh does, handed over in these variables:
 *   SLUICE_ARM_COMMAND  JSON array: the program and arguments that start the daemon, before
 *                       `run -c FILE` (e.g. ["qemu-aarch64", ".../bin/node", "--import", ".../whoami.mjs", ".../dist/daemon/bin.js"])
 *   SLUICE_ARM_ARCH     the process.arch the daemon must report (arm64 | arm)
 *   SLUICE_ARM_BINDING  the LevelDB binding file the daemon must have loaded (absolute path)
 */
import { readFileSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { brokerUrl, pinPorts, startDaemon, writeConfig, type DaemonRun } from '../helpers/daemon.js'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy } from '../helpers/proxy.js'
import { startReceiver } from '../helpers/receiver.js'
import { startSensors } from '../helpers/sensors.js'
import { checkDelivered } from '../helpers/delivery.js'

function required (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`${name} is not set: run this through scripts/arm-check.sh`)
  return value
}
const command = JSON.parse(required('SLUICE_ARM_COMMAND')) as string[]
const arch = required('SLUICE_ARM_ARCH')
const binding = required('SLUICE_ARM_BINDING')
// Emulated Node.js starts 10-20x slower than native (measured here: a few seconds to ready on an idle machine, minutes on a loaded one).
const slow = { command, readyTimeoutMs: 300_000 }

/** From outside and from inside the daemon: an ARM process with the ARM LevelDB binding mapped. */
function checkArm (t: Test, daemon: DaemonRun, whoamiFile: string): void {
  const pid = daemon.child.pid
  if (pid === undefined) throw new Error('the daemon has no pid')
  const inside = readFileSync(whoamiFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { pid: number, arch: string })
  t.same(inside.filter((w) => w.pid === pid).map((w) => w.arch), [arch], `process.arch inside the daemon is ${arch}`)
  t.match(readlinkSync(`/proc/${pid}/exe`), /\/qemu-(aarch64|arm)$/, 'the daemon runs under qemu')
  // qemu user mode maps the guest's shared objects into its own address space, so the host's
  // view of the process lists the native addons the ARM Node.js loaded.
  const addons = new Set(readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')
    .map((l) => l.trim().split(/\s+/)[5]).filter((p): p is string => p !== undefined && p.endsWith('.node')))
  t.ok(addons.has(binding), `loaded ${binding}`)
  t.same([...addons].filter((p) => /x64|x86/.test(p)), [], 'no x86 addon loaded')
}

t.test('under emulation: kill -9 while buffering, restart, every PUBACKed reading arrives in order', async (t) => {
  const dir = t.testdir()
  const whoami = join(dir, 'whoami.jsonl')
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const config = writeConfig(dir, {
    gateway: { id: 'gw-arm' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: `${dir}/buffer` },
    upstream: { url: link.url, backoff: { min: '50ms', max: '500ms' } },
    admin: { listen: '127.0.0.1:0' },
    health: { enabled: false },
    log: { level: 'info' }
  })
  const env = { SLUICE_ARM_WHOAMI: whoami }
  const first = await startDaemon(t, config, env, slow)
  checkArm(t, first, whoami)
  pinPorts(config, first) // the restart listens where the sensors connect
  const sensors = await startSensors(t, brokerUrl(first), { count: 2, inflight: 5 })
  await sensors.waitForAcked(100, 60_000)
  link.cut() // from here the readings wait in the buffer
  await sensors.waitForAcked(sensors.acked.size + 300, 60_000)
  const killed = await first.kill('SIGKILL')
  t.equal(killed.signal, 'SIGKILL', 'killed with SIGKILL while buffering')
  const ackedBeforeCrash = sensors.acked.size

  const second = await startDaemon(t, config, env, slow)
  checkArm(t, second, whoami)
  const ready = await second.waitForLine('sluice ready')
  t.equal(ready.uncleanStop, true, 'the restart knows the last stop was not clean')
  t.ok(ready.lastSeq >= ackedBeforeCrash, `seq goes on from ${String(ready.lastSeq)} (${ackedBeforeCrash} PUBACKed before the crash)`)
  await sensors.waitForAcked(ackedBeforeCrash + 100, 60_000) // the sensors reconnected and go on
  link.restore()
  await sensors.stop()

  await checkDelivered(t, receiver, sensors.acked, { timeoutMs: 120_000 })
  const stopped = await second.kill('SIGTERM')
  t.equal(stopped.code, 0, 'SIGTERM: exit 0')
})
