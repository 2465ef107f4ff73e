/**
 * The receiving end of an upstream broker (mosquitto), in the bench's own process: one MQTT.js
 * subscriber counting readings as they arrive, and, for stamped readings (`"sent":<ms>` in the
 * payload, load.ts `pace`), each one's latency from the sensor's publish to here. A message of
 * several readings (cbor-batch carries the sensors' bytes as they were) counts each of them.
 */
import mqtt, { type MqttClient } from 'mqtt'
import { CountWaiter } from './count-waiter.js'
import { wallNow } from './ipc.js'

/** A stamp, and the start of a reading: the sensors' payloads all begin with `{"sensor":`. */
const STAMP = /"sent":(\d+\.\d+)/g
const READING = Buffer.from('{"sensor":')

export class Sink {
  readings = 0
  messages = 0
  /** wall-clock ms of the first and the last arrival */
  firstAt = 0
  lastAt = 0
  readonly latencies: number[] = []
  private readonly waiter = new CountWaiter()

  private constructor (private readonly client: MqttClient, private readonly stamped: boolean) {
    client.on('message', (_topic, payload) => { this.arrived(payload) })
  }

  /** Subscribes to `filter` at QoS 0 (cheap to count; the upstream's queue is unbounded). */
  static async start (url: string, filter: string, stamped: boolean): Promise<Sink> {
    const client = mqtt.connect(url, { clientId: `bench-sink-${process.pid}-${Math.random().toString(16).slice(2, 8)}`, protocolVersion: 4, clean: true, reconnectPeriod: 0 })
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => { resolve() })
      client.once('error', reject)
    })
    await client.subscribeAsync(filter, { qos: 0 })
    return new Sink(client, stamped)
  }

  private arrived (payload: Buffer): void {
    const now = wallNow()
    let count = 0
    if (this.stamped) {
      const text = payload.toString('latin1')
      for (const match of text.matchAll(STAMP)) {
        this.latencies.push(now - Number(match[1]))
        count++
      }
    } else {
      for (let at = payload.indexOf(READING); at !== -1; at = payload.indexOf(READING, at + READING.length)) count++
    }
    if (count === 0) return // sluice's own events (epoch, gap)
    this.messages++
    this.readings += count
    if (this.firstAt === 0) this.firstAt = now
    this.lastAt = now
    this.waiter.counted(this.readings)
  }

  reset (): void {
    this.readings = 0
    this.messages = 0
    this.firstAt = 0
    this.lastAt = 0
    this.latencies.length = 0
  }

  /** Resolves with the wall-clock time of the arrival that brought the count to `n`. */
  async waitFor (n: number, timeoutMs: number): Promise<number> {
    await this.waiter.wait(() => this.readings, n, timeoutMs, 'readings')
    return this.lastAt
  }

  async close (): Promise<void> {
    await this.client.endAsync(true).catch(() => {})
  }
}

/** The q-quantile (0..1) of `values`, nearest rank. */
export function quantile (values: number[], q: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}
