import { createServer } from 'node:net'

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (listen on port 0, read it, close).
 * For servers that cannot take port 0 themselves (mosquitto: `listener 0` means a Unix socket).
 * Another process could take it between close and reuse; callers that bind it retry on EADDRINUSE.
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
