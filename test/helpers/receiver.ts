/**
 * An upstream receiver: an MQTT.js client subscribed (QoS 1 by default) that records every message
 * and lets a test wait for a condition on what has arrived.
 */
import { connect, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt'
import type { TestLike } from './mosquitto.js'

export interface ReceivedMessage {
  topic: string
  payload: Buffer
  /** the payload parsed as JSON, when it is JSON */
  json?: any
  qos: 0 | 1 | 2
  retain: boolean
  dup: boolean
  /** MQTT 5 properties (user properties, content type...), when present */
  properties?: IPublishPacket['properties']
  /** Date.now() at arrival */
  at: number
}

export interface ReceiverOptions {
  /** 4 = MQTT 3.1.1 (default), 5 = MQTT 5 */
  protocolVersion?: 4 | 5
  /** subscription QoS, default 1 */
  qos?: 0 | 1 | 2
  /** default true; false = persistent session (give a fixed clientId) */
  clean?: boolean
  /** default: a random one */
  clientId?: string
  username?: string
  password?: string
  /** MQTT.js reconnectPeriod in ms, default 100 (reconnects quickly after a broker restart) */
  reconnectPeriod?: number
  /** how long startReceiver waits for CONNACK + SUBACK, default 10000 ms */
  connectTimeoutMs?: number
  /** anything else for MQTT.js (overrides the above) */
  mqtt?: IClientOptions
}

export interface Receiver {
  /** every message received, in arrival order */
  readonly messages: ReceivedMessage[]
  readonly client: MqttClient
  readonly connected: boolean
  /** how many times the client has connected (1 after start) */
  readonly connects: number
  /**
   * Resolves once predicate(messages) is true; re-checked now, on every message and on every
   * connect/close of the client (so `() => rx.connected` works too). Rejects after
   * timeoutMs (default 10000) with the counts so far, or if the predicate throws.
   */
  waitFor(predicate: (msgs: ReceivedMessage[]) => boolean, timeoutMs?: number, what?: string): Promise<void>
  /** waitFor(msgs => msgs.length >= n) */
  waitForCount(n: number, timeoutMs?: number): Promise<void>
  /** the messages whose topic matches the MQTT filter (+ and # wildcards) */
  on(filter: string): ReceivedMessage[]
  /** forgets the messages received so far */
  clear(): void
  /** Disconnects (gracefully when connected, so a persistent session stays); idempotent. */
  close(): Promise<void>
}

/** MQTT topic filter match (+ one level, # the rest). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/')
  const tp = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return i > 0 || !topic.startsWith('$')
    if (i >= tp.length) return false
    if (f[i] === '+') {
      if (i === 0 && tp[0].startsWith('$')) return false
      continue
    }
    if (f[i] !== tp[i]) return false
  }
  return f.length === tp.length
}

function parseJson(payload: Buffer): any {
  if (payload.length === 0) return undefined
  const first = payload[0]
  // cheap pre-check: JSON text starts with { [ " digit - t f n or whitespace
  if (first !== 0x7b && first !== 0x5b && first !== 0x22 && first !== 0x2d && !(first >= 0x30 && first <= 0x39) &&
      first !== 0x74 && first !== 0x66 && first !== 0x6e && first !== 0x20 && first !== 0x0a && first !== 0x0d && first !== 0x09) {
    return undefined
  }
  try {
    return JSON.parse(payload.toString('utf8'))
  } catch {
    return undefined
  }
}

function describe(msgs: ReceivedMessage[]): string {
  const byTopic = new Map<string, number>()
  for (const m of msgs) byTopic.set(m.topic, (byTopic.get(m.topic) ?? 0) + 1)
  const topics = [...byTopic].slice(0, 10).map(([k, v]) => `${k}: ${v}`).join(', ')
  const last = msgs[msgs.length - 1]
  const lastText = last ? `; last on ${last.topic}: ${last.payload.toString('utf8').slice(0, 200)}` : ''
  return `${msgs.length} message(s) received${topics ? ` (${topics}${byTopic.size > 10 ? ', ...' : ''})` : ''}${lastText}`
}

export async function startReceiver(
  t: TestLike,
  url: string,
  topic: string | string[] = '#',
  opts: ReceiverOptions = {},
): Promise<Receiver> {
  const clean = opts.clean ?? true
  if (!clean && opts.clientId === undefined) {
    throw new Error('startReceiver: a persistent session (clean: false) needs a fixed clientId')
  }
  const qos = opts.qos ?? 1
  const client = connect(url, {
    protocolVersion: opts.protocolVersion ?? 4,
    clean,
    clientId: opts.clientId ?? `receiver-${process.pid}-${Math.random().toString(16).slice(2, 10)}`,
    reconnectPeriod: opts.reconnectPeriod ?? 100,
    connectTimeout: 5000,
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    ...opts.mqtt,
  })

  const messages: ReceivedMessage[] = []
  const waiters = new Set<() => void>()
  let connects = 0
  let lastError: Error | undefined
  let closing: Promise<void> | undefined

  client.on('error', err => {
    lastError = err
  })
  client.on('connect', () => {
    connects++
    for (const w of [...waiters]) w()
  })
  client.on('close', () => {
    for (const w of [...waiters]) w()
  })
  client.on('message', (topicName, payload, packet) => {
    const msg: ReceivedMessage = {
      topic: topicName,
      payload,
      qos: packet.qos,
      retain: packet.retain,
      dup: packet.dup,
      at: Date.now(),
    }
    const json = parseJson(payload)
    if (json !== undefined) msg.json = json
    if (packet.properties) msg.properties = packet.properties
    messages.push(msg)
    for (const w of [...waiters]) w()
  })

  const close = (): Promise<void> => {
    closing ??= (async () => {
      for (const w of [...waiters]) w()
      if (client.connected) {
        // graceful DISCONNECT, bounded: fall back to force if it hangs
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          client.endAsync(false),
          new Promise<void>(resolve => {
            timer = setTimeout(resolve, 2000)
          }),
        ])
        clearTimeout(timer)
      }
      await client.endAsync(true)
    })()
    return closing
  }
  t.teardown(async () => {
    try {
      await close()
    } catch {
      // best effort
    }
  })

  // wait for CONNACK and SUBACK
  const timeoutMs = opts.connectTimeoutMs ?? 10000
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`startReceiver: no connection to ${url} within ${timeoutMs} ms${lastError ? `: ${lastError.message}` : ''}`))
      }, timeoutMs)
      const onConnect = (): void => {
        clearTimeout(timer)
        resolve()
      }
      if (client.connected) onConnect()
      else client.once('connect', onConnect)
    })
    const grants = await client.subscribeAsync(topic, { qos })
    const refused = grants.filter(g => (g.qos as number) >= 0x80)
    if (refused.length > 0) throw new Error(`startReceiver: subscription refused: ${JSON.stringify(refused)}`)
  } catch (err) {
    await close()
    throw err
  }

  const receiver: Receiver = {
    messages,
    client,
    get connected() {
      return client.connected
    },
    get connects() {
      return connects
    },
    waitFor(predicate, waitMs = 10000, what) {
      return new Promise<void>((resolve, reject) => {
        let done = false
        let timer: NodeJS.Timeout | undefined
        const finish = (err?: Error): void => {
          if (done) return
          done = true
          waiters.delete(check)
          clearTimeout(timer)
          if (err) reject(err)
          else resolve()
        }
        const check = (): void => {
          if (done) return
          let ok: boolean
          try {
            ok = predicate(messages)
          } catch (err) {
            finish(err instanceof Error ? err : new Error(String(err)))
            return
          }
          if (ok) finish()
          else if (closing) finish(new Error(`receiver closed while waiting${what ? ` for ${what}` : ''}: ${describe(messages)}`))
        }
        check()
        if (done) return
        waiters.add(check)
        timer = setTimeout(() => {
          finish(new Error(
            `receiver: timed out after ${waitMs} ms waiting${what ? ` for ${what}` : ''}: ${describe(messages)}; ` +
            `client ${client.connected ? 'connected' : 'not connected'}, connects: ${connects}` +
            `${lastError ? `, last error: ${lastError.message}` : ''}`,
          ))
        }, waitMs)
      })
    },
    waitForCount(n, waitMs) {
      return receiver.waitFor(msgs => msgs.length >= n, waitMs, `${n} message(s)`)
    },
    on(filter) {
      return messages.filter(m => topicMatches(filter, m.topic))
    },
    clear() {
      messages.length = 0
    },
    close,
  }
  return receiver
}
