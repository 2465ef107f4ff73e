/**
 * Child process generating load: `clients` MQTT.js clients publishing at QoS 1, each keeping
 * `window` publishes awaiting their PUBACK, until `total` are acknowledged. Bounded: it stops by
 * itself. Reports the wall-clock time of the first publish and of the last PUBACK, so the bench
 * can time the run from first publish to last arrival upstream.
 */
import mqtt, { type MqttClient } from 'mqtt'
import { serve, wallNow } from './ipc.js'
import { readingPayload, sensorTopic } from './common.js'

let clients: MqttClient[] = []

export interface ConnectParams {
  port: number
  clients: number
  /** connect client i as broker user `s{i}` with this password */
  password?: string
}

export interface RunParams {
  total: number
  window: number
  /** topic of each client, `{i}` replaced by its index; default a sensor topic per client */
  topic?: string
  /** payload (UTF-8); default a sensor reading per client */
  payload?: string
}

export interface RunResult {
  /** wall-clock ms of the first publish */
  t0: number
  /** wall-clock ms of the last PUBACK */
  tAcked: number
  acked: number
}

async function connectAll ({ port, clients: count, password }: ConnectParams): Promise<void> {
  await closeAll()
  clients = await Promise.all(Array.from({ length: count }, async (_, i) => {
    const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
      clientId: `bench-load-${process.pid}-${i}`,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      ...(password === undefined ? {} : { username: `s${i}`, password })
    })
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => { resolve() })
      client.once('error', reject)
    })
    return client
  }))
}

/** One client's share: keeps `window` publishes in flight until `quota` are acknowledged. */
async function pump (client: MqttClient, quota: number, window: number, topic: string, payload: Buffer): Promise<void> {
  if (quota === 0) return
  let onClose = (): void => {}
  try {
    await new Promise<void>((resolve, reject) => {
      let sent = 0
      let acked = 0
      const onAck = (err?: Error | null): void => {
        if (err !== undefined && err !== null) { reject(err); return }
        acked++
        if (sent < quota) send()
        else if (acked === quota) resolve()
      }
      const send = (): void => {
        sent++
        client.publish(topic, payload, { qos: 1 }, onAck)
      }
      onClose = () => { reject(new Error(`connection closed after ${acked} of ${quota} PUBACKs`)) }
      client.once('close', onClose)
      while (sent < quota && sent < window) send()
    })
  } finally {
    client.off('close', onClose)
  }
}

async function run ({ total, window, topic, payload }: RunParams): Promise<RunResult> {
  if (clients.length === 0) throw new Error('not connected')
  const base = Math.floor(total / clients.length)
  const extra = total % clients.length
  const t0 = wallNow()
  await Promise.all(clients.map(async (client, i) => {
    const quota = base + (i < extra ? 1 : 0)
    const clientTopic = topic === undefined ? sensorTopic(i) : topic.replaceAll('{i}', String(i))
    const body = payload === undefined ? readingPayload(i, 0) : Buffer.from(payload)
    await pump(client, quota, window, clientTopic, body)
  }))
  return { t0, tAcked: wallNow(), acked: total }
}

export interface PaceParams {
  /** readings per second offered by all clients together */
  rate: number
  /** how long to offer them, ms */
  durationMs: number
}

export interface PaceResult {
  /** wall-clock ms of the first publish */
  t0: number
  sent: number
  /** wall-clock ms of the last PUBACK */
  tAcked: number
}

/** How often the paced load tops up its publishes: 200 ticks a second, so a tick carries few. */
const PACE_TICK_MS = 5

/**
 * Offers `rate` readings a second, spread over the clients in turn, for `durationMs`, whatever
 * the PUBACKs do (open loop: a slow gateway is offered the same load). Each payload carries its
 * wall-clock send time as `"sent":<ms>`, so the upstream can time each reading's way through.
 * Resolves once every publish is acknowledged.
 */
async function pace ({ rate, durationMs }: PaceParams): Promise<PaceResult> {
  if (clients.length === 0) throw new Error('not connected')
  const total = Math.round(rate * durationMs / 1000)
  let sent = 0
  let acked = 0
  const t0 = wallNow()
  return await new Promise<PaceResult>((resolve, reject) => {
    const onAck = (err?: Error | null): void => {
      if (err !== undefined && err !== null) { clearInterval(timer); reject(err); return }
      acked++
      if (acked === total) resolve({ t0, sent, tAcked: wallNow() })
    }
    const tick = (): void => {
      const due = Math.min(total, Math.floor((wallNow() - t0) * rate / 1000) + 1)
      while (sent < due) {
        const i = sent % clients.length
        const payload = stampedPayload(i, sent)
        sent++
        clients[i].publish(sensorTopic(i), payload, { qos: 1 }, onAck)
      }
      if (sent === total) clearInterval(timer)
    }
    const timer = setInterval(tick, PACE_TICK_MS)
    tick()
  })
}

/** A reading like readingPayload's, with its send time (wall-clock ms, 3 decimals). */
function stampedPayload (sensor: number, n: number): Buffer {
  return Buffer.from(`{"sensor":"s${sensor}","n":${n},"temp":21.5,"hum":40.25,"sent":${wallNow().toFixed(3)}}`)
}

async function closeAll (): Promise<void> {
  await Promise.all(clients.map(async (client) => { await client.endAsync(true).catch(() => {}) }))
  clients = []
}

serve({
  connect: connectAll,
  run,
  pace,
  close: closeAll
})
