/**
 * The host side of a cycle: sensors publishing QoS 1 readings into the guest (every PUBACK they
 * got is recorded with its time), and a receiver subscribed on the upstream mosquitto recording
 * everything sluice forwarded, in arrival order.
 */
import { performance } from 'node:perf_hooks'
import mqtt, { type MqttClient } from 'mqtt'
import type { Arrival, Acked } from './check.js'

export class Sensors {
  readonly acked: Acked[] = []
  firstAck: Promise<void>
  private readonly clients: MqttClient[] = []
  private stopped = false
  private resolveFirst!: () => void

  constructor (readonly cycle: number, port: number, count = 3, window = 16) {
    this.firstAck = new Promise((resolve) => { this.resolveFirst = resolve })
    for (let s = 0; s < count; s++) {
      const client = mqtt.connect({ host: '127.0.0.1', port, protocolVersion: 4, clientId: `pc-${cycle}-${s}`, reconnectPeriod: 0, connectTimeout: 20000 })
      client.on('error', () => { /* the power cut ends these connections; what counts is the PUBACKs */ })
      this.clients.push(client)
      let n = 0
      const next = (): void => {
        if (this.stopped || !client.connected) return
        const key = `${cycle}/${s}/${n++}`
        client.publish(`sensors/s${s}`, JSON.stringify({ k: key }), { qos: 1 }, (err) => {
          if (err !== undefined && err !== null) return
          this.acked.push({ key, at: performance.now() })
          this.resolveFirst()
          next()
        })
      }
      client.once('connect', () => { for (let i = 0; i < window; i++) next() })
    }
  }

  /** Stops publishing and drops the connections without waiting for anything. */
  stop (): void {
    this.stopped = true
    for (const c of this.clients) c.end(true)
  }
}

export class Receiver {
  readonly arrivals: Arrival[] = []
  lastAt = performance.now()
  private constructor (private readonly client: MqttClient) {}

  static async start (port: number): Promise<Receiver> {
    const client = mqtt.connect({ host: '127.0.0.1', port, protocolVersion: 4, clientId: 'powercut-receiver', clean: false, reconnectPeriod: 1000 })
    const r = new Receiver(client)
    client.on('message', (_topic, payload) => { r.record(payload) })
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => { client.subscribe('sluice/#', { qos: 1 }, (err) => { if (err !== null && err !== undefined) reject(err); else resolve() }) })
      client.once('error', reject)
    })
    return r
  }

  private record (payload: Buffer): void {
    const at = performance.now()
    this.lastAt = at
    const event = JSON.parse(payload.toString('utf8')) as { type: string, sluiceepoch: string, sequence?: string, data?: Record<string, unknown> }
    switch (event.type) {
      case 'io.sluice.reading':
        this.arrivals.push({ kind: 'reading', at, epoch: event.sluiceepoch, seq: Number(event.sequence), key: String(event.data?.k) })
        break
      case 'io.sluice.epoch':
        this.arrivals.push({ kind: 'epoch', at, epoch: event.sluiceepoch, previous: String(event.data?.previous), lastDurableSeq: Number(event.data?.lastDurableSeq), reason: String(event.data?.reason) })
        break
      case 'io.sluice.gap':
        this.arrivals.push({ kind: 'gap', at, epoch: event.sluiceepoch, from: Number(event.data?.from), to: Number(event.data?.to), reason: String(event.data?.reason) })
        break
      default:
        // health readings and anything else sluice may send are not part of the count
        break
    }
  }

  async close (): Promise<void> {
    await this.client.endAsync(true)
  }
}
