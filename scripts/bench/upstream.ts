/**
 * The upstream side, in the bench's own process: an aedes broker on 127.0.0.1 (port 0) standing in
 * for the cloud, and one MQTT.js subscriber counting what arrives. The subscription is QoS 0 to
 * keep the counting cheap; on loopback nothing is lost (aedes waits for the socket to drain).
 */
import { createServer, type AddressInfo, type Server } from 'node:net'
import { Aedes } from 'aedes'
import mqtt, { type MqttClient } from 'mqtt'
import { CountWaiter } from './count-waiter.js'
import { wallNow } from './ipc.js'
import { UPSTREAM_FILTER } from './common.js'

export class Upstream {
  /** messages arrived since the last reset */
  count = 0
  /** payload bytes arrived since the last reset */
  bytes = 0
  /** wall-clock ms of the last arrival */
  lastAt = 0
  /** the first message seen (to publish the same thing in a baseline) */
  sample: { topic: string, payload: Buffer } | null = null
  private readonly waiter = new CountWaiter()

  private constructor (
    private readonly aedes: Aedes,
    private readonly server: Server,
    private readonly subscriber: MqttClient
  ) {
    subscriber.on('message', (topic, payload) => {
      this.count++
      this.bytes += payload.length
      this.lastAt = wallNow()
      this.sample ??= { topic, payload: Buffer.from(payload) }
      this.waiter.counted(this.count)
    })
  }

  static async start (): Promise<Upstream> {
    const aedes = await Aedes.createBroker()
    const server = createServer((socket) => { aedes.handle(socket) })
    await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
    const { port } = server.address() as AddressInfo
    const subscriber = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
      clientId: `bench-subscriber-${process.pid}`, protocolVersion: 4, clean: true, reconnectPeriod: 0
    })
    await new Promise<void>((resolve, reject) => {
      subscriber.once('connect', () => { resolve() })
      subscriber.once('error', reject)
    })
    await subscriber.subscribeAsync(UPSTREAM_FILTER, { qos: 0 })
    return new Upstream(aedes, server, subscriber)
  }

  get port (): number { return (this.server.address() as AddressInfo).port }
  get url (): string { return `mqtt://127.0.0.1:${this.port}` }

  reset (): void {
    this.count = 0
    this.bytes = 0
    this.lastAt = 0
  }

  /** Resolves with the wall-clock time of the `n`th arrival since the last reset. */
  async waitForCount (n: number, timeoutMs: number): Promise<number> {
    await this.waiter.wait(() => this.count, n, timeoutMs, 'messages')
    return this.lastAt
  }

  async close (): Promise<void> {
    await this.subscriber.endAsync(true).catch(() => {})
    const closed = new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
    await new Promise<void>((resolve) => { this.aedes.close(() => { resolve() }) })
    await closed
  }
}
