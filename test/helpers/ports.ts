import { createServer } from 'node:net'

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (listen on port 0, read it, close). Another
 * process can take it before it is used, so it is only for what cannot take port 0 itself:
 * - mosquitto (`listener 0` means a Unix socket): startMosquitto starts again on a new port when
 *   its log says the address is in use;
 * - an address where nothing listens (an upstream that is down: connections are refused);
 * - a port a test must know before the daemon is ready (a sensor that connects the moment
 *   systemd hears READY=1), or moves a listener to on reload.
 * Everything else (a spawned daemon's broker and admin endpoint, aedes, node:http, node:net)
 * listens on port 0 and the test reads the real port back (DaemonRun.ports, pinPorts for restarts).
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
