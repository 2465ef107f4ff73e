/**
 * Certificate renewal on the spawned daemon: the TLS listener's files are replaced in place and a
 * real SIGHUP makes new connections get the new certificate while a sensor connected over TLS
 * keeps its connection and its readings flowing; a broken replacement keeps the old certificate
 * and says why. Bad TLS files stop the daemon at start with exit 2; `sluice check` shows the
 * tls section.
 */
import t, { type Test } from 'tap'
import { X509Certificate } from 'node:crypto'
import { copyFileSync, readFileSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { connect, type MqttClient } from 'mqtt'
import { runCli, startDaemon, writeConfig, type DaemonRun } from './helpers/daemon.js'
import { extraCert, makeCerts } from './helpers/certs.js'
import { waitUntil } from './helpers/wait.js'

function fingerprint (file: string): string {
  return new X509Certificate(readFileSync(file)).fingerprint256
}

interface ClientTls { ca: Buffer, cert: Buffer, key: Buffer }

/** The certificate a new MQTT connection over TLS gets (read once it is connected). */
async function servedFingerprint (port: number, tls: ClientTls): Promise<string> {
  const client = connect(`mqtts://localhost:${port}`, { ...tls, reconnectPeriod: 0, connectTimeout: 5000 })
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => { resolve() })
      client.once('error', reject)
    })
    return (client.stream as TLSSocket).getPeerCertificate().fingerprint256
  } finally {
    await client.endAsync(true)
  }
}

/** Replaces `to` with a copy of `from` the way renewal tools do: write aside, rename over. */
function replace (from: string, to: string): void {
  copyFileSync(from, `${to}.new`)
  renameSync(`${to}.new`, to)
}

/** Sends SIGHUP and returns the reload's log line. */
async function hup (daemon: DaemonRun): Promise<any> {
  const isReload = (l: any): boolean => typeof l.msg === 'string' && l.msg.startsWith('config reload')
  const before = daemon.lines.filter(isReload).length
  daemon.child.kill('SIGHUP')
  await waitUntil(() => daemon.lines.filter(isReload).length > before, 10_000, 'the reload log line')
  return daemon.lines.filter(isReload)[before]
}

/** A sensor on the TLS listener publishing QoS 1 readings one after another until stopped. */
function tlsSensor (t: Test, port: number, tls: ClientTls): { client: MqttClient, acked: () => number, closes: () => number, stop: () => Promise<void> } {
  const client = connect(`mqtts://localhost:${port}`, { ...tls, reconnectPeriod: 0, connectTimeout: 5000, clientId: `tls-sensor-${process.pid}` })
  let acked = 0
  let closes = 0
  let stopping = false
  client.on('error', () => {})
  client.on('close', () => { closes++ })
  const next = (): void => {
    if (stopping || !client.connected) return
    client.publish('sensors/tls/temp', JSON.stringify({ n: acked }), { qos: 1 }, (err) => {
      if (err == null) acked++
      next()
    })
  }
  client.once('connect', next)
  const stop = async (): Promise<void> => {
    stopping = true
    await client.endAsync(true)
  }
  t.teardown(stop)
  return { client, acked: () => acked, closes: () => closes, stop }
}

t.test('a renewed certificate is served after SIGHUP while a connected sensor stays connected; a broken one is refused', async (t) => {
  const dir = t.testdir()
  const certs = await makeCerts(dir)
  const renewed = await extraCert(dir, 'renewed', { server: true })
  const client = { ca: readFileSync(certs.ca), cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) }
  // The paths the config names; renewals replace the files behind them.
  const cert = join(dir, 'live-cert.pem')
  const key = join(dir, 'live-key.pem')
  copyFileSync(certs.serverCert, cert)
  copyFileSync(certs.serverKey, key)
  const tls = { listen: '127.0.0.1:0', cert, key, ca: certs.ca, requireClientCert: true }
  const config = {
    gateway: { id: 'gw-tls' },
    ingest: { broker: { listen: null, tls } },
    buffer: { path: join(dir, 'buffer') },
    upstream: { url: 'mqtt://127.0.0.1:9', backoff: { min: '1s', max: '10s' } },
    health: { enabled: false },
    admin: { enabled: false },
    log: { level: 'info' }
  }
  const file = writeConfig(dir, config)
  const daemon = await startDaemon(t, file)
  const ready = await daemon.waitForLine('sluice ready')
  const broker = ready.ingest.find((a: any) => a.name === 'broker')
  t.match(broker, { listen: null, tls: /^127\.0\.0\.1:\d+$/, certificate: { fingerprint256: fingerprint(certs.serverCert) } })
  const port = daemon.ports.tls ?? 0
  t.equal(await servedFingerprint(port, client), fingerprint(certs.serverCert), 'the first certificate is served')

  // A client without a certificate is refused in the handshake, and the log says so.
  const stranger = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: client.ca })
  stranger.on('error', () => {})
  t.teardown(() => { stranger.destroy() })
  const refused = await daemon.waitForLine('TLS handshake failed, connection closed')
  t.match(refused, { level: 40, part: 'broker', address: '127.0.0.1', code: 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE', err: 'peer did not return a certificate' })

  const sensor = tlsSensor(t, port, client)
  await waitUntil(() => sensor.acked() >= 20, 15_000, 'the sensor\'s first readings PUBACKed')
  const stream = sensor.client.stream

  // Renewal: a new key and certificate at the same paths, then SIGHUP.
  replace(renewed.key, key)
  replace(renewed.cert, cert)
  const reloaded = await hup(daemon)
  t.equal(reloaded.level, 30, 'an info line: everything applied')
  t.match(reloaded.applied, [new RegExp(`^ingest\\.broker\\.tls cert, key re-read \\(serving .*CN=localhost.*sha256 ${fingerprint(renewed.cert)}\\)$`)])
  t.equal(await servedFingerprint(port, client), fingerprint(renewed.cert), 'a new connection gets the renewed certificate')
  const afterRenewal = sensor.acked()
  await waitUntil(() => sensor.acked() >= afterRenewal + 20, 15_000, 'more readings PUBACKed after the renewal')

  // A broken replacement: a key that does not belong to the certificate.
  replace(certs.clientKey, key)
  const broken = await hup(daemon)
  t.equal(broken.level, 40, 'a warning')
  t.match(broken.failed, [/^ingest\.broker\.tls: the private key ".*live-key\.pem" does not belong to the certificate ".*live-cert\.pem"; new connections still get the previous certificate$/])
  t.equal(await servedFingerprint(port, client), fingerprint(renewed.cert), 'the renewed certificate is still served')
  const afterBroken = sensor.acked()
  await waitUntil(() => sensor.acked() >= afterBroken + 20, 15_000, 'more readings PUBACKed after the broken reload')

  // The same file again: nothing new to say, the previous certificate still served.
  replace(renewed.key, key)
  const same = await hup(daemon)
  t.match(same, { level: 30, msg: 'config reloaded: nothing changed' })

  // What the listener was built with needs a restart, and the reload line says so.
  writeConfig(dir, { ...config, ingest: { broker: { listen: null, tls: { ...tls, requireClientCert: false } } } })
  const restart = await hup(daemon)
  t.match(restart, { level: 40, needsRestart: ['ingest.broker.tls.requireClientCert'], failed: [] })

  t.equal(sensor.closes(), 0, 'the sensor\'s connection never dropped')
  t.ok(sensor.client.connected, 'and is still up')
  t.equal(sensor.client.stream, stream, 'on the same TLS socket')
  await sensor.stop()
  t.equal((await daemon.kill('SIGTERM')).code, 0)
})

t.test('bad TLS files stop the daemon at start with exit 2; sluice check shows the tls section', async (t) => {
  const dir = t.testdir()
  const certs = await makeCerts(dir)
  const config = (tls: Record<string, unknown>): string => writeConfig(dir, {
    gateway: { id: 'gw-tls' },
    ingest: { broker: { tls: { listen: '127.0.0.1:0', ...tls } } },
    buffer: { path: join(dir, 'buffer') },
    upstream: { url: 'mqtt://127.0.0.1:9' },
    admin: { enabled: false }
  })

  const good = { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requireClientCert: true, useIdentityAsUsername: true }
  const checked = await runCli(['check', '-c', config(good)])
  t.equal(checked.code, 0, checked.stderr)
  t.strictSame(JSON.parse(checked.stdout).ingest.broker.tls, { ...good, listen: { host: '127.0.0.1', port: 0 } })

  const run = await runCli(['run', '-c', config({ cert: certs.serverCert, key: certs.clientKey })])
  t.equal(run.code, 2, 'exit 2: the config cannot work')
  t.match(run.stderr, /ingest\.broker\.tls\.key: the private key ".*client\.key" does not belong to the certificate ".*server\.pem"/)
  const missing = await runCli(['run', '-c', config({ cert: join(dir, 'gone.pem'), key: certs.serverKey })])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /ingest\.broker\.tls\.cert: cannot read the certificate ".*gone\.pem": ENOENT/)
})
