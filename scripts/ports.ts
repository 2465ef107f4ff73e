import { createServer } from 'node:net'

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (listen on port 0, read it, close). Another
 * process can take it before it is used, so it is only for what cannot take port 0 itself:
 * mosquitto (`listener 0` means a Unix socket), qemu's forwarded ports, an address where nothing
 * listens (an upstream that is down: connections are refused), or a port that must be known
 * before the server that takes it is ready. Everything else listens on port 0 and reads the real
 * port back.
 */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
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
      srv.close((err) => { if (err !== undefined) reject(err); else resolve(port) })
    })
  })
}
