/**
 * The embedded broker's limits and hostile-input refusals, in-process: a real aedes behind the
 * guard on port 0, real MQTT.js clients and raw sockets speaking hand-made MQTT bytes. Each test
 * checks what a sensor sees (the CONNACK code, the socket closed) and the refusal counted.
 */
import t, { type Test } from 'tap'
import { connect as connectSocket, type Socket } from 'node:net'
import { connect, type MqttClient } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import type { Reading, ReadingSink, RefusalReason } from '../adapters/contract.js'
import { BrokerAdapter } from '../adapters/broker.js'
import { ConnectRateLimiter, type BrokerLimits } from '../adapters/broker-guard.js'
import { readTlsFiles } from '../adapters/broker-tls.js'
import { createLogger } from '../daemon/logger.js'
import { makeCerts } from './helpers/certs.js'
import { waitUntil } from './helpers/wait.js'

const logger = createLogger('silent')
const DEFAULTS: BrokerLimits = { maxPayload: 1024, maxClients: 1000, connectTimeoutMs: 10_000, connectRate: 0, connectBurst: 100, maxQueuedBytes: 1_048_576 }

interface Harness {
  adapter: BrokerAdapter
  port: number
  readings: Reading[]
  refused: (reason: RefusalReason) => number
  /** the TLS listener's port, when started with `tls` */
  tlsPort: number | null
}

async function startBroker (t: Test, limits: Partial<BrokerLimits> = {}, now?: () => number, tls?: ConstructorParameters<typeof BrokerAdapter>[0]['tls']): Promise<Harness> {
  const readings: Reading[] = []
  const sink: ReadingSink = {
    append: (reading) => {
      readings.push(reading)
      return { seq: readings.length, durable: Promise.resolve() }
    }
  }
  const adapter = new BrokerAdapter({
    listen: { host: '127.0.0.1', port: 0 },
    topics: ['sensors/#'],
    sink,
    logger,
    limits: { ...DEFAULTS, ...limits },
    now,
    tls
  })
  const counts = new Map<RefusalReason, number>()
  adapter.on('refused', (reason) => { counts.set(reason, (counts.get(reason) ?? 0) + 1) })
  await adapter.start()
  t.teardown(async () => { await adapter.close() })
  return { adapter, port: adapter.address().port, readings, refused: (reason) => counts.get(reason) ?? 0, tlsPort: adapter.tlsAddress()?.port ?? null }
}

/** A raw TCP connection to the broker that records what it receives and when it closes. */
interface Raw {
  socket: Socket
  received: () => Buffer
  closed: Promise<void>
  isClosed: () => boolean
}

async function rawConnect (t: Test, port: number): Promise<Raw> {
  const socket = connectSocket(port, '127.0.0.1')
  socket.on('error', () => {}) // the broker resetting the connection is what some tests expect
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => { chunks.push(chunk) })
  let isClosed = false
  const closed = new Promise<void>((resolve) => { socket.once('close', () => { isClosed = true; resolve() }) })
  t.teardown(() => { socket.destroy() })
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  return { socket, received: () => Buffer.concat(chunks), closed, isClosed: () => isClosed }
}

async function closedWithin (raw: Raw, ms: number, what: string): Promise<void> {
  await waitUntil(raw.isClosed, ms, what)
}

function packet (p: Record<string, unknown>): Buffer {
  return mqttPacket.generate(p as unknown as mqttPacket.Packet)
}

const connectPacket = (clientId: string, clean = true): Buffer =>
  packet({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean, clientId, keepalive: 60 })

/** A QoS 1 round trip over `client`: everything it sent before has been handled. */
async function mqttClient (t: Test, port: number, clientId: string): Promise<MqttClient> {
  const client = connect(`mqtt://127.0.0.1:${port}`, { clientId, reconnectPeriod: 0, connectTimeout: 5000 })
  client.on('error', () => {})
  t.teardown(async () => { await client.endAsync(true) })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => { resolve() })
    client.once('close', () => { reject(new Error('closed before CONNACK')) })
  })
  return client
}

t.test('a declared Remaining Length over the packet limit closes the socket at the fixed header', async (t) => {
  const b = await startBroker(t, { maxPayload: 1024 })
  const raw = await rawConnect(t, b.port)
  raw.socket.write(connectPacket('big'))
  await waitUntil(() => raw.received().length >= 4, 5000, 'the CONNACK')
  // PUBLISH QoS 0 declaring 200 MB (varint ff ff ff 5f), then only a few body bytes: the body
  // never comes, so only a guard that reads the header closes this connection.
  raw.socket.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x5f, 0x00, 0x03, 0x61, 0x62, 0x63]))
  await closedWithin(raw, 5000, 'the socket to close')
  t.equal(b.refused('too-large'), 1, 'counted too-large')
  t.equal(b.readings.length, 0)
})

t.test('an oversized CONNECT is closed before its body arrives, too', async (t) => {
  const b = await startBroker(t, { maxPayload: 1024 })
  const raw = await rawConnect(t, b.port)
  raw.socket.write(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x01])) // 2 MiB declared
  await closedWithin(raw, 5000, 'the socket to close')
  t.equal(b.refused('too-large'), 1)
})

t.test('a Remaining Length of more than 4 bytes is malformed [MQTT-2.2.3]', async (t) => {
  const b = await startBroker(t)
  const raw = await rawConnect(t, b.port)
  raw.socket.write(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x01]))
  await closedWithin(raw, 5000, 'the socket to close')
  t.equal(b.refused('malformed'), 1)
})

t.test('a first packet that is not CONNECT is malformed [MQTT-3.1.0-1]', async (t) => {
  const b = await startBroker(t)
  const raw = await rawConnect(t, b.port)
  raw.socket.write(packet({ cmd: 'publish', topic: 'sensors/x', payload: 'x', qos: 0 }))
  await closedWithin(raw, 5000, 'the socket to close')
  t.equal(b.refused('malformed'), 1)
  t.equal(b.readings.length, 0)
})

t.test('a packet the parser refuses after CONNECT is counted malformed', async (t) => {
  const b = await startBroker(t)
  const raw = await rawConnect(t, b.port)
  raw.socket.write(connectPacket('bad-qos'))
  await waitUntil(() => raw.received().length >= 4, 5000, 'the CONNACK')
  // PUBLISH with both QoS bits set [MQTT-3.3.1-4]
  raw.socket.write(Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]))
  await closedWithin(raw, 5000, 'the socket to close')
  t.equal(b.refused('malformed'), 1)
})

t.test('a payload over maxPayload closes the sender\'s connection; one at the limit is stored', async (t) => {
  const b = await startBroker(t, { maxPayload: 1000 })
  const ok = await mqttClient(t, b.port, 'fits')
  await ok.publishAsync('sensors/fits', Buffer.alloc(1000, 1), { qos: 1 })
  t.equal(b.readings.length, 1, 'a payload of exactly maxPayload is stored')
  const big = await mqttClient(t, b.port, 'big')
  let closed = false
  big.once('close', () => { closed = true })
  big.publish('sensors/big', Buffer.alloc(1001, 1), { qos: 1 }, () => {})
  await waitUntil(() => closed, 5000, 'the connection to close')
  t.equal(b.refused('too-large'), 1, 'counted too-large')
  t.equal(b.readings.length, 1, 'the big payload never reached the buffer')
  t.ok(ok.connected, 'the other sensor stays connected')
})

t.test('past maxClients the next CONNECT gets CONNACK 0x03; the same id may take its place', async (t) => {
  const b = await startBroker(t, { maxClients: 2 })
  await mqttClient(t, b.port, 'one')
  await mqttClient(t, b.port, 'two')
  const raw = await rawConnect(t, b.port)
  raw.socket.write(connectPacket('three'))
  await closedWithin(raw, 5000, 'the socket to close')
  t.same([...raw.received()], [0x20, 0x02, 0x00, 0x03], 'CONNACK 0x03 server unavailable')
  t.equal(b.refused('max-clients'), 1)
  const again = await rawConnect(t, b.port)
  again.socket.write(connectPacket('two'))
  await waitUntil(() => again.received().length >= 4, 5000, 'the CONNACK')
  t.same([...again.received().subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], 'a reconnecting sensor is accepted')
})

t.test('past maxClients + 100 open sockets, each listener (plain and TLS) closes the next one before aedes sees it', async (t) => {
  const certs = await makeCerts(t.testdir())
  const material = await readTlsFiles({ cert: certs.serverCert, key: certs.serverKey })
  const tls = { options: { listen: { host: '127.0.0.1', port: 0 }, cert: certs.serverCert, key: certs.serverKey, requireClientCert: false, useIdentityAsUsername: false }, material }
  const b = await startBroker(t, { maxClients: 1 }, undefined, tls)
  if (b.tlsPort === null) throw new Error('no TLS listener')
  for (const [name, port] of [['plain', b.port], ['TLS', b.tlsPort]] as const) {
    const before = b.refused('max-clients')
    const open: Raw[] = []
    for (let i = 0; i < 101; i++) open.push(await rawConnect(t, port))
    const over = await rawConnect(t, port)
    await closedWithin(over, 5000, `the ${name} listener to close the 102nd socket`)
    t.equal(b.refused('max-clients'), before + 1, `${name}: counted as max-clients`)
    t.notOk(open.some((raw) => raw.isClosed()), `${name}: the 101 sockets within the bound stay open`)
    for (const raw of open) raw.socket.destroy()
  }
})

t.test('a socket that sends no CONNECT in time is closed', async (t) => {
  const b = await startBroker(t, { connectTimeoutMs: 300 })
  const silent = await rawConnect(t, b.port)
  const half = await rawConnect(t, b.port)
  half.socket.write(connectPacket('half').subarray(0, 6)) // a CONNECT that never completes
  await closedWithin(silent, 5000, 'the silent socket to close')
  await closedWithin(half, 5000, 'the half-CONNECT socket to close')
  t.equal(b.refused('timeout'), 2)
  const ok = await mqttClient(t, b.port, 'on-time')
  await new Promise((resolve) => setTimeout(resolve, 600)) // past the connect timeout
  t.ok(ok.connected, 'a sensor that sent its CONNECT is not timed out')
})

t.test('connections from one address past the burst are refused until the rate refills', async (t) => {
  let now = 0
  const b = await startBroker(t, { connectRate: 1, connectBurst: 2 }, () => now)
  await mqttClient(t, b.port, 'a')
  await mqttClient(t, b.port, 'b')
  const raw = await rawConnect(t, b.port)
  await closedWithin(raw, 5000, 'the third connection to close')
  t.equal(raw.received().length, 0, 'closed without a word')
  t.equal(b.refused('rate'), 1)
  now += 1000
  await mqttClient(t, b.port, 'c')
  t.pass('one more after a second')
})

t.test('the rate limiter: burst, refill, and a table that forgets idle addresses', async (t) => {
  let now = 0
  const limiter = new ConnectRateLimiter(2, 3, () => now)
  t.same([1, 2, 3, 4].map(() => limiter.allow('a')), [true, true, true, false])
  t.ok(limiter.allow('b'), 'another address has its own bucket')
  now += 500
  t.same([limiter.allow('a'), limiter.allow('a')], [true, false], 'one token per 500 ms at 2/s')
  now += 10_000
  for (let i = 0; i < 10_001; i++) limiter.allow(`10.0.${i >> 8}.${i & 255}`)
  t.ok(limiter.size <= 10_001, `the table stays bounded (${limiter.size})`)
  t.ok(new ConnectRateLimiter(0, 1, () => 0).allow('x'), 'rate 0: no limit')
})

t.test('[MQTT-3.1.3-8] a zero-length client id with CleanSession 0 gets CONNACK 0x02 and is closed', async (t) => {
  const b = await startBroker(t)
  const raw = await rawConnect(t, b.port)
  // by hand: mqtt-packet will not generate it. Protocol "MQTT" level 4, flags 0 (CleanSession 0),
  // keep alive 60, client id of length 0.
  raw.socket.write(Buffer.from([0x10, 12, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x00, 0, 60, 0, 0]))
  await closedWithin(raw, 5000, 'the socket to close')
  t.same([...raw.received()], [0x20, 0x02, 0x00, 0x02], 'CONNACK 0x02 identifier rejected')
  t.equal(b.refused('malformed'), 1)
  // [MQTT-3.1.3-6]: with CleanSession 1 a zero-length id is accepted, and the broker names it
  const clean = await rawConnect(t, b.port)
  clean.socket.write(connectPacket('', true))
  await waitUntil(() => clean.received().length >= 4, 5000, 'the CONNACK')
  t.same([...clean.received().subarray(0, 4)], [0x20, 0x02, 0x00, 0x00], 'accepted')
})

t.test('a local subscriber that stops reading misses messages (counted); publishers are not held up', async (t) => {
  const b = await startBroker(t, { maxQueuedBytes: 64 * 1024, maxPayload: 16 * 1024 })
  const slow = await rawConnect(t, b.port)
  slow.socket.write(connectPacket('slow'))
  slow.socket.write(packet({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sensors/#', qos: 0 }] }))
  await waitUntil(() => slow.received().length >= 9, 5000, 'the CONNACK and SUBACK')
  slow.socket.pause() // reads nothing more: the kernel buffers fill, then sluice's write queue
  const publisher = await mqttClient(t, b.port, 'fast')
  const payload = Buffer.alloc(16 * 1024, 7)
  let sent = 0
  while (b.adapter.describe().subscriberDrops === 0 && sent < 5000) {
    await publisher.publishAsync('sensors/fast', payload, { qos: 1 })
    sent++
  }
  t.ok(Number(b.adapter.describe().subscriberDrops) > 0, `drops counted after ${sent} publishes`)
  // A further 100 (1.6 MiB) all get their PUBACK while the subscriber is still stuck.
  for (let i = 0; i < 100; i++) await publisher.publishAsync('sensors/fast', payload, { qos: 1 })
  t.equal(b.readings.length, sent + 100, 'every publish stored')
  t.notOk(slow.isClosed(), 'the slow subscriber is not disconnected')
})
