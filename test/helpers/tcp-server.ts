import { createServer, type Server, type Socket } from 'node:net'
import type { TestLike } from './mosquitto.js'

/**
 * A TCP server on 127.0.0.1 (port 0) that hands each connection to `onSocket` (its errors are
 * ignored); every socket is destroyed and the server closed with the test.
 */
export async function localServer (t: TestLike, onSocket: (socket: Socket) => void = () => {}): Promise<{ server: Server, port: number, sockets: Socket[] }> {
  const sockets: Socket[] = []
  const server = createServer((socket) => {
    sockets.push(socket)
    socket.on('error', () => {})
    onSocket(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => { resolve() }))
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return { server, port: address.port, sockets }
}
