/**
 * TLS to the upstream, against a real mosquitto with a TLS listener that requires a client
 * certificate (mutual TLS), with a CA, server and client certificates made by `openssl` for this
 * run: a client without a certificate is refused and sluice with one gets through; SNI and ALPN
 * reach the server; bad TLS files stop sluice at start with a config error (exit 2).
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { readFileSync } from 'node:fs'
import { connect } from 'mqtt'
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.js'
import { freePort } from './helpers/ports.js'
import { startReceiver } from './helpers/receiver.js'
import { startGateway } from './helpers/gateway.js'
import { makeCerts, type TestCerts } from './helpers/certs.js'
import { arrivals, publishAll, readingSeqs, readings } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'

let buffers = 0

/** A mosquitto with its usual plain listener (for the receiver) and a mutual-TLS one. */
async function tlsMosquitto (t: Parameters<typeof startMosquitto>[0], certs: TestCerts): Promise<{ broker: Mosquitto, tlsPort: number }> {
  const tlsPort = await freePort()
  const broker = await startMosquitto(t, {
    extraConfig: [
      `listener ${tlsPort} 127.0.0.1`,
      `cafile ${certs.ca}`,
      `certfile ${certs.serverCert}`,
      `keyfile ${certs.serverKey}`,
      'require_certificate true'
    ].join('\n')
  })
  return { broker, tlsPort }
}

t.test('mutual TLS: a client without a certificate is refused; sluice with one gets through', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const { broker, tlsPort } = await tlsMosquitto(t, certs)
  const receiver = await startReceiver(t, broker.url, 'sluice/#')

  // The premise: the listener really demands a client certificate.
  const bare = connect(`mqtts://localhost:${tlsPort}`, { ca: readFileSync(certs.ca), reconnectPeriod: 0, connectTimeout: 5000 })
  t.teardown(async () => { await bare.endAsync(true) })
  const outcome = await new Promise<string>((resolve) => {
    bare.once('connect', () => { resolve('connected') })
    bare.once('error', (err) => { resolve(`error: ${err.message}`) })
    bare.once('close', () => { resolve('closed') })
  })
  t.not(outcome, 'connected', `an MQTT client with no certificate is refused (${outcome})`)

  // sluice with the client certificate: the URL's host (localhost) is the SNI and the name checked.
  const gateway = await startGateway(t, {
    upstreamUrl: `mqtts://localhost:${tlsPort}`,
    bufferPath: join(root, `buffer-${++buffers}`),
    upstream: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }
  })
  await publishAll(t, gateway.sensorUrl, readings(50), 10)
  await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 50, 15_000, '50 readings over TLS')
  t.ok(gateway.stats().upstreamConnected)
  t.equal(gateway.stats().upstreamConnections, 1)
})

t.test('sluice refuses what TLS should refuse: no client certificate, or a server its CA did not sign', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const { broker, tlsPort } = await tlsMosquitto(t, certs)
  for (const [what, keys, evidence] of [
    ['no client certificate', { ca: certs.ca }, /peer did not return a certificate|certificate required/i],
    // Node drops the handshake when the server's certificate does not check out: mosquitto sees an EOF.
    ['another CA', { ca: certs.otherCa, cert: certs.clientCert, key: certs.clientKey }, /OpenSSL Error.*(unexpected eof|unknown ca)/i]
  ] as const) {
    const before = broker.logText().length
    const gateway = await startGateway(t, { upstreamUrl: `mqtts://localhost:${tlsPort}`, bufferPath: join(root, `buffer-${++buffers}`), upstream: { ...keys } })
    // Wait for mosquitto to log the failed handshake, then check sluice is not connected.
    await waitUntil(() => evidence.test(broker.logText().slice(before)), 15_000, `mosquitto to log the refused handshake (${what})`)
    t.notOk(gateway.stats().upstreamConnected, `${what}: not connected`)
    t.equal(gateway.stats().upstreamConnections, 0)
    await gateway.close()
  }
})

/**
 * A TLS front like a cloud's: it records the SNI name and ALPN protocol of each handshake, drops
 * connections that did not ask for `x-amzn-mqtt-ca` (as AWS IoT Core does on port 443), and
 * passes the rest to the broker's plain listener.
 */
async function tlsFront (t: Parameters<typeof startMosquitto>[0], certs: TestCerts, brokerPort: number): Promise<{ port: number, names: string[], handshakes: Array<{ servername: string | false, alpn: string | false }> }> {
  const handshakes: Array<{ servername: string | false, alpn: string | false }> = []
  /** the SNI name of every handshake begun, finished or not */
  const names: string[] = []
  const sockets = new Set<TLSSocket>()
  const server = createTlsServer({
    cert: readFileSync(certs.serverCert),
    key: readFileSync(certs.serverKey),
    ALPNProtocols: ['x-amzn-mqtt-ca'],
    SNICallback: (servername, cb) => { names.push(servername); cb(null, undefined) }
  }, (socket) => {
    sockets.add(socket)
    handshakes.push({ servername: (socket as TLSSocket & { servername: string | false }).servername, alpn: socket.alpnProtocol ?? false })
    if (socket.alpnProtocol !== 'x-amzn-mqtt-ca') {
      socket.destroy()
      return
    }
    const broker = netConnect({ host: '127.0.0.1', port: brokerPort })
    const end = (): void => { socket.destroy(); broker.destroy(); sockets.delete(socket) }
    socket.on('error', end)
    broker.on('error', end)
    socket.on('close', end)
    broker.on('close', end)
    socket.pipe(broker)
    broker.pipe(socket)
  })
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => { resolve() }))
  })
  return { port: (server.address() as { port: number }).port, names, handshakes }
}

t.test('SNI is the URL\'s host or upstream.servername; ALPN is offered when configured (AWS IoT Core on 443)', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const broker = await startMosquitto(t)
  const front = await tlsFront(t, certs, broker.port)
  const receiver = await startReceiver(t, broker.url, 'sluice/#')

  // Without ALPN the front drops the connection, like AWS IoT Core on port 443.
  const plain = await startGateway(t, { upstreamUrl: `mqtts://localhost:${front.port}`, bufferPath: join(root, `buffer-${++buffers}`), upstream: { ca: certs.ca } })
  await waitUntil(() => front.handshakes.length >= 2, 15_000, 'two handshakes without ALPN')
  t.strictSame(front.handshakes[0], { servername: 'localhost', alpn: false }, 'SNI defaults to the URL\'s host')
  t.notOk(plain.stats().upstreamConnected, 'refused without ALPN')
  await plain.close()

  // An IP in the URL, the name in upstream.servername (checked against the certificate too).
  const before = front.handshakes.length
  const gateway = await startGateway(t, {
    upstreamUrl: `mqtts://127.0.0.1:${front.port}`,
    bufferPath: join(root, `buffer-${++buffers}`),
    upstream: { ca: certs.ca, servername: 'broker.test', alpn: ['x-amzn-mqtt-ca'] }
  })
  await publishAll(t, gateway.sensorUrl, readings(5), 5)
  await receiver.waitFor((m) => new Set(readingSeqs(arrivals(m))).size >= 5, 15_000, '5 readings through the TLS front')
  t.strictSame(front.handshakes[before], { servername: 'broker.test', alpn: 'x-amzn-mqtt-ca' })
  await gateway.close()

  // A servername the certificate does not name: sluice refuses the server.
  const wrongName = await startGateway(t, {
    upstreamUrl: `mqtts://127.0.0.1:${front.port}`,
    bufferPath: join(root, `buffer-${++buffers}`),
    upstream: { ca: certs.ca, servername: 'elsewhere.test', alpn: ['x-amzn-mqtt-ca'] }
  })
  await waitUntil(() => front.names.includes('elsewhere.test'), 15_000, 'a handshake naming elsewhere.test')
  // The front serves its certificate to any name; Node, checking it, refuses this one.
  const probe = tlsConnect({ host: '127.0.0.1', port: front.port, servername: 'elsewhere.test', ca: readFileSync(certs.ca), ALPNProtocols: ['x-amzn-mqtt-ca'] })
  const verdict = await new Promise<string>((resolve) => {
    probe.once('secureConnect', () => { resolve('accepted') })
    probe.once('error', (err) => { resolve(err.message) })
  })
  probe.destroy()
  t.match(verdict, /altnames|does not match/i, `Node refuses that name for this certificate (${verdict})`)
  t.notOk(wrongName.stats().upstreamConnected, 'and so does sluice')
  t.equal(wrongName.stats().upstreamConnections, 0)
})

t.test('TLS files are read at start: a missing or mismatched one is a config error, before the buffer is touched', async (t) => {
  const root = t.testdir()
  const certs = await makeCerts(root)
  const bufferPath = join(root, 'buffer')
  const start = async (keys: Record<string, unknown>): Promise<unknown> =>
    await startGateway(t, { upstreamUrl: 'mqtts://localhost:8883', bufferPath, upstream: keys })

  await t.rejects(start({ ca: certs.ca, cert: join(root, 'nope.pem'), key: certs.clientKey }), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [{ path: 'upstream.cert', message: /^cannot read the client certificate ".*nope\.pem": ENOENT/ }]
  })
  t.notOk(existsSync(bufferPath), 'the buffer was not created')
  await t.rejects(start({ cert: certs.clientCert, key: certs.serverKey }), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [{ path: 'upstream.cert', message: /^the TLS files do not make a TLS context \(.*key values mismatch/i }]
  })
  await t.rejects(start({ ca: certs.clientKey }), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [{ path: 'upstream.ca', message: /holds no PEM certificate/ }]
  })
  t.notOk(existsSync(bufferPath), 'still no buffer')
})
