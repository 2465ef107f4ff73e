/**
 * The upstream's own MQTT connection (adapters/upstream/connection.ts): the PUBLISH packets it
 * writes by hand, read back by mqtt-packet's parser; keepalive against a real mosquitto and
 * against a server that stops answering; what a broken or refusing server does to it.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet'
import { UpstreamConnection, type ConnectionOptions } from '../adapters/upstream/connection.js'
import { encodePublish, publishPacketSize, type MqttProtocol } from '../adapters/upstream/publish-packet.js'
import { UpstreamRejection, type UpstreamMessage } from '../adapters/contract.js'
import { PacketFrames } from '../adapters/upstream/frames.js'
import { startMosquitto, type TestLike } from './helpers/mosquitto.js'
import { startMqttTap } from './helpers/mqtt-tap.js'
import { waitUntil } from './helpers/wait.js'
import { localServer } from './helpers/tcp-server.js'

function parseOne (bytes: Buffer, protocolVersion: 4 | 5): Packet[] {
  const parser = mqttPacket.parser({ protocolVersion })
  const packets: Packet[] = []
  parser.on('packet', (p: Packet) => packets.push(p))
  parser.on('error', (err: Error) => { throw err })
  parser.parse(bytes)
  return packets
}

t.test('a PUBLISH written by hand reads back as the message, at its announced size', async (t) => {
  // Payload lengths on each side of the Remaining Length's one-, two- and three-byte forms.
  const lengths = [0, 1, 100, 120, 121, 122, 127, 128, 16_370, 16_384, 16_400, 2_097_140, 2_097_152]
  const messages: UpstreamMessage[] = []
  for (const n of lengths) {
    messages.push({ topic: 'sensors/a', payload: Buffer.alloc(n, n % 251) })
  }
  messages.push({ topic: 'тема/°C/☃', payload: Buffer.from('{"t":21.5}'), properties: { contentType: 'application/cloudevents+json; charset=utf-8' } })
  messages.push({
    topic: 'x',
    payload: Buffer.from([1, 2, 3]),
    properties: { contentType: 'application/cbor', userProperties: { ce_id: 'gw-1:0:42', ce_source: 'sluice/gw-1', 'ключ': 'значение' } }
  })
  messages.push({ topic: 'y', payload: Buffer.alloc(130, 7), properties: { userProperties: { ce_type: 'io.sluice.reading' } } })
  for (const protocol of ['3.1.1', '5'] as MqttProtocol[]) {
    const version = protocol === '5' ? 5 : 4
    for (const [i, message] of messages.entries()) {
      const id = [1, 255, 256, 65_535][i % 4]
      const bytes = encodePublish(message, protocol, id)
      const what = `MQTT ${protocol}, payload ${message.payload.length} B, id ${id}`
      t.equal(bytes.length, publishPacketSize(message, protocol), `${what}: the size the forwarder plans with`)
      const packets = parseOne(bytes, version)
      t.equal(packets.length, 1, `${what}: one packet`)
      const p = packets[0] as IPublishPacket
      t.match(p, { cmd: 'publish', qos: 1, dup: false, retain: false, topic: message.topic, messageId: id }, what)
      t.ok(Buffer.from(p.payload as Buffer).equals(message.payload), `${what}: payload intact`)
      if (protocol === '5' && message.properties !== undefined) {
        t.same(p.properties?.contentType, message.properties.contentType, `${what}: content type`)
        t.same(p.properties?.userProperties ?? {}, message.properties.userProperties ?? {}, `${what}: user properties`)
      } else {
        t.same(p.properties ?? {}, {}, `${what}: no properties`)
      }
    }
  }
})

t.test('packets are framed whole however the bytes arrive', async (t) => {
  const packets = [
    mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }),
    ...[1, 2, 65_535].map((messageId) => mqttPacket.generate({ cmd: 'puback', messageId })),
    mqttPacket.generate({ cmd: 'pingresp' }),
    // Remaining Lengths of two and three bytes
    mqttPacket.generate({ cmd: 'publish', topic: 'a', payload: Buffer.alloc(300, 1), qos: 0, retain: false, dup: false }),
    mqttPacket.generate({ cmd: 'publish', topic: 'b', payload: Buffer.alloc(20_000, 2), qos: 0, retain: false, dup: false })
  ]
  const stream = Buffer.concat(packets)
  for (const size of [1, 2, 3, 5, 7, 64, 4096, stream.length]) {
    const frames = new PacketFrames(64 * 1024)
    const seen: Buffer[] = []
    const problems: string[] = []
    for (let at = 0; at < stream.length; at += size) {
      const problem = frames.push(stream.subarray(at, at + size), (packet) => { seen.push(Buffer.from(packet)) })
      if (problem !== null) problems.push(problem)
    }
    t.same(problems, [], `in chunks of ${size} bytes: no problem found`)
    t.same(seen.map((b) => b.toString('hex')), packets.map((b) => b.toString('hex')), `in chunks of ${size} bytes: the same packets, whole, in order`)
  }
  const publish = packets[5]
  const frames = new PacketFrames(64 * 1024)
  let body = -1
  frames.push(publish, (_packet, bodyStart) => { body = bodyStart })
  t.equal(body, 3, 'the variable header starts after a two-byte Remaining Length')

  t.match(new PacketFrames(64 * 1024).push(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]), () => {}), /longer than four bytes/)
  t.match(new PacketFrames(1024).push(Buffer.from([0x30, 0x81, 0x08]), () => {}), /1025-byte packet, more than the 1024 expected/)
})

function options (url: string, extra: Partial<ConnectionOptions> = {}): ConnectionOptions {
  return { url, clientId: 'gw-connection-test', protocol: '3.1.1', connectTimeout: 5_000, keepalive: 30, ...extra }
}

/** A server on 127.0.0.1 that hands each parsed packet and its socket to `onPacket`. */
async function handServer (t: TestLike, protocolVersion: 4 | 5, onPacket: (packet: Packet, socket: Socket) => void): Promise<string> {
  const { port } = await localServer(t, (socket) => {
    const parser = mqttPacket.parser({ protocolVersion })
    parser.on('packet', (packet: Packet) => { onPacket(packet, socket) })
    socket.on('data', (chunk: Buffer) => { parser.parse(chunk) })
  })
  return `mqtt://127.0.0.1:${port}`
}

const CONNACK = mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false })

function publishNow (connection: UpstreamConnection, message: UpstreamMessage): Promise<Error | undefined> {
  return new Promise((resolve) => { connection.publish(message, resolve) })
}

t.test('keepalive: PINGREQ each period keeps a quiet link up; an unanswered one ends it', async (t) => {
  const mosquitto = await startMosquitto(t)
  const tap = await startMqttTap(t, mosquitto.port, 4)
  const live = await UpstreamConnection.open(options(tap.url, { keepalive: 1 }), new AbortController().signal)
  t.teardown(async () => { await live.end() })
  await waitUntil(() => (tap.fromClient.pingreq ?? 0) >= 3, 10_000, 'three PINGREQs')
  t.ok(live.connected, 'still connected after three keepalive periods with nothing else sent')
  t.equal(tap.connections, 1, 'on the one connection')

  // A server that accepts the session and then answers nothing, not even PINGREQ.
  const url = await handServer(t, 4, (packet, socket) => {
    if (packet.cmd === 'connect') socket.write(CONNACK)
  })
  const silent = await UpstreamConnection.open(options(url, { keepalive: 1 }), new AbortController().signal)
  const closed = new Promise<Error | undefined>((resolve) => silent.once('close', resolve))
  const waiting = publishNow(silent, { topic: 'a', payload: Buffer.from('x') })
  const err = await closed
  t.match(err?.message, /did not answer PINGREQ/, 'closed for the unanswered PINGREQ')
  t.notOk(silent.connected)
  t.match((await waiting)?.message, /connection closed/, 'the publish waiting for its PUBACK fails')
  let answered = false
  const late = new Promise<Error | undefined>((resolve) => {
    silent.publish({ topic: 'a', payload: Buffer.from('x') }, (err) => { answered = true; resolve(err) })
  })
  t.notOk(answered, 'never answered before publish returns (the forwarder counts on it)')
  t.match((await late)?.message, /not connected/, 'a publish after the close fails at once')
})

t.test('a server that breaks the protocol or refuses loses the connection, and says why', async (t) => {
  const garbage = await handServer(t, 4, (packet, socket) => {
    if (packet.cmd === 'connect') socket.write(CONNACK)
    // A reserved packet type (0) with a Remaining Length that never ends [MQTT-2.2.1].
    if (packet.cmd === 'publish') socket.write(Buffer.from([0x00, 0xff, 0xff, 0xff, 0xff, 0x7f]))
  })
  const broken = await UpstreamConnection.open(options(garbage), new AbortController().signal)
  const closed = new Promise<Error | undefined>((resolve) => broken.once('close', resolve))
  const answer = await publishNow(broken, { topic: 'a', payload: Buffer.from('x') })
  t.match(answer?.message, /connection closed/, 'the publish fails')
  t.match((await closed)?.message, /malformed packet from the upstream/, 'closed, naming the malformed packet')

  const refusing = await handServer(t, 4, (packet, socket) => {
    if (packet.cmd === 'connect') socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: 5, sessionPresent: false }))
  })
  await t.rejects(UpstreamConnection.open(options(refusing), new AbortController().signal), /connection refused: not authorized \(5\)/)

  const mute = await handServer(t, 4, () => {})
  await t.rejects(UpstreamConnection.open(options(mute, { connectTimeout: 300 }), new AbortController().signal), /no CONNACK within 300 ms/)

  const aborted = new AbortController()
  const opening = UpstreamConnection.open(options(mute), aborted.signal)
  aborted.abort()
  await t.rejects(opening, /upstream closed/, 'an abort ends an attempt waiting for its CONNACK')

  // MQTT 5: a DISCONNECT from the server, with its reason, and a PUBACK refusing one message.
  const v5 = await handServer(t, 5, (packet, socket) => {
    if (packet.cmd === 'connect') socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, reasonCode: 0, sessionPresent: false, properties: { receiveMaximum: 7, maximumPacketSize: 4096 } }, { protocolVersion: 5 }))
    if (packet.cmd !== 'publish') return
    if (packet.topic === 'deny') socket.write(mqttPacket.generate({ cmd: 'puback', messageId: packet.messageId, reasonCode: 0x87 }, { protocolVersion: 5 }))
    else socket.write(mqttPacket.generate({ cmd: 'disconnect', reasonCode: 0x89 }, { protocolVersion: 5 }))
  })
  const five = await UpstreamConnection.open(options(v5, { protocol: '5' }), new AbortController().signal)
  t.same(five.limits, { receiveMaximum: 7, maximumPacketSize: 4096 }, 'the CONNACK\'s limits')
  const refused = await publishNow(five, { topic: 'deny', payload: Buffer.from('x') })
  t.ok(refused instanceof UpstreamRejection, 'a PUBACK reason >= 0x80 is a rejection')
  t.equal((refused as UpstreamRejection).reasonCode, 0x87)
  t.ok(five.connected, 'and the connection stays')
  const gone = new Promise<Error | undefined>((resolve) => five.once('close', resolve))
  await publishNow(five, { topic: 'other', payload: Buffer.from('x') })
  t.match((await gone)?.message, /the upstream disconnected: server busy \(0x89\)/)
})

t.test('packet identifiers wrap past 65,535 without reusing one still in flight', async (t) => {
  // The server holds back the PUBACK of the first message (id 5) until 70,000 have gone: at the
  // wrap, id 5 is still taken and must be skipped [MQTT-2.3.1-2]. It records every id that came
  // while the same id was still unacknowledged.
  const outstanding = new Set<number>()
  const reused: number[] = []
  let held: { socket: Socket, id: number } | null = null
  const total = 70_000
  let received = 0
  const url = await handServer(t, 4, (packet, socket) => {
    if (packet.cmd === 'connect') return socket.write(CONNACK)
    if (packet.cmd !== 'publish') return
    const id = packet.messageId ?? 0
    if (outstanding.has(id)) reused.push(id)
    outstanding.add(id)
    received++
    if (id === 5 && held === null) { held = { socket, id }; return }
    outstanding.delete(id)
    socket.write(mqttPacket.generate({ cmd: 'puback', messageId: id }))
    if (received === total && held !== null) {
      outstanding.delete(held.id)
      socket.write(mqttPacket.generate({ cmd: 'puback', messageId: held.id }))
    }
  })
  const connection = await UpstreamConnection.open(options(url), new AbortController().signal)
  t.teardown(async () => { await connection.end() })
  let sent = 0
  let acked = 0
  let failed: Error | undefined
  await new Promise<void>((resolve) => {
    const fill = (): void => {
      while (sent - acked < 100 && sent < total) {
        sent++
        connection.publish({ topic: 'wrap', payload: Buffer.from(String(sent)) }, (err) => {
          failed ??= err
          acked++
          if (acked === total) resolve()
          else fill()
        })
      }
    }
    fill()
  })
  t.equal(failed, undefined, 'every publish acknowledged')
  t.equal(acked, total, 'each callback called, the held message\'s too')
  t.same(reused, [], 'no identifier sent again while unacknowledged')
})
