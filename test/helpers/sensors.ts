/**
 * Simulated sensors: real MQTT.js clients publishing QoS 1 JSON readings `{"sensor","n"}` and
 * recording, on the sensor side, every reading whose PUBACK they received. Tests compare what
 * arrived upstream with these records, never with the daemon's own counters.
 */
import { connect, type MqttClient } from 'mqtt'
import type { TestLike } from './mosquitto.js'

export interface SensorOptions {
  /** how many sensors (clients) */
  count: number
  /** publishes each sensor keeps in flight (saturating load: many) */
  inflight?: number
  /** stop after this many readings per sensor (default: until stop()) */
  readingsPerSensor?: number
  /** topic of sensor i; default `sensors/s{i}/temp` */
  topic?: (i: number) => string
  reconnectPeriod?: number
}

export interface Fleet {
  /** "sensor:n" of every reading whose PUBACK arrived */
  readonly acked: Set<string>
  /** readings published (PUBACKed or not) */
  readonly sent: number
  readonly clients: MqttClient[]
  /** resolves once every sensor has published readingsPerSensor and had them all acknowledged */
  finished: () => Promise<void>
  /** waits until at least n readings are PUBACKed */
  waitForAcked: (n: number, timeoutMs?: number) => Promise<void>
  /** stops publishing new readings; waits (bounded) for outstanding ones, then disconnects */
  stop: (graceMs?: number) => Promise<void>
}

export function readingKey (sensor: string, n: number): string {
  return `${sensor}:${n}`
}

export async function startSensors (t: TestLike, url: string, options: SensorOptions): Promise<Fleet> {
  const { count, inflight = 1, readingsPerSensor = Number.POSITIVE_INFINITY, reconnectPeriod = 100 } = options
  const topicOf = options.topic ?? ((i: number) => `sensors/s${i}/temp`)
  const acked = new Set<string>()
  const listeners = new Set<() => void>()
  let sent = 0
  let stopping = false
  const clients: MqttClient[] = []
  const done: Array<Promise<void>> = []

  const notify = (): void => { for (const l of listeners) l() }

  for (let i = 0; i < count; i++) {
    const sensor = `s${i}`
    const client = connect(url, { clientId: `sensor-${i}-${process.pid}-${Math.random().toString(16).slice(2, 8)}`, reconnectPeriod, connectTimeout: 5000 })
    client.on('error', () => {}) // connection refused while the daemon is down: MQTT.js retries
    clients.push(client)
    let next = 0
    let outstanding = 0
    done.push(new Promise<void>((resolve) => {
      const publishNext = (): void => {
        while (!stopping && outstanding < inflight && next < readingsPerSensor) {
          const n = next++
          outstanding++
          sent++
          client.publish(topicOf(i), JSON.stringify({ sensor, n }), { qos: 1 }, (err) => {
            outstanding--
            const failed = err !== undefined && err !== null
            if (!failed) acked.add(readingKey(sensor, n))
            notify()
            if ((stopping || next >= readingsPerSensor) && outstanding === 0) resolve()
            // Not from inside a failed publish's callback: MQTT.js (5.16) answers the publishes it
            // queued while resending its store with "Connection closed" from a loop over that
            // queue, and a publish made in the callback joins the queue, gets the same answer, and
            // so on until the heap is gone (a daemon killed while a sensor resent after a restart).
            else if (failed) setImmediate(publishNext)
            else publishNext()
          })
        }
      }
      client.once('connect', publishNext)
    }))
  }

  const waitUntil = async (predicate: () => boolean, timeoutMs: number, what: string): Promise<void> => {
    if (predicate()) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        listeners.delete(check)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (acked ${acked.size}, sent ${sent})`))
      }, timeoutMs)
      const check = (): void => {
        if (!predicate()) return
        clearTimeout(timer)
        listeners.delete(check)
        resolve()
      }
      listeners.add(check)
    })
  }

  const closeAll = async (): Promise<void> => {
    await Promise.all(clients.map(async (c) => await c.endAsync(true).catch(() => {})))
  }
  t.teardown(closeAll)

  return {
    acked,
    get sent () { return sent },
    clients,
    finished: async () => { await Promise.all(done) },
    waitForAcked: async (n, timeoutMs = 20_000) => { await waitUntil(() => acked.size >= n, timeoutMs, `${n} PUBACKs`) },
    stop: async (graceMs = 10_000) => {
      stopping = true
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.all(done),
        new Promise((resolve) => { timer = setTimeout(resolve, graceMs) })
      ])
      clearTimeout(timer)
      await closeAll()
    }
  }
}

/** What a receiver saw of sluice's reading events, in arrival order. */
export interface Arrival { seq: number, epoch: string, sensor: string, n: number }

export function readingArrivals (messages: Array<{ json?: any }>): Arrival[] {
  return messages
    .filter((m) => m.json?.type === 'io.sluice.reading')
    .map((m) => ({ seq: Number(m.json.sequence), epoch: m.json.sluiceepoch, sensor: m.json.data.sensor, n: m.json.data.n }))
}

/**
 * Checks the at-least-once, in-order contract on one epoch's arrivals (docs/guarantees.md §3): the stream is
 * runs of consecutive seqs, and a new run may only start at or before where the last one was
 * (a resend from the oldest unacknowledged reading after a reconnect). Any step forward by more
 * than one is a reading out of order or a gap. Returns the problems found (none when the stream
 * is right), the number of duplicates, and the highest seq seen.
 */
export function orderProblems (arrivals: Arrival[], firstSeq = 1): { problems: string[], duplicates: number, highest: number } {
  const problems: string[] = []
  let highest = firstSeq - 1
  let prev = firstSeq - 1
  let duplicates = 0
  for (const [i, a] of arrivals.entries()) {
    if (a.seq > prev + 1) problems.push(`arrival ${i}: seq ${a.seq} follows ${prev}: out of order or a gap`)
    if (a.seq <= highest) duplicates++
    highest = Math.max(highest, a.seq)
    prev = a.seq
  }
  return { problems, duplicates, highest }
}
