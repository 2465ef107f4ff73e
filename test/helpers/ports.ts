import { createServer } from 'node:net'

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (listen on port 0, read it, close).
 * Only for servers that cannot take port 0 themselves (mosquitto: `listener 0` means a Unix
 * socket). Another process can take it between close and reuse: startMosquitto starts again on a
 * new port when its log says the address is in use. Servers that can take port 0 (aedes, the
 * admin endpoint, node:http, node:net) should bind port 0 and read the real port back instead.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const addr = srv.address()
      if (addr === null || typeof addr === 'string') {
        srv.close()
        reject(new Error('freePort: no TCP address'))
        return
      }
      const { port } = addr
      srv.close(err => (err ? reject(err) : resolve(port)))
    })
  })
}
