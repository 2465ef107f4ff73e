import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { formatListen, type ListenAddress } from '../config/index.js'

export interface Readiness {
  /** the gateway accepts readings */
  ready: boolean
  /** why not, one short sentence each; empty when ready */
  reasons: string[]
}

/** What the endpoint serves; the gateway provides it. */
export interface AdminRoutes {
  metrics: () => Promise<{ contentType: string, body: string }>
  readiness: () => Promise<Readiness>
  status: () => Promise<unknown>
}

export interface AdminServerOptions {
  listen: ListenAddress
  routes: AdminRoutes
  logger: Logger
}

type Status = 'new' | 'opening' | 'open' | 'closing' | 'closed'

/**
 * The admin HTTP endpoint (node:http), read-only:
 *
 * - `GET /metrics`: Prometheus text format
 * - `GET /healthz`: 200 while the process runs (a liveness probe)
 * - `GET /readyz`: 200 when the gateway accepts readings, else 503 with the reasons
 * - `GET /status`: the status report, JSON (what `sluice status` prints)
 *
 * It has no authentication, so it listens on loopback by default and shows no secret: the
 * config's password never reaches any route.
 */
export class AdminServer {
  private readonly options: AdminServerOptions
  private readonly server: Server
  private status: Status = 'new'
  private closing: Promise<void> | null = null

  constructor (options: AdminServerOptions) {
    this.options = options
    this.server = createServer((req, res) => { this.handle(req, res) })
    // A scraper that opens a connection and sends nothing must not hold a socket for long.
    this.server.headersTimeout = 10_000
    this.server.requestTimeout = 10_000
  }

  /** Listens on the configured address; rejects (EADDRINUSE...) without leaving anything open. */
  async start (): Promise<void> {
    if (this.status !== 'new') throw new Error(`the admin endpoint cannot start when ${this.status}`)
    this.status = 'opening'
    const { host, port } = this.options.listen
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject)
        this.server.listen(port, host, () => {
          this.server.off('error', reject)
          resolve()
        })
        // The endpoint never keeps the process alive by itself: if a stop fails half-way, the
        // process still exits rather than hang on its metrics port.
        this.server.unref()
      })
    } catch (err) {
      this.status = 'closed'
      throw err
    }
    this.status = 'open'
  }

  /** The address listened on (the real port when the config says 0), or null when not listening. */
  address (): ListenAddress | null {
    if (this.status !== 'open') return null
    const a = this.server.address() as AddressInfo | null
    return a === null ? null : { host: a.address, port: a.port }
  }

  /** `host:port`, for logs; null when not listening. */
  describe (): string | null {
    const a = this.address()
    return a === null ? null : formatListen(a)
  }

  private handle (req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]
    this.options.logger.debug({ method: req.method, path }, 'admin request')
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed: the admin endpoint is read-only\n')
    }
    this.route(path).then(({ code, type, body }) => { send(res, code, type, body) }, (err: unknown) => {
      this.options.logger.error({ err, path }, 'admin request failed')
      send(res, 500, 'text/plain; charset=utf-8', `internal error: ${(err as Error).message}\n`)
    })
  }

  private async route (path: string): Promise<{ code: number, type: string, body: string }> {
    const { routes } = this.options
    const text = 'text/plain; charset=utf-8'
    switch (path) {
      case '/healthz':
        return { code: 200, type: text, body: 'ok\n' }
      case '/readyz': {
        const { ready, reasons } = await routes.readiness()
        return ready
          ? { code: 200, type: text, body: 'ready\n' }
          : { code: 503, type: text, body: `not ready: ${reasons.join('; ')}\n` }
      }
      case '/metrics': {
        const { contentType, body } = await routes.metrics()
        return { code: 200, type: contentType, body }
      }
      case '/status':
        return { code: 200, type: 'application/json; charset=utf-8', body: `${JSON.stringify(await routes.status(), null, 2)}\n` }
      default:
        return { code: 404, type: text, body: 'not found: try /metrics, /healthz, /readyz or /status\n' }
    }
  }

  /** Stops listening and closes every connection, idle keep-alive ones included. Safe to call twice. */
  async close (): Promise<void> {
    this.closing ??= this.shutdown()
    return await this.closing
  }

  private async shutdown (): Promise<void> {
    if (this.status !== 'open') {
      this.status = 'closed'
      return
    }
    this.status = 'closing'
    const closed = new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
    this.server.closeAllConnections()
    await closed
    this.status = 'closed'
  }
}

function send (res: ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}
