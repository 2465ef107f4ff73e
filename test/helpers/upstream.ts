/**
 * Reading what arrives upstream in any of sluice's formats, and publishing chosen readings from a
 * sensor: the tools of the upstream tests (formats, TLS, flow control, rejections).
 */
import { connect } from 'mqtt'
import { decodeBatch } from '../../index.js'
import type { ReceivedMessage } from './receiver.js'
import type { TestLike } from './mosquitto.js'

export type Arrival =
  | { kind: 'reading', seq: number, epoch: string, topic: string, payload: Buffer }
  | { kind: 'gap', from: number, to: number, count: number, reason: string, epoch: string }

/** Every reading and gap event in arrival order, whatever the format (batches are unpacked). */
export function arrivals (messages: readonly ReceivedMessage[]): Arrival[] {
  const out: Arrival[] = []
  for (const m of messages) {
    if (m.topic.endsWith('/$sluice/batch')) {
      const batch = decodeBatch(m.payload)
      for (const r of batch.records) out.push({ kind: 'reading', seq: r.seq, epoch: batch.epoch, topic: r.topic, payload: Buffer.from(r.payload) })
      continue
    }
    const attrs = m.properties?.userProperties as Record<string, string> | undefined
    if (attrs?.type === 'io.sluice.reading') {
      out.push({ kind: 'reading', seq: Number(attrs.sequence), epoch: attrs.sluiceepoch, topic: attrs.subject, payload: m.payload })
      continue
    }
    const json = m.json
    if (json?.type === 'io.sluice.reading') {
      const payload = json.data_base64 !== undefined ? Buffer.from(json.data_base64, 'base64') : Buffer.from(JSON.stringify(json.data))
      out.push({ kind: 'reading', seq: Number(json.sequence), epoch: json.sluiceepoch, topic: json.subject, payload })
    } else if (json?.type === 'io.sluice.gap') {
      out.push({ kind: 'gap', ...json.data, epoch: json.sluiceepoch })
    }
  }
  return out
}

/** The seqs of readings in arrival order. */
export function readingSeqs (list: readonly Arrival[]): number[] {
  return list.flatMap((a) => a.kind === 'reading' ? [a.seq] : [])
}

/**
 * Each seq's first arrival, a gap event standing at its `from`: the order a receiver taking
 * each seq the first time it arrives sees (docs/guarantees.md §3).
 */
export function firstArrivals (list: readonly Arrival[]): number[] {
  const seen = new Set<number>()
  const out: number[] = []
  for (const a of list) {
    const seq = a.kind === 'reading' ? a.seq : a.from
    if (seen.has(seq)) continue
    seen.add(seq)
    out.push(seq)
  }
  return out
}

export interface Publication { topic: string, payload: string | Buffer }

/**
 * Publishes readings at QoS 1 from one sensor, up to `inflight` at a time, in order; resolves
 * once every one has its PUBACK (the gateway holds PUBACK until the reading is durable).
 */
export async function publishAll (t: TestLike, url: string, items: readonly Publication[], inflight = 10): Promise<void> {
  const client = connect(url, { reconnectPeriod: 0, clientId: `pub-${process.pid}-${Math.random().toString(16).slice(2, 8)}` })
  t.teardown(async () => { await client.endAsync(true) })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => { resolve() })
    client.once('error', reject)
  })
  let next = 0
  await new Promise<void>((resolve, reject) => {
    let outstanding = 0
    const more = (): void => {
      while (outstanding < inflight && next < items.length) {
        const { topic, payload } = items[next++]
        outstanding++
        client.publish(topic, payload, { qos: 1 }, (err) => {
          outstanding--
          if (err != null) return reject(err)
          if (next >= items.length && outstanding === 0) resolve()
          else more()
        })
      }
    }
    if (items.length === 0) resolve()
    else more()
  })
  await client.endAsync()
}

/** `n` small JSON readings on one topic, numbered from `from`. */
export function readings (n: number, from = 0, topic = 'sensors/a/temp'): Publication[] {
  return Array.from({ length: n }, (_, i) => ({ topic, payload: JSON.stringify({ n: from + i }) }))
}
