import { readFile } from 'node:fs/promises'
import { createSecureContext } from 'node:tls'
import { ConfigError, type ConfigIssue, type SluiceConfig } from '../config/index.js'
import type { UpstreamTls } from '../adapters/upstream/connection.js'

const FILES = [
  ['ca', 'CA certificate'],
  ['cert', 'client certificate'],
  ['key', 'client key']
] as const

/**
 * Reads the upstream's TLS files (`upstream.ca`, `cert`, `key`) once, at start, and checks that
 * they make a TLS context: a missing file, a key that does not match its certificate or a file
 * that is not PEM is a config error (exit 2) naming the key, not a reconnect loop that logs a TLS
 * error every minute. Undefined for a plain mqtt:// upstream.
 */
export async function loadUpstreamTls (upstream: SluiceConfig['upstream']): Promise<UpstreamTls | undefined> {
  if (!/^(mqtts|ssl):/i.test(upstream.url)) return undefined
  const tls: UpstreamTls = {}
  const errors: ConfigIssue[] = []
  for (const [key, what] of FILES) {
    const file = upstream[key]
    if (file === undefined) continue
    try {
      tls[key] = await readFile(file)
    } catch (err) {
      errors.push({ path: `upstream.${key}`, message: `cannot read the ${what} ${JSON.stringify(file)}: ${(err as Error).message}` })
    }
  }
  if (errors.length === 0) {
    if (tls.ca !== undefined && !tls.ca.includes('-----BEGIN CERTIFICATE-----')) {
      errors.push({ path: 'upstream.ca', message: `${JSON.stringify(upstream.ca)} holds no PEM certificate` })
    }
    try {
      createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key })
    } catch (err) {
      const path = tls.cert !== undefined ? 'upstream.cert' : 'upstream.ca'
      errors.push({ path, message: `the TLS files do not make a TLS context (${(err as Error).message})` })
    }
  }
  if (errors.length > 0) throw new ConfigError(errors)
  if (upstream.servername !== undefined) tls.servername = upstream.servername
  if (upstream.alpn !== undefined) tls.alpn = [...upstream.alpn]
  return tls
}
