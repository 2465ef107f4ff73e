import t from 'tap'
import { connect as netConnect, createServer } from 'node:net'
import { connect, type MqttClient } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { freePort } from './helpers/ports.js'
import { startMosquitto, type TestLike } from './helpers/mosquitto.js'
import { startProxy } from './helpers/proxy.js'
import { startReceiver } from './helpers/receiver.js'
import { readingKey, startSensors } from './helpers/sensors.js'
import { localServer } from './helpers/tcp-server.js'

/** Resolves true when a TCP connection to the port is accepted, false when refused. */
function tcpAccepts(port: number): Promise<boolean> {
  return new Promise(resolve => {
    const s = netConnect({ host: '127.0.0.1', port })
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** An MQTT.js client that must connect; ended at teardown. */
async function client(t: TestLike, url: string, extra: Parameters<typeof connect>[1] = {}): Promise<MqttClient> {
  const c = connect(url, { reconnectPeriod: 100, connectTimeout: 2000, ...extra })
  c.on('error', () => {})
  t.teardown(() => c.endAsync(true))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`client: no connection to ${url}`)), 10000)
    c.once('connect', () => {
      clearTimeout(timer)
      resolve()
    })
  })
  return c
}

/** Polls cond every 20 ms until true; rejects after timeoutMs. */
async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 20))
  }
}

function once(c: MqttClient, event: 'close' | 'offline' | 'connect', timeoutMs = 10000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${timeoutMs} ms`)), timeoutMs)
    c.once(event, () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

t.test('freePort gives distinct usable ports', async t => {
  const a = await freePort()
  const b = await freePort()
  t.ok(a > 0 && a < 65536)
  t.ok(b > 0 && b < 65536)
  t.equal(await tcpAccepts(a), false, 'nothing listens on it')
})

t.test('mosquitto: QoS 1 publish reaches the receiver; SIGKILL stops it; restart on the same port', async t => {
  const m = await startMosquitto(t)
  t.equal(m.url, `mqtt://127.0.0.1:${m.port}`)
  t.ok(m.pid > 0, 'has a pid')
  t.ok(m.running)

  const rx = await startReceiver(t, m.url, 'helpers/#')
  const pub = await client(t, m.url)
  await pub.publishAsync('helpers/a', JSON.stringify({ n: 1 }), { qos: 1 })
  await pub.publishAsync('other/b', 'ignored', { qos: 1 })
  await pub.publishAsync('helpers/c', Buffer.from([0xff, 0x00]), { qos: 1 })
  await rx.waitForCount(2, 5000)
  t.equal(rx.messages[0].topic, 'helpers/a')
  t.same(rx.messages[0].json, { n: 1 })
  t.equal(rx.messages[0].qos, 1)
  t.ok(Buffer.isBuffer(rx.messages[1].payload))
  t.same([...rx.messages[1].payload], [0xff, 0x00])
  t.equal(rx.messages[1].json, undefined, 'binary payload has no json')
  t.equal(rx.on('other/#').length, 0, 'only the subscribed topics')

  // waitFor rejects with the counts when the condition does not come true
  await t.rejects(rx.waitFor(msgs => msgs.length >= 99, 200, '99 messages'), /timed out after 200 ms waiting for 99 messages: 2 message\(s\) received/)

  const oldPid = m.pid
  const pubClosed = once(pub, 'close')
  await m.kill('SIGKILL')
  t.notOk(m.running, 'not running after kill')
  await pubClosed
  t.pass('connected client saw the connection close')
  t.equal(await tcpAccepts(m.port), false, 'connections are refused after SIGKILL')
  await m.kill() // idempotent

  await m.restart()
  t.ok(m.running)
  t.not(m.pid, oldPid, 'a new process')
  t.equal(await tcpAccepts(m.port), true, 'same port accepts again')
  // both clients reconnect on their own (clean sessions: the receiver resubscribes)
  await until(() => pub.connected, 10000, 'publisher reconnect')
  await rx.waitFor(() => rx.connected, 10000, 'receiver reconnect')
  t.equal(rx.connects, 2, 'the receiver reconnected once')
  await t.resolves(async () => {
    // after a restart without persistence the resubscribe may lag the connect slightly; retry publishing
    const deadline = Date.now() + 10000
    let i = 0
    while (Date.now() < deadline) {
      await pub.publishAsync('helpers/after', String(i++), { qos: 1 })
      try {
        await rx.waitFor(msgs => msgs.some(x => x.topic === 'helpers/after'), 200)
        return
      } catch {
        // not yet
      }
    }
    throw new Error('no message after restart')
  })
  t.match(m.logText(), /mosquitto version [\d.]+ running/)
})

t.test('mosquitto: persistence keeps a persistent session queue across a graceful restart', async t => {
  const m = await startMosquitto(t, { persistence: true })
  const clientId = `persist-${process.pid}`
  const rx = await startReceiver(t, m.url, 'p/#', { clean: false, clientId })
  await rx.close()
  const pub = await client(t, m.url)
  for (let i = 0; i < 5; i++) await pub.publishAsync('p/x', String(i), { qos: 1 })
  await pub.endAsync()
  await m.restart() // SIGTERM first: mosquitto saves its database
  const rx2 = await startReceiver(t, m.url, 'p/#', { clean: false, clientId })
  await rx2.waitForCount(5, 5000)
  t.same(rx2.messages.map(x => x.payload.toString()), ['0', '1', '2', '3', '4'])
})

t.test('mosquitto: a fixed port and extraConfig are honoured', async t => {
  const port = await freePort()
  const m = await startMosquitto(t, { port, extraConfig: 'max_packet_size 1000' })
  t.equal(m.port, port)
  const pub = await client(t, m.url)
  const closed = once(pub, 'close')
  pub.publish('big', Buffer.alloc(5000), { qos: 0 })
  await closed
  t.pass('a packet over max_packet_size got the client disconnected')
})

t.test('mosquitto: a fixed port held by someone else fails with the reason', async t => {
  const port = await freePort()
  const holder = createServer()
  await new Promise<void>(resolve => holder.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => holder.close(() => resolve())))
  await t.rejects(startMosquitto(t, { port, startTimeoutMs: 1000 }), /Address already in use/)
})

t.test('proxy: passes traffic, cut() drops clients and refuses, restore() lets them back', async t => {
  const m = await startMosquitto(t)
  const p = await startProxy(t, m.port)
  t.not(p.port, m.port)
  t.equal(p.url, `mqtt://127.0.0.1:${p.port}`)
  const rx = await startReceiver(t, m.url, 'via/#')

  const c = await client(t, p.url)
  t.equal(p.connections, 1)
  t.equal(p.accepted, 1)
  await c.publishAsync('via/proxy', 'hello', { qos: 1 })
  await rx.waitFor(msgs => msgs.some(x => x.payload.toString() === 'hello'), 5000)

  const offline = once(c, 'offline')
  const closed = once(c, 'close')
  p.cut()
  await closed
  await offline
  t.equal(p.connections, 0, 'no piped connection while cut')
  t.equal(p.port, p.port)
  t.equal(await tcpAccepts(p.port), true, 'the port still accepts TCP (then drops it)')
  // the client keeps trying and keeps failing while cut
  const acceptedBefore = p.accepted
  await until(() => p.accepted >= acceptedBefore + 2, 5000, 'reconnect attempts')
  t.pass('reconnect attempts reach the proxy')
  t.notOk(c.connected, 'but none gets through')

  p.restore()
  await once(c, 'connect')
  t.ok(c.connected, 'reconnected after restore')
  t.equal(p.connections, 1)
  await c.publishAsync('via/proxy', 'again', { qos: 1 })
  await rx.waitFor(msgs => msgs.some(x => x.payload.toString() === 'again'), 5000)
  t.pass('traffic flows again')
})

t.test('receiver: MQTT 5 with user properties, startReceiver fails fast on a dead port', async t => {
  const m = await startMosquitto(t)
  const rx = await startReceiver(t, m.url, '#', { protocolVersion: 5 })
  const pub = await client(t, m.url, { protocolVersion: 5 })
  await pub.publishAsync('v5/x', '{"a":1}', { qos: 1, properties: { userProperties: { k: 'v' }, contentType: 'application/json' } })
  await rx.waitForCount(1, 5000)
  t.same(rx.messages[0].json, { a: 1 })
  t.equal(rx.messages[0].properties?.contentType, 'application/json')
  t.same(rx.messages[0].properties?.userProperties, { k: 'v' })

  const dead = await freePort()
  await t.rejects(startReceiver(t, `mqtt://127.0.0.1:${dead}`, '#', { connectTimeoutMs: 500 }), /no connection/)
})

t.test('tmpfs helper: a failed mount may only skip a test outside CI and without root', async (t) => {
  const { mountRequired } = await import('./helpers/tmpfs.js')
  t.equal(mountRequired({ CI: 'true' }, 1000), true, 'under CI a failed mount fails the test')
  t.equal(mountRequired({}, 0), true, 'as root too')
  t.equal(mountRequired({}, 1000), false, 'an unprivileged developer run may skip')
  t.equal(mountRequired({ CI: 'false' }, 1000), false)
})

t.test('sensors: a connection lost while a sensor resends does not use up its readings in one loop', async (t) => {
  // A broker of three connections, as a daemon killed during a sensor's resend looks from the
  // sensor: the first never acknowledges (the sensor stores 2,000 readings), the second
  // acknowledges the resends and is dropped halfway through them, the third acknowledges all.
  // A sensor that published again from inside the "Connection closed" answers would go round
  // MQTT.js's queue until it ran out of readings (here the last 1,000; in a fleet without a
  // limit, until the heap was gone).
  let connection = 0
  const { port } = await localServer(t, (socket) => {
    const number = ++connection
    let received = 0
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connect') socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }))
      if (packet.cmd !== 'publish') return
      received++
      if (number === 1 && received === 2000) socket.destroy()
      if (number >= 2) socket.write(mqttPacket.generate({ cmd: 'puback', messageId: packet.messageId ?? 0 }))
      if (number === 2 && received === 500) socket.destroy()
    })
    socket.on('data', (chunk: Buffer) => { parser.parse(chunk) })
  })
  const sensors = await startSensors(t, `mqtt://127.0.0.1:${port}`, { count: 1, inflight: 2000, readingsPerSensor: 3000, reconnectPeriod: 20 })
  await sensors.finished()
  t.ok(connection >= 3, `the sensor came back after the drop (${connection} connections)`)
  t.ok(sensors.acked.has(readingKey('s0', 2999)), `the last reading was acknowledged (${sensors.acked.size} of 3000: those answered "Connection closed" are not)`)
  await sensors.stop()
})
