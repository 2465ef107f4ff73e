/**
 * A TCP proxy on 127.0.0.1 that reads the MQTT packets going through it in both directions
 * (mqtt-packet's parser) and keeps the figures a test asserts on: how many QoS 1 publishes the
 * client had unacknowledged at once at most, the size of every PUBLISH packet, and the
 * connections. What the upstream sees on the wire, not what sluice says about itself.
 */
import { connect, createServer, type Server, type Socket } from 'node:net'
import mqttPacket from 'mqtt-packet'
import type { TestLike } from './mosquitto.js'

export interface MqttTap {
  readonly port: number
  /** mqtt://127.0.0.1:PORT */
  readonly url: string
  /** most QoS 1 publishes from the client unacknowledged at once, on any one connection */
  readonly maxOutstanding: number
  /** byte size of every PUBLISH packet the client sent, in order */
  readonly publishSizes: number[]
  /** performance.now() when each PUBLISH packet went through */
  readonly publishTimes: number[]
  /** client connections accepted since start */
  readonly connections: number
  /** packets the client sent, by type */
  readonly fromClient: Record<string, number>
  close: () => Promise<void>
}

export async function startMqttTap (t: TestLike, targetPort: number, protocolVersion: 4 | 5): Promise<MqttTap> {
  let maxOutstanding = 0
  let connections = 0
  const publishSizes: number[] = []
  const publishTimes: number[] = []
  const fromClient: Record<string, number> = {}
  const sockets = new Set<Socket>()

  const server: Server = createServer((client) => {
    connections++
    const upstream = connect({ host: '127.0.0.1', port: targetPort })
    sockets.add(client)
    sockets.add(upstream)
    const outstanding = new Set<number>()
    const up = mqttPacket.parser({ protocolVersion })
    const down = mqttPacket.parser({ protocolVersion })
    up.on('packet', (packet) => {
      fromClient[packet.cmd] = (fromClient[packet.cmd] ?? 0) + 1
      if (packet.cmd === 'publish') {
        publishSizes.push(mqttPacket.generate(packet, { protocolVersion }).length)
        publishTimes.push(performance.now())
        if (packet.qos === 1 && packet.messageId !== undefined) {
          outstanding.add(packet.messageId)
          maxOutstanding = Math.max(maxOutstanding, outstanding.size)
        }
      }
    })
    down.on('packet', (packet) => {
      if (packet.cmd === 'puback' && packet.messageId !== undefined) outstanding.delete(packet.messageId)
    })
    // A packet the parser cannot read is the broker's business (it disconnects): just stop counting.
    up.on('error', () => {})
    down.on('error', () => {})
    client.on('data', (d: Buffer) => { up.parse(d) })
    upstream.on('data', (d: Buffer) => { down.parse(d) })
    const end = (): void => {
      sockets.delete(client)
      sockets.delete(upstream)
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end)
    upstream.on('error', end)
    client.on('close', end)
    upstream.on('close', end)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: 0, host: '127.0.0.1' }, () => { server.off('error', reject); resolve() })
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('startMqttTap: no TCP address')
  let closed: Promise<void> | undefined
  const tap: MqttTap = {
    port: address.port,
    url: `mqtt://127.0.0.1:${address.port}`,
    get maxOutstanding () { return maxOutstanding },
    publishSizes,
    publishTimes,
    get connections () { return connections },
    fromClient,
    close: async () => {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => { resolve() })
        for (const s of sockets) s.destroy()
      })
      await closed
    }
  }
  t.teardown(async () => { await tap.close() })
  return tap
}
