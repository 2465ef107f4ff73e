/**
 * Black-box: the built daemon as a child process, killed with real signals, against a real
 * mosquitto upstream. What the sensors saw PUBACKed is recorded on the sensor side.
 */
import t, { type Test } from 'tap'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy } from './helpers/proxy.js'
import { startReceiver } from './helpers/receiver.js'
import { checkDelivered } from './helpers/delivery.js'
import { startSensors } from './helpers/sensors.js'
import { brokerUrl, pinPorts, startDaemon, writeConfig } from './helpers/daemon.js'

/** The broker listens on port 0; after the first start pinPorts keeps the port for restarts. */
function daemonConfig (dir: string, upstreamUrl: string): string {
  return writeConfig(dir, {
    gateway: { id: 'gw-crash' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: `${dir}/buffer` },
    upstream: { url: upstreamUrl, backoff: { min: '50ms', max: '500ms' } },
    admin: { listen: '127.0.0.1:0' },
    health: { enabled: false },
    log: { level: 'info' }
  })
}

t.test('kill -9 while holding a backlog: after a restart every PUBACKed reading arrives', async (t) => {
  const dir = t.testdir()
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const config = daemonConfig(dir, link.url)
  const first = await startDaemon(t, config)
  pinPorts(config, first)
  const sensorUrl = brokerUrl(first)
  const sensors = await startSensors(t, sensorUrl, { count: 3, inflight: 10 })
  await sensors.waitForAcked(300)
  link.cut()
  await sensors.waitForAcked(sensors.acked.size + 2000)
  const killed = await first.kill('SIGKILL')
  t.equal(killed.signal, 'SIGKILL')
  const ackedBeforeCrash = sensors.acked.size

  const second = await startDaemon(t, config)
  const ready = await second.waitForLine('sluice ready')
  t.equal(ready.uncleanStop, true, 'the restart knows the last stop was not clean')
  t.ok(ready.lastSeq >= ackedBeforeCrash, `seq goes on from ${String(ready.lastSeq)}`)
  await sensors.waitForAcked(ackedBeforeCrash + 300) // the sensors reconnected and go on
  link.restore()
  await sensors.stop()
  await checkDelivered(t, receiver, sensors.acked, { oneEpoch: true })
  await second.kill('SIGTERM')
})

t.test('kill -9 at random moments under saturating load loses no PUBACKed reading', async (t) => {
  const dir = t.testdir()
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const config = daemonConfig(dir, upstream.url)
  let daemon = await startDaemon(t, config)
  pinPorts(config, daemon)
  const sensorUrl = brokerUrl(daemon)
  const sensors = await startSensors(t, sensorUrl, { count: 4, inflight: 100 })
  const moments: number[] = []
  for (let round = 0; round < 4; round++) {
    await sensors.waitForAcked(sensors.acked.size + 500)
    // The point of this test is an arbitrary moment under load, so the wait is random on purpose.
    const moment = 50 + Math.floor(Math.random() * 700)
    moments.push(moment)
    await new Promise((resolve) => setTimeout(resolve, moment))
    await daemon.kill('SIGKILL')
    daemon = await startDaemon(t, config)
  }
  t.comment(`killed at ${moments.join(', ')} ms after 500 more PUBACKs`)
  await sensors.waitForAcked(sensors.acked.size + 500)
  await sensors.stop()
  await checkDelivered(t, receiver, sensors.acked, { oneEpoch: true })
  const stopped = await daemon.kill('SIGTERM')
  t.equal(stopped.code, 0)
})

t.test('SIGTERM stops cleanly: exit 0, nothing lost, the next start keeps the epoch', async (t) => {
  const dir = t.testdir()
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const config = daemonConfig(dir, link.url)
  const first = await startDaemon(t, config)
  pinPorts(config, first)
  const sensorUrl = brokerUrl(first)
  const epoch = (await first.waitForLine('sluice ready')).epoch
  const sensors = await startSensors(t, sensorUrl, { count: 2, inflight: 20 })
  await sensors.waitForAcked(1000)
  link.cut() // leave a backlog behind
  await sensors.waitForAcked(sensors.acked.size + 500)
  const started = Date.now()
  const stopped = await first.kill('SIGTERM')
  t.equal(stopped.code, 0, 'exit 0')
  t.ok(Date.now() - started < 10_000, 'promptly')
  const stoppedLine = await first.waitForLine('sluice stopped')
  t.ok(stoppedLine.lastSeq >= sensors.acked.size, 'every PUBACKed reading was in the buffer at the stop')
  await sensors.stop()

  const second = await startDaemon(t, config)
  const ready = await second.waitForLine('sluice ready')
  t.equal(ready.uncleanStop, false, 'the stop was clean')
  t.equal(ready.epoch, epoch, 'same epoch')
  link.restore()
  await checkDelivered(t, receiver, sensors.acked, { oneEpoch: true })
  await second.kill('SIGTERM')
})

t.test('a second daemon on the same buffer is refused with exit 2', async (t) => {
  const dir = t.testdir()
  const upstream = await startMosquitto(t)
  const first = await startDaemon(t, daemonConfig(dir, upstream.url))
  const other = writeConfig(dir, {
    gateway: { id: 'gw-crash' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: `${dir}/buffer` },
    upstream: { url: upstream.url },
    admin: { listen: '127.0.0.1:0' }
  }, 'other.yaml')
  const { runCli } = await import('./helpers/daemon.js')
  const second = await runCli(['run', '-c', other])
  t.equal(second.code, 2)
  t.match(second.stdout + second.stderr, /in use by another process/)
  await first.kill('SIGTERM')
})
