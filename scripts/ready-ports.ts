/** The listening ports a daemon's `sluice ready` log line names (a config may say port 0). */
export interface ReadyPorts {
  /** the embedded broker's plain listener */
  broker: number | null
  /** the embedded broker's TLS listener */
  tls: number | null
  /** the admin endpoint */
  admin: number | null
}

/** The port of a `host:port` address as the ready line prints it, or null. */
function portOf (address: unknown): number | null {
  if (typeof address !== 'string') return null
  const port = Number(address.slice(address.lastIndexOf(':') + 1))
  return Number.isInteger(port) && port > 0 ? port : null
}

/** Reads the ports from a parsed `sluice ready` line (`ingest[].listen/tls`, `admin`). */
export function readyPorts (ready: unknown): ReadyPorts {
  const line = (typeof ready === 'object' && ready !== null ? ready : {}) as { ingest?: unknown, admin?: unknown }
  const ingest = Array.isArray(line.ingest) ? line.ingest as Array<{ name?: unknown, listen?: unknown, tls?: unknown }> : []
  const broker = ingest.find((i) => i?.name === 'broker')
  return { broker: portOf(broker?.listen), tls: portOf(broker?.tls), admin: portOf(line.admin) }
}
