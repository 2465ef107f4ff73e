/**
 * A TCP proxy on 127.0.0.1 for simulating network outages between the gateway and its upstream.
 * cut() drops every piped connection and refuses new ones (accepts and destroys them at once) while
 * the listening socket stays, so the address the gateway knows stays the same; restore() ends it.
 */
import { createServer, connect, type Socket, type Server } from 'node:net'
import type { TestLike } from './mosquitto.js'

export interface Proxy {
  /** the proxy's own port */
  readonly port: number
  /** mqtt://127.0.0.1:PORT */
  readonly url: string
  /** the port traffic is forwarded to */
  readonly targetPort: number
  /** currently open piped connections */
  readonly connections: number
  /** connections accepted since start, including the ones refused while cut */
  readonly accepted: number
  /** true between cut() and restore() */
  readonly isCut: boolean
  /** Destroys every open connection and refuses new ones until restore(). */
  cut(): void
  /** Lets new connections through again. */
  restore(): void
  /** Stops listening and destroys every connection (also done at teardown). */
  close(): Promise<void>
}

export async function startProxy(t: TestLike, targetPort: number, targetHost = '127.0.0.1'): Promise<Proxy> {
  const pairs = new Set<{ client: Socket; upstream: Socket }>()
  let accepted = 0
  let isCut = false

  const server: Server = createServer({ allowHalfOpen: false }, client => {
    accepted++
    if (isCut) {
      client.on('error', () => {})
      client.destroy()
      return
    }
    const upstream = connect({ host: targetHost, port: targetPort })
    const pair = { client, upstream }
    pairs.add(pair)
    const end = (): void => {
      if (!pairs.delete(pair)) return
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
    server.listen({ port: 0, host: '127.0.0.1' }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const addr = server.address()
  if (addr === null || typeof addr === 'string') throw new Error('startProxy: no TCP address')
  const port = addr.port

  const destroyAll = (): void => {
    for (const { client, upstream } of pairs) {
      client.destroy()
      upstream.destroy()
    }
    pairs.clear()
  }

  let closed: Promise<void> | undefined
  const proxy: Proxy = {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    targetPort,
    get connections() {
      return pairs.size
    },
    get accepted() {
      return accepted
    },
    get isCut() {
      return isCut
    },
    cut() {
      isCut = true
      destroyAll()
    },
    restore() {
      isCut = false
    },
    close() {
      closed ??= new Promise<void>(resolve => {
        isCut = true
        server.close(() => resolve())
        destroyAll()
      })
      return closed
    },
  }
  t.teardown(async () => {
    try {
      await proxy.close()
    } catch {
      // best effort
    }
  })
  return proxy
}
