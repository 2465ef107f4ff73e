/**
 * A TCP proxy on 127.0.0.1 that can mute one direction: while muted, what the client sends is
 * read and counted (MQTT packets by type) but never reaches the broker, while the broker's
 * packets still reach the client. A client's PUBACKs are then lost on the way, as when a
 * process dies with them still in its socket: the broker keeps the messages unacknowledged.
 */
import { connect, createServer, type Server, type Socket } from 'node:net'
import type { TestLike } from './mosquitto.js'
import { PacketFrames } from '../../adapters/upstream/frames.js'

/** The largest Remaining Length MQTT can express [MQTT-2.2.3]. */
const MAX_PACKET = 268_435_455

/** MQTT control packet types [MQTT-2.2.1], the ones a subscriber sends. */
const PACKET_NAMES: Record<number, string> = { 1: 'connect', 4: 'puback', 8: 'subscribe', 12: 'pingreq', 14: 'disconnect' }

export interface MuteProxy {
  readonly port: number
  /** mqtt://127.0.0.1:PORT */
  readonly url: string
  /** packets the client sent, by type name, muted or not (since start) */
  readonly fromClient: Record<string, number>
  /** packets the client sent that were swallowed while muted, by type name */
  readonly swallowed: Record<string, number>
  /** From now on the client's bytes are counted and dropped. */
  mute: () => void
  /** From now on the client's bytes reach the broker again. */
  unmute: () => void
  /** Resolves once `predicate` holds for the counts; checked on every packet from the client. */
  waitFor: (predicate: () => boolean, timeoutMs: number, what: string) => Promise<void>
  close: () => Promise<void>
}

export async function startMuteProxy (t: TestLike, targetPort: number): Promise<MuteProxy> {
  const fromClient: Record<string, number> = {}
  const swallowed: Record<string, number> = {}
  const waiters = new Set<() => void>()
  const sockets = new Set<Socket>()
  let muted = false

  const count = (into: Record<string, number>, type: number): void => {
    const name = PACKET_NAMES[type] ?? `type${type}`
    into[name] = (into[name] ?? 0) + 1
  }

  const server: Server = createServer((client) => {
    const upstream = connect({ host: '127.0.0.1', port: targetPort })
    sockets.add(client)
    sockets.add(upstream)
    const end = (): void => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', end)
    upstream.on('error', end)
    client.on('close', end)
    upstream.on('close', end)
    upstream.pipe(client)
    // Split the client's bytes into MQTT packets, as sluice's upstream client does.
    const frames = new PacketFrames(MAX_PACKET)
    const onPacket = (packet: Buffer): void => {
      const type = packet[0] >> 4
      count(fromClient, type)
      if (muted) count(swallowed, type)
      else upstream.write(packet)
    }
    client.on('data', (chunk: Buffer) => {
      if (frames.push(chunk, onPacket) !== null) return end()
      for (const check of [...waiters]) check()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: 0, host: '127.0.0.1' }, () => { server.off('error', reject); resolve() })
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('startMuteProxy: no TCP address')

  let closed: Promise<void> | undefined
  const proxy: MuteProxy = {
    port: address.port,
    url: `mqtt://127.0.0.1:${address.port}`,
    fromClient,
    swallowed,
    mute: () => { muted = true },
    unmute: () => { muted = false },
    waitFor: async (predicate, timeoutMs, what) => {
      if (predicate()) return
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; from the client: ${JSON.stringify(fromClient)}`))
        }, timeoutMs)
        const check = (): void => {
          if (!predicate()) return
          clearTimeout(timer)
          waiters.delete(check)
          resolve()
        }
        waiters.add(check)
      })
    },
    close: async () => {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => { resolve() })
        for (const socket of sockets) socket.destroy()
      })
      await closed
    }
  }
  t.teardown(async () => { await proxy.close() })
  return proxy
}
