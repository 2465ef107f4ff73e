/**
 * The figures a Pi user asks about, taken with the daemon on an emulated ARM Node.js: time from
 * start to `sluice ready`, RSS after start, RSS with a 100k-reading backlog (upstream down), and
 * the ingest rate while building it. Run by `scripts/arm-check.sh ARCH --measure` (same variables
 * as crash.arm.ts). RSS is the qemu process's, read from /proc: it includes qemu's translated-code
 * cache, so it is an upper bound for the same Node.js on a real board. Prints one JSON line.
 */
import { readFileSync } from 'node:fs'
import t from 'tap'
import { startDaemon, writeConfig } from '../helpers/daemon.js'
import { freePort } from '../helpers/ports.js'
import { startSensors } from '../helpers/sensors.js'

const command = JSON.parse(process.env.SLUICE_ARM_COMMAND ?? '[]') as string[]
const BACKLOG = Number(process.env.SLUICE_ARM_BACKLOG ?? 100_000)

function rssMiB (pid: number): number {
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
  return Math.round(kb / 1024)
}

t.test(`under emulation: ready time, RSS after start and with a ${BACKLOG}-reading backlog`, async (t) => {
  t.ok(command.length > 0, 'SLUICE_ARM_COMMAND is set (run through scripts/arm-check.sh)')
  const dir = t.testdir()
  const port = await freePort()
  const nowhere = await freePort() // nothing listens: every reading stays in the buffer
  const config = writeConfig(dir, {
    gateway: { id: 'gw-arm-measure' },
    ingest: { broker: { listen: `127.0.0.1:${port}` } },
    buffer: { path: `${dir}/buffer` },
    upstream: { url: `mqtt://127.0.0.1:${nowhere}`, backoff: { min: '1s', max: '5s' } },
    admin: { listen: '127.0.0.1:0' },
    health: { enabled: false },
    log: { level: 'info' } // the ready line is at info
  })
  const started = Date.now()
  const daemon = await startDaemon(t, config, {}, { command, readyTimeoutMs: 180_000 })
  const readyMs = Date.now() - started
  const pid = daemon.child.pid ?? 0
  await new Promise((resolve) => setTimeout(resolve, 2000)) // RSS after start, once the start-up work is over
  const rssStart = rssMiB(pid)
  const sensors = await startSensors(t, `mqtt://127.0.0.1:${port}`, { count: 4, inflight: 50 })
  const ingestStart = Date.now()
  await sensors.waitForAcked(BACKLOG, 1_800_000)
  const ingestPerS = Math.round(sensors.acked.size / ((Date.now() - ingestStart) / 1000))
  await sensors.stop()
  const rssBacklog = rssMiB(pid)
  t.ok(sensors.acked.size >= BACKLOG, `${sensors.acked.size} readings buffered`)
  console.log(JSON.stringify({ arch: process.env.SLUICE_ARM_ARCH, readyMs, rssStartMiB: rssStart, backlog: sensors.acked.size, rssBacklogMiB: rssBacklog, ingestPerS }))
  const stopped = await daemon.kill('SIGTERM')
  t.equal(stopped.code, 0, 'SIGTERM: exit 0')
})
