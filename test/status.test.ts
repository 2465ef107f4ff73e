/**
 * `sluice status` as an operator runs it: the built CLI against a spawned daemon (and, for the
 * not-ready case, against an in-process gateway whose disk reads full).
 */
import t from 'tap'
import { validateConfig } from '../config/index.js'
import { Gateway } from '../daemon/gateway.js'
import { createLogger } from '../daemon/logger.js'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy } from './helpers/proxy.js'
import { startReceiver } from './helpers/receiver.js'
import { readingArrivals, startSensors } from './helpers/sensors.js'
import { adminUrl, pinPorts, runCli, startDaemon, writeConfig } from './helpers/daemon.js'
import { freePort } from './helpers/ports.js'

t.test('sluice status: a short summary of a running daemon, exit 0 while ready', async (t) => {
  const dir = t.testdir()
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const config = writeConfig(dir, {
    gateway: { id: 'gw-status' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: `${dir}/buffer` },
    upstream: { url: link.url, backoff: { min: '50ms', max: '500ms' } },
    health: { enabled: false },
    admin: { listen: '127.0.0.1:0' }
  })
  const daemon = await startDaemon(t, config)
  const ready = await daemon.waitForLine('sluice ready')
  t.match(ready.admin, /^127\.0\.0\.1:[1-9]\d*$/, 'the ready line says where the admin endpoint is (the real port for port 0)')
  const admin = adminUrl(daemon)
  const sensorPort = daemon.ports.broker ?? 0
  // -c FILE below reads the admin address from the config: give it the real one.
  pinPorts(config, daemon)

  const sensors = await startSensors(t, `mqtt://127.0.0.1:${sensorPort}`, { count: 2, inflight: 5, readingsPerSensor: 50 })
  await sensors.finished()
  await receiver.waitFor((msgs) => new Set(readingArrivals(msgs).map((a) => a.seq)).size === 100, 15_000, '100 readings upstream')
  let status = await runCli(['status', '--admin', admin])
  // The acknowledgement of the last readings may reach the daemon just after the receiver saw them.
  for (let i = 0; i < 50 && !/backlog\s+0 readings/.test(status.stdout); i++) status = await runCli(['status', '--admin', admin])
  t.equal(status.code, 0, 'exit 0: ready')
  t.match(status.stdout, /^sluice gw-status: READY \(open, up \d+\w*.*version 0\.1\.0\)$/m)
  t.match(status.stdout, /^ {2}upstream +connected to mqtt:\/\/127\.0\.0\.1:\d+ \(0 reconnects, 0 in flight\)$/m)
  t.match(status.stdout, /^ {2}backlog +0 readings, buffer [\d.]+ \w+ on disk, nothing unsent$/m)
  t.match(status.stdout, /^ {2}rates +[\d.]+ in, [\d.]+ forwarded \(readings\/s, last \S+\)$/m)
  t.match(status.stdout, /^ {2}drops +none$/m)
  t.match(status.stdout, /^ {2}refused +none$/m)
  t.match(status.stdout, new RegExp(`^ {2}disk +[\\d.]+ \\w+ free of [\\d.]+ \\w+ \\(${dir}/buffer\\)$`, 'm'))
  t.match(status.stdout, new RegExp(`^ {2}ingest +broker on 127\\.0\\.0\\.1:${sensorPort} \\(\\d+ sensors connected\\)$`, 'm'))
  t.match(status.stdout, /^ {2}buffer +epoch [0-9a-f]{32}, last seq 100, /m)

  // -c FILE: the admin address comes from the config.
  const viaConfig = await runCli(['status', '-c', config])
  t.equal(viaConfig.code, 0)
  t.match(viaConfig.stdout, /^sluice gw-status: READY/)

  // An outage: not connected, a backlog that ages; still ready (buffering is the job).
  link.cut()
  const more = await startSensors(t, `mqtt://127.0.0.1:${sensorPort}`, { count: 1, inflight: 5, readingsPerSensor: 40 })
  await more.finished()
  status = await runCli(['status', '--admin', admin])
  for (let i = 0; i < 50 && !/NOT CONNECTED/.test(status.stdout); i++) status = await runCli(['status', '--admin', admin])
  t.equal(status.code, 0, 'an upstream outage is not "not ready"')
  t.match(status.stdout, /^ {2}upstream +NOT CONNECTED to mqtt:\/\/127\.0\.0\.1:\d+/m)
  t.match(status.stdout, /^ {2}backlog +40 readings, buffer [\d.]+ \w+ on disk, oldest unsent \d+\w* ago$/m)
  link.restore()
  await daemon.kill('SIGTERM')
})

t.test('sluice status: exit 1 and says so when the daemon cannot be reached', async (t) => {
  const port = await freePort()
  const down = await runCli(['status', '--admin', `http://127.0.0.1:${port}`])
  t.equal(down.code, 1)
  t.match(down.stderr, new RegExp(`UNREACHABLE: cannot reach sluice at http://127\\.0\\.0\\.1:${port}/status: ECONNREFUSED`))
  t.equal(down.stdout, '')

  const bad = await runCli(['status', '--admin', 'not a url'])
  t.equal(bad.code, 2, 'a bad --admin is bad usage')

  const dir = t.testdir()
  const disabled = writeConfig(dir, { gateway: { id: 'gw' }, upstream: { url: 'mqtt://127.0.0.1:1883' }, admin: { enabled: false } })
  const off = await runCli(['status', '-c', disabled])
  t.equal(off.code, 1)
  t.match(off.stderr, /admin endpoint is disabled/)

  const invalid = writeConfig(dir, { gateway: { id: 'gw' } }, 'invalid.yaml')
  t.equal((await runCli(['status', '-c', invalid])).code, 2, 'an invalid -c FILE exits 2 like every command')
})

t.test('sluice status: exit 1 with the reasons when the gateway is not ready', async (t) => {
  let free = 8 * 1024 ** 3
  const config = validateConfig({
    gateway: { id: 'gw-full' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: `${t.testdir()}/buffer` },
    upstream: { url: `mqtt://127.0.0.1:${await freePort()}` },
    health: { enabled: false },
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'silent' }
  })
  const gateway = await Gateway.start({ config, logger: createLogger('silent'), diskSpace: async () => ({ freeBytes: free, totalBytes: 16 * 1024 ** 3 }) })
  t.teardown(async () => { await gateway.close() })
  const admin = `http://127.0.0.1:${gateway.adminAddress()?.port ?? 0}`
  const ok = await runCli(['status', '--admin', admin])
  t.equal(ok.code, 0)
  t.match(ok.stdout, /NOT CONNECTED/, 'no upstream: not connected, yet ready')
  free = 1000
  const full = await runCli(['status', '--admin', admin])
  t.equal(full.code, 1, 'exit 1: not ready')
  t.match(full.stdout, /^sluice gw-full: NOT READY: the disk is full: 1000 bytes free/)
  t.match(full.stdout, /^ {2}disk +1000 B free of 16\.0 GiB/m, 'the rest of the summary still shows')
})
