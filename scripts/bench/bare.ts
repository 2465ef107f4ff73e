/**
 * The baseline: a bare aedes broker with no disk. Alone it measures what ingest costs without a
 * buffer (PUBACK as soon as aedes has the packet). With `forwardTo` it is the simplest
 * store-in-memory forwarder: every sensor publish is republished upstream at QoS 1 by one MQTT.js
 * client, on the same topic sluice would use; while the upstream is down the readings wait in an
 * in-memory queue (what a mosquitto bridge does), so the queue, not a disk, holds the backlog.
 */
import { createServer, type AddressInfo, type Server } from 'node:net'
import { Aedes } from 'aedes'
import mqtt, { type MqttClient } from 'mqtt'

export interface BareBrokerOptions {
  /** upstream URL to forward to; none: ingest only */
  forwardTo?: string | null
  /** prefix of the forwarded topic, e.g. "sluice/bench/" */
  topicPrefix?: string
}

export class BareBroker {
  /** sensor publishes received */
  received = 0
  /** publishes the upstream acknowledged */
  forwarded = 0
  private readonly queue: Array<{ topic: string, payload: Buffer }> = []

  private constructor (
    private readonly aedes: Aedes,
    private readonly server: Server,
    private readonly upstream: MqttClient | null,
    private readonly topicPrefix: string
  ) {
    aedes.on('publish', (packet, client) => {
      if (client === null) return // aedes's own $SYS publishes
      this.received++
      if (this.upstream === null) return
      const topic = this.topicPrefix + packet.topic
      const payload = packet.payload as Buffer
      if (this.upstream.connected && this.queue.length === 0) this.send(topic, payload)
      else this.queue.push({ topic, payload })
    })
    upstream?.on('connect', () => {
      for (const { topic, payload } of this.queue.splice(0)) this.send(topic, payload)
    })
  }

  static async start (options: BareBrokerOptions = {}): Promise<BareBroker> {
    const aedes = await Aedes.createBroker()
    const server = createServer((socket) => { aedes.handle(socket) })
    await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
    let upstream: MqttClient | null = null
    if (options.forwardTo !== undefined && options.forwardTo !== null) {
      upstream = mqtt.connect(options.forwardTo, {
        clientId: `bench-bare-${process.pid}`,
        protocolVersion: 4,
        clean: true,
        reconnectPeriod: 1000,
        connectTimeout: 2000
      })
      upstream.on('error', () => {}) // refused while the upstream is down: keep trying
    }
    return new BareBroker(aedes, server, upstream, options.topicPrefix ?? '')
  }

  get port (): number { return (this.server.address() as AddressInfo).port }

  /** readings waiting in memory for the upstream */
  get queued (): number { return this.queue.length }

  async waitUpstream (timeoutMs = 10_000): Promise<void> {
    const upstream = this.upstream
    if (upstream === null || upstream.connected) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('bare forwarder: upstream not connected')) }, timeoutMs)
      upstream.once('connect', () => { clearTimeout(timer); resolve() })
    })
  }

  private send (topic: string, payload: Buffer): void {
    this.upstream?.publish(topic, payload, { qos: 1 }, (err) => { if (err === undefined || err === null) this.forwarded++ })
  }

  async close (): Promise<void> {
    await this.upstream?.endAsync(true).catch(() => {})
    const closed = new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
    await new Promise<void>((resolve) => { this.aedes.close(() => { resolve() }) })
    await closed
  }
}
