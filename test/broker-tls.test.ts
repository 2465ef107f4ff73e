/**
 * The embedded broker's TLS listener, in-process: real aedes behind a real `tls.Server`, real
 * MQTT.js clients over TLS, certificates made by openssl for this run. Server-only TLS carries a
 * reading to the buffer and upstream; with requireClientCert only a certificate from the
 * configured CA gets through the handshake; a client trusting another CA refuses the server;
 * certificateUsername reads the verified CN; bad files stop the start with a config error.
 */
import t, { type Test } from 'tap'
import { X509Certificate } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { connect, type IClientOptions, type MqttClient } from 'mqtt'
import { BrokerTlsListener, certificateUsername, readTlsFiles } from '../adapters/broker-tls.js'
import { validateConfig } from '../config/index.js'
import { Gateway } from '../daemon/gateway.js'
import { createLogger } from '../daemon/logger.js'
import { buildStatus } from '../daemon/status.js'
import { formatStatus } from '../daemon/status-command.js'
import { extraCert, makeCerts, type TestCerts } from './helpers/certs.js'
import { startGateway, testConfig } from './helpers/gateway.js'
import { startMosquitto } from './helpers/mosquitto.js'
import { startReceiver } from './helpers/receiver.js'
import { arrivals } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'


/** An MQTT.js client; resolves once it is connected (CONNACK), or with why it is not. */
async function mqttClient (t: Test, url: string, options: IClientOptions): Promise<{ client: MqttClient, outcome: string }> {
  const client = connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options })
  t.teardown(async () => { await client.endAsync(true) })
  const outcome = await new Promise<string>((resolve) => {
    client.once('connect', () => { resolve('connected') })
    client.once('error', (err) => { resolve(`error: ${err.message}`) })
    client.once('close', () => { resolve('closed') })
  })
  return { client, outcome }
}

async function publish (client: MqttClient, topic: string, payload: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    client.publish(topic, payload, { qos: 1 }, (err) => { if (err == null) resolve(); else reject(err) })
  })
}

function fingerprint (file: string): string {
  return new X509Certificate(readFileSync(file)).fingerprint256
}

function tlsPortOf (gateway: Gateway): number {
  const address = gateway.broker?.tlsAddress()
  if (address == null) throw new Error('no TLS listener')
  return address.port
}

t.test('server-only TLS: a reading published over TLS is PUBACKed once durable and reaches upstream', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const upstream = await startMosquitto(t)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  let holding = false
  let held = 0
  let release = (): void => {}
  const gateway = await startGateway(t, {
    upstreamUrl: upstream.url,
    bufferPath: join(root, 'buffer'),
    broker: { tls: { listen: '127.0.0.1:0', cert: certs.serverCert, key: certs.serverKey } },
    beforeCommit: async () => {
      if (!holding) return
      held++
      await new Promise<void>((resolve) => { release = resolve })
    }
  })
  const port = tlsPortOf(gateway)
  t.match(gateway.ingestInfo()[0], { name: 'broker', tls: `127.0.0.1:${port}`, certificate: { fingerprint256: fingerprint(certs.serverCert) } })

  const { client, outcome } = await mqttClient(t, `mqtts://localhost:${port}`, { ca: readFileSync(certs.ca) })
  t.equal(outcome, 'connected')
  const stream = client.stream as TLSSocket
  t.equal(stream.getPeerCertificate().fingerprint256, fingerprint(certs.serverCert), 'the sensor got the configured certificate')

  // The PUBACK waits for the buffer's write, over TLS as over the plain listener.
  holding = true
  let acked = false
  const published = publish(client, 'sensors/tls/temp', '{"c":21.5}').then(() => { acked = true })
  await waitUntil(() => held > 0, 10_000, 'the reading\'s commit to begin')
  t.notOk(acked, 'no PUBACK while the write is held')
  holding = false
  release()
  await published
  t.equal(gateway.stats().ingested.broker, 1, 'in the buffer')
  await receiver.waitFor((m) => arrivals(m).some((a) => a.kind === 'reading' && a.topic === 'sensors/tls/temp'), 15_000, 'the reading upstream')
  const reading = arrivals(receiver.messages).find((a) => a.kind === 'reading')
  t.equal(reading?.kind === 'reading' ? reading.payload.toString() : null, '{"c":21.5}', 'its bytes unchanged')

  // The plain listener still serves beside it; plain MQTT on the TLS port gets nowhere.
  const plain = await mqttClient(t, gateway.sensorUrl, {})
  t.equal(plain.outcome, 'connected', 'the plain listener beside it')
  const notTls = await mqttClient(t, `mqtt://127.0.0.1:${port}`, { connectTimeout: 3000 })
  t.not(notTls.outcome, 'connected', `plain MQTT on the TLS port is refused (${notTls.outcome})`)
})

t.test('listen: null runs the TLS listener alone', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const config = validateConfig({
    ...testConfig({ upstreamUrl: 'mqtt://127.0.0.1:9', bufferPath: join(root, 'buffer') }),
    ingest: { broker: { listen: null, tls: { listen: '127.0.0.1:0', cert: certs.serverCert, key: certs.serverKey } } },
    admin: { enabled: false }
  })
  const gateway = await Gateway.start({ config, logger: createLogger('silent') })
  t.teardown(async () => { await gateway.close() })
  t.match(gateway.ingestInfo()[0], { name: 'broker', listen: null, tls: /^127\.0\.0\.1:\d+$/ })
  const validTo = new Date(new X509Certificate(readFileSync(certs.serverCert)).validTo).toISOString().slice(0, 10)
  t.match(formatStatus(await buildStatus(gateway)), new RegExp(`\\n  ingest +broker on TLS 127\\.0\\.0\\.1:${tlsPortOf(gateway)} \\(0 sensors connected, certificate valid until ${validTo}\\)\\n`),
    'sluice status names the TLS listener and when its certificate expires')
  t.throws(() => gateway.broker?.address(), /no plain listener/)
  const { client, outcome } = await mqttClient(t, `mqtts://localhost:${tlsPortOf(gateway)}`, { ca: readFileSync(certs.ca) })
  t.equal(outcome, 'connected')
  await publish(client, 'sensors/only-tls', '1')
  t.equal(gateway.stats().ingested.broker, 1)
})

t.test('requireClientCert: no certificate or one from another CA is refused in the handshake; one from ca gets in', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const stranger = await extraCert(root, 'stranger', { client: 'gw-test' }, 'other-ca')
  const gateway = await startGateway(t, {
    upstreamUrl: 'mqtt://127.0.0.1:9',
    bufferPath: join(root, 'buffer'),
    broker: { tls: { listen: '127.0.0.1:0', cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requireClientCert: true } }
  })
  const url = `mqtts://localhost:${tlsPortOf(gateway)}`
  const ca = readFileSync(certs.ca)

  const none = await mqttClient(t, url, { ca })
  t.match(none.outcome, /^(error|closed)/, `no certificate: refused (${none.outcome})`)
  const other = await mqttClient(t, url, { ca, cert: readFileSync(stranger.cert), key: readFileSync(stranger.key) })
  t.match(other.outcome, /^(error|closed)/, `a certificate from another CA: refused (${other.outcome})`)
  t.equal(gateway.stats().ingested.broker, 0)

  const good = await mqttClient(t, url, { ca, cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) })
  t.equal(good.outcome, 'connected', 'the certificate from ca: in')
  await publish(good.client, 'sensors/certified', '1')
  t.equal(gateway.stats().ingested.broker, 1)
})

t.test('a client that trusts another CA refuses the listener', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const gateway = await startGateway(t, {
    upstreamUrl: 'mqtt://127.0.0.1:9',
    bufferPath: join(root, 'buffer'),
    broker: { tls: { listen: '127.0.0.1:0', cert: certs.serverCert, key: certs.serverKey } }
  })
  const url = `mqtts://localhost:${tlsPortOf(gateway)}`
  const wrong = await mqttClient(t, url, { ca: readFileSync(certs.otherCa) })
  t.match(wrong.outcome, /^error: .*(self-signed|unable to (verify|get local issuer))/i, `refused: ${wrong.outcome}`)
  const right = await mqttClient(t, url, { ca: readFileSync(certs.ca) })
  t.equal(right.outcome, 'connected', 'the same listener with the right CA')
})

/** A bare listener whose connections report certificateUsername; a client connects with `client`. */
async function usernameSeen (t: Test, certs: TestCerts, useIdentityAsUsername: boolean, client: { cert: string, key: string }): Promise<string | null> {
  const material = await readTlsFiles({ cert: certs.serverCert, key: certs.serverKey, ca: certs.ca })
  let seen: (name: string | null) => void = () => {}
  const result = new Promise<string | null>((resolve) => { seen = resolve })
  const listener = await BrokerTlsListener.listen({
    listen: { host: '127.0.0.1', port: 0 },
    cert: certs.serverCert,
    key: certs.serverKey,
    ca: certs.ca,
    requireClientCert: true,
    useIdentityAsUsername
  }, material, {
    connection: (socket) => { seen(certificateUsername(socket)); socket.end() },
    handshakeError: () => {}
  })
  t.teardown(async () => { await listener.close() })
  const socket = tlsConnect({
    host: '127.0.0.1',
    port: listener.address().port,
    servername: 'localhost',
    ca: readFileSync(certs.ca),
    cert: readFileSync(client.cert),
    key: readFileSync(client.key)
  })
  socket.on('error', () => {})
  t.teardown(() => { socket.destroy() })
  return await result
}

t.test('certificateUsername: the verified client certificate\'s CN, only with useIdentityAsUsername', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const sensor = await extraCert(root, 'sensor7', { client: 'sensor-7' })
  t.equal(await usernameSeen(t, certs, true, sensor), 'sensor-7')
  t.equal(await usernameSeen(t, certs, true, { cert: certs.clientCert, key: certs.clientKey }), 'gw-test')
  t.equal(await usernameSeen(t, certs, false, sensor), null, 'without useIdentityAsUsername')

  // Not a TLS connection at all.
  const material = await readTlsFiles({ cert: certs.serverCert, key: certs.serverKey })
  t.ok(material.certificate.subject.includes('CN=localhost'))
  const plain = netConnect(9, '127.0.0.1')
  plain.on('error', () => {})
  t.teardown(() => { plain.destroy() })
  t.equal(certificateUsername(plain), null)
  t.equal(certificateUsername(undefined), null)
})

t.test('TLS files are read at start: a missing, non-PEM or mismatched one is a config error, before the buffer is touched', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const bufferPath = join(root, 'buffer')
  const start = async (tls: Record<string, unknown>): Promise<unknown> =>
    await startGateway(t, { upstreamUrl: 'mqtt://127.0.0.1:9', bufferPath, broker: { tls: { listen: '127.0.0.1:0', ...tls } } })

  await t.rejects(start({ cert: join(root, 'nope.pem'), key: join(root, 'nope.key') }), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [
      { path: 'ingest.broker.tls.cert', message: /^cannot read the certificate ".*nope\.pem": ENOENT/ },
      { path: 'ingest.broker.tls.key', message: /^cannot read the private key ".*nope\.key": ENOENT/ }
    ]
  })
  await t.rejects(start({ cert: certs.serverCert, key: certs.clientKey }), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [{ path: 'ingest.broker.tls.key', message: /^the private key ".*client\.key" does not belong to the certificate ".*server\.pem"$/ }]
  })
  await t.rejects(start({ cert: certs.serverKey, key: certs.serverKey }), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [{ path: 'ingest.broker.tls.cert', message: /server\.key" holds no PEM certificate/ }]
  })
  await t.rejects(start({ cert: certs.serverCert, key: certs.serverKey, ca: certs.clientKey, requireClientCert: true }), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [{ path: 'ingest.broker.tls.ca', message: /client\.key" holds no PEM certificate/ }]
  })
  // The upstream's TLS files are checked too, and every bad file is reported at once.
  await t.rejects(startGateway(t, {
    upstreamUrl: 'mqtts://localhost:8883',
    upstream: { ca: join(root, 'no-ca.pem') },
    bufferPath,
    broker: { tls: { listen: '127.0.0.1:0', cert: join(root, 'nope.pem'), key: certs.serverKey } }
  }), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [
      { path: 'upstream.ca', message: /^cannot read the CA certificate ".*no-ca\.pem": ENOENT/ },
      { path: 'ingest.broker.tls.cert', message: /^cannot read the certificate ".*nope\.pem": ENOENT/ }
    ]
  })
  t.notOk(existsSync(bufferPath), 'the buffer was not created')
})

t.test('useIdentityAsUsername: the certificate\'s CN is the user, with that user\'s ACL and no password', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const sensor = await extraCert(root, 'sensor7', { client: 'sensor-7' })
  const unknown = await extraCert(root, 'intruder', { client: 'not-a-user' })
  const gateway = await startGateway(t, {
    upstreamUrl: 'mqtt://127.0.0.1:9',
    bufferPath: join(root, 'buffer'),
    broker: {
      tls: { listen: '127.0.0.1:0', cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requireClientCert: true, useIdentityAsUsername: true },
      // no passwordHash: this user can only come in with its certificate
      users: [{ username: 'sensor-7', publish: ['sensors/{username}/#'] }]
    }
  })
  const url = `mqtts://localhost:${tlsPortOf(gateway)}`
  const ca = readFileSync(certs.ca)

  const good = await mqttClient(t, url, { ca, cert: readFileSync(sensor.cert), key: readFileSync(sensor.key) })
  t.equal(good.outcome, 'connected', 'the certificate of a configured user: in, without a password')
  await publish(good.client, 'sensors/sensor-7/temp', '21')
  t.equal(gateway.stats().ingested.broker, 1, 'its own topic is allowed by {username}')
  const closed = new Promise<void>((resolve) => { good.client.once('close', () => { resolve() }) })
  good.client.publish('sensors/sensor-8/temp', '22', { qos: 1 })
  await closed
  t.equal(gateway.stats().ingested.broker, 1, 'another sensor\'s topic: refused by the ACL, connection closed')
  t.equal(gateway.stats().refused.acl, 1)

  const stranger = await mqttClient(t, url, { ca, cert: readFileSync(unknown.cert), key: readFileSync(unknown.key) })
  t.match(stranger.outcome, /Not authorized|closed/, `a certificate whose CN is no user: refused (${stranger.outcome})`)
  t.equal(gateway.stats().refused.auth, 1)
})
