import { readFile } from 'node:fs/promises'
import { isIPv6 } from 'node:net'
import { ConfigError, parseYaml, validateConfig, type ListenAddress } from '../config/index.js'
import type { StatusReport } from './status.js'
import { UsageError } from './errors.js'

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9464'

export interface StatusCommandOptions {
  /** --admin URL */
  admin?: string
  /** -c FILE, when given */
  config?: string
  /** the config file tried when neither --admin nor -c is given */
  defaultConfig: string
  out: NodeJS.WritableStream
  err: NodeJS.WritableStream
  timeoutMs?: number
}

/**
 * `sluice status`: fetches /status and prints a short summary. Exit 0 when the gateway is ready,
 * 1 when it is not ready or cannot be reached (the output says which). An HTTP client and nothing
 * more: it loads neither the gateway nor the Prometheus client, as an operator runs it on a busy
 * Pi next to the daemon.
 */
export async function statusCommand (o: StatusCommandOptions): Promise<number> {
  const base = await adminUrl(o)
  if (base === null) {
    o.err.write(`sluice status: the admin endpoint is disabled (admin.enabled: false in ${o.config ?? o.defaultConfig})\n`)
    return 1
  }
  const url = new URL('/status', base)
  let report: StatusReport
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(o.timeoutMs ?? 5000) })
    if (!res.ok) {
      o.err.write(`sluice status: UNREACHABLE: ${url.href} answered HTTP ${res.status}\n`)
      return 1
    }
    report = await res.json() as StatusReport
  } catch (err) {
    o.err.write(`sluice status: UNREACHABLE: cannot reach sluice at ${url.href}: ${fetchError(err)}\n`)
    return 1
  }
  o.out.write(formatStatus(report))
  return report.ready ? 0 : 1
}

/** --admin, else admin.listen of -c FILE, else of the default config when readable, else 127.0.0.1:9464. */
async function adminUrl (o: StatusCommandOptions): Promise<string | null> {
  if (o.admin !== undefined) {
    let url: URL
    try {
      url = new URL(o.admin)
    } catch {
      throw new UsageError(`--admin: expected a URL like ${DEFAULT_ADMIN_URL}, got ${JSON.stringify(o.admin)}`)
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new UsageError(`--admin: expected an http:// URL, got ${JSON.stringify(o.admin)}`)
    }
    return url.href
  }
  const file = o.config ?? o.defaultConfig
  let admin: { enabled: boolean, listen: ListenAddress }
  try {
    // Only the admin section is needed: secrets (passwordFile) are not read, so `sluice status`
    // works for a user who may not read them.
    admin = validateConfig(parseYaml(await readFile(file, 'utf8'))).admin
  } catch (err) {
    if (o.config === undefined) return DEFAULT_ADMIN_URL // no usable default config: the default address
    if (err instanceof ConfigError) throw new ConfigError(err.errors, { file, cause: err.cause })
    throw new ConfigError([{ path: '(root)', message: `cannot read the config file: ${(err as Error).message}` }], { file, cause: err })
  }
  if (!admin.enabled) return null
  return `http://${connectHost(admin.listen.host)}:${admin.listen.port}`
}

/** Where to connect for a listen address: a wildcard address is reached on loopback. */
function connectHost (host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1'
  if (host === '::') return '[::1]'
  return isIPv6(host) ? `[${host}]` : host
}

function fetchError (err: unknown): string {
  const e = err as { name?: string, message?: string, cause?: { code?: string, message?: string } }
  if (e.name === 'TimeoutError') return 'no answer in time'
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err)
}

/** The report for a person: a handful of aligned lines. */
export function formatStatus (r: StatusReport): string {
  const lines: string[] = []
  lines.push(r.ready
    ? `sluice ${r.gateway}: READY (${r.state}, up ${duration(r.uptimeSeconds)}, version ${r.version})`
    : `sluice ${r.gateway}: NOT READY: ${r.reasons.join('; ')}`)
  const row = (label: string, text: string): void => { lines.push(`  ${label.padEnd(9)} ${text}`) }
  const up = r.upstream
  row('upstream', `${up.connected ? 'connected' : 'NOT CONNECTED'} to ${up.url}` +
    ` (${count(up.reconnects)} reconnect${up.reconnects === 1 ? '' : 's'}, ${count(up.inFlight)} in flight)`)
  const b = r.buffer.backlog
  row('backlog', `${count(b.readings)} reading${b.readings === 1 ? '' : 's'}` +
    `, buffer ${bytes(b.bytes)} on disk` +
    (b.oldestUnsentAgeSeconds === null ? ', nothing unsent' : `, oldest unsent ${duration(b.oldestUnsentAgeSeconds)} ago`))
  row('rates', r.rates.windowSeconds === 0
    ? 'not measured yet'
    : `${rate(r.rates.ingestPerSecond)} in, ${rate(r.rates.forwardPerSecond)} forwarded (readings/s, last ${duration(r.rates.windowSeconds)})`)
  row('drops', tally(r.totals.dropped))
  row('refused', tally(r.totals.refused))
  row('disk', r.disk.freeBytes === null
    ? `free space unknown (${r.disk.path})`
    : `${bytes(r.disk.freeBytes)} free of ${bytes(r.disk.totalBytes ?? 0)} (${r.disk.path})`)
  row('ingest', r.ingest.map(describeIngest).join('; '))
  row('buffer', `epoch ${r.buffer.epoch}, last seq ${count(r.buffer.lastSeq)}, ${bytes(r.buffer.writtenBytes)} written since start`)
  for (const d of r.buffer.recoveries ?? []) {
    row('damage', d.action === 'repaired'
      ? `${d.at}: the buffer was damaged and repaired; ${count(d.lostSeqs)} reading${d.lostSeqs === 1 ? '' : 's'} lost (announced upstream)`
      : `${d.at}: the buffer was damaged beyond repair; ${count(d.files)} files (${bytes(d.bytes)}) moved to ${String(d.setAsideTo)}`)
  }
  if (r.deadLetters > 0) row('set aside', `${count(r.deadLetters)} reading${r.deadLetters === 1 ? '' : 's'} the upstream refused, kept for inspection`)
  for (const d of r.recentDeadLetters ?? []) {
    const code = d.reasonCode === null ? '' : ` 0x${d.reasonCode.toString(16).padStart(2, '0')}`
    lines.push(`  seq ${d.seq} ${d.topic} (${bytes(d.bytes)}): ${d.reason}${code} after ${d.attempts} tries, set aside ${d.setAsideAt}`)
  }
  return `${lines.join('\n')}\n`
}

function describeIngest (a: Record<string, unknown> & { name: string }): string {
  if (a.name === 'broker') {
    const on = [a.listen === null ? null : String(a.listen), a.tls === undefined ? null : `TLS ${String(a.tls)}`].filter((x) => x !== null)
    const certificate = a.certificate as { validTo?: string } | undefined
    const until = certificate?.validTo === undefined ? '' : `, certificate valid until ${certificate.validTo.slice(0, 10)}`
    const drops = Number(a.subscriberDrops ?? 0)
    return `broker on ${on.join(' and ')} (${count(Number(a.clients ?? 0))} sensors connected${until}` +
      (drops > 0 ? `, ${count(drops)} messages dropped for slow local subscribers)` : ')')
  }
  if (a.name === 'system') return `health readings every ${duration(Number(a.intervalMs) / 1000)}`
  const { name, ...rest } = a
  return `${name} ${JSON.stringify(rest)}`
}

/** `overflow 12, ttl 3`, or `none` when every count is 0. */
function tally (counts: Record<string, number>): string {
  const nonZero = Object.entries(counts).filter(([, n]) => n > 0)
  return nonZero.length === 0 ? 'none' : nonZero.map(([k, n]) => `${k} ${count(n)}`).join(', ')
}

function count (n: number): string {
  return n.toLocaleString('en-US')
}

function rate (n: number): string {
  return n >= 100 ? String(Math.round(n)) : n.toFixed(1)
}

export function bytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`
}

export function duration (seconds: number): string {
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`
  if (seconds < 60) return `${Math.round(seconds)}s`
  const s = Math.round(seconds)
  const d = Math.floor(s / 86_400)
  const h = Math.floor((s % 86_400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  if (d > 0) return `${d}d ${h}h`
  if (h > 0) return `${h}h ${m}m`
  return s % 60 === 0 ? `${m}m` : `${m}m ${s % 60}s`
}
