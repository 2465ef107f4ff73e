import type { Logger } from 'pino'
import { formatListen, type ListenAddress } from '../config/index.js'
import { AdminServer } from './admin.js'
import type { GatewayMetrics } from './metrics.js'
import { readiness } from './readiness.js'
import { buildStatus } from './status.js'
import type { GatewayView } from './view.js'

export interface AdminEndpointOptions {
  view: GatewayView
  metrics: GatewayMetrics
  logger: Logger
}

/**
 * The admin endpoint of one gateway across reloads: which AdminServer serves, on which address,
 * and moving it when admin.listen changes. Every route reads the gateway through its view.
 */
export class AdminEndpoint {
  private readonly options: AdminEndpointOptions
  private server: AdminServer | null = null

  constructor (options: AdminEndpointOptions) {
    this.options = options
  }

  /**
   * Serves on `listen`. A port already taken is logged, not fatal: sensors' readings matter more
   * than the metrics port, and a SIGHUP retries.
   */
  async start (listen: ListenAddress): Promise<void> {
    try {
      this.server = await this.listen(listen)
    } catch (err) {
      this.options.logger.error({ code: 'SLUICE_ADMIN_LISTEN_FAILED', err: (err as Error).message, listen: formatListen(listen) },
        'the admin endpoint could not listen; running without it (free the port or change admin.listen, then send SIGHUP)')
    }
  }

  /** Where it listens, or null when it does not. */
  address (): ListenAddress | null { return this.server?.address() ?? null }

  /** `host:port`, for logs; null when not listening. */
  describe (): string | null { return this.server?.describe() ?? null }

  /** admin.enabled / admin.listen changed (SIGHUP): serve on the new address, or stop serving. */
  async set (admin: { enabled: boolean, listen: ListenAddress }): Promise<void> {
    const old = this.server
    if (!admin.enabled) {
      this.server = null
      await old?.close()
      return
    }
    // The new address first, so that a bad one leaves the old endpoint serving. Only the same
    // port on another host (127.0.0.1 -> 0.0.0.0) needs the old one closed first.
    const oldAddress = old?.address() ?? null
    try {
      this.server = await this.listen(admin.listen)
    } catch (err) {
      if (old === null || oldAddress === null || oldAddress.port !== admin.listen.port) throw err
      await old.close()
      try {
        this.server = await this.listen(admin.listen)
      } catch (again) {
        this.server = await this.listen(oldAddress).catch(() => null)
        throw again
      }
      return
    }
    await old?.close()
  }

  /** Stops serving; safe to call twice. */
  async close (): Promise<void> {
    await this.server?.close()
  }

  private async listen (listen: ListenAddress): Promise<AdminServer> {
    const { view, metrics, logger } = this.options
    const server = new AdminServer({
      listen,
      logger: logger.child({ part: 'admin' }),
      routes: {
        metrics: async () => ({ contentType: metrics.contentType, body: await metrics.render(await buildStatus(view)) }),
        readiness: async () => await readiness(view),
        status: async () => await buildStatus(view)
      }
    })
    await server.start()
    return server
  }
}
