import { existsSync, readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isIPv6 } from 'node:net'
import { ConfigError, parseYaml, validateConfig, type ListenAddress } from '../config/index.js'
import { DROP_REASONS, type Rates } from './metrics.js'
import type { Gateway, GatewayStatus } from './gateway.js'
import { UsageError } from './errors.js'

/**
 * The `/status` document (JSON) and `sluice status`, which prints it for a person. The same
 * report feeds `/metrics`, so both always agree.
 */
export interface StatusReport {
  gateway: string
  version: string
  state: GatewayStatus
  /** the gateway accepts readings; otherwise `reasons` says why not */
  ready: boolean
  reasons: string[]
  /** when the report was made (RFC 3339) */
  time: string
  /** seconds since the process started */
  uptimeSeconds: number
  buffer: {
    path: string
    /** the buffer's lifecycle: opening | open | closing | closed */
    status: string
    epoch: string
    /** the last seq given to a reading */
    lastSeq: number
    backlog: {
      /** readings not yet acknowledged upstream */
      readings: number
      /** the buffer's size on disk, LevelDB's overhead included (what buffer.maxBytes bounds) */
      bytes: number
      /** age of the oldest reading not yet acknowledged upstream; null when the backlog is empty */
      oldestUnsentAgeSeconds: number | null
    }
    /** bytes written to the buffer since start (the flash-wear figure) */
    writtenBytes: number
    commits: number
    /**
     * what was done about damage since start, oldest first: `repaired` (lostSeqs announced as
     * gaps with reason corrupt) or `set-aside` (the damaged files moved to setAsideTo)
     */
    recoveries: Array<{ at: string, action: 'repaired' | 'set-aside', problem: string, lostSeqs: number, setAsideTo: string | null, files: number, bytes: number }>
  }
  /** the volume the buffer is on */
  disk: { path: string, freeBytes: number | null, totalBytes: number | null }
  upstream: { url: string, connected: boolean, connections: number, reconnects: number, inFlight: number }
  /** each ingest adapter: name, and what it listens on or reads from */
  ingest: Array<Record<string, unknown> & { name: string }>
  rates: Rates
  totals: {
    /** readings written to the buffer, by ingest adapter */
    ingested: Record<string, number>
    /** readings the upstream acknowledged */
    forwarded: number
    /** sluice's own events (epoch, gap) the upstream acknowledged */
    events: number
    /** messages published upstream, resends included */
    published: number
    /** readings published again after a reconnect */
    resent: number
    /** refusals by the upstream (MQTT 5 PUBACK reason >= 0x80), retried or not */
    rejected: number
    refused: Record<string, number>
    dropped: Record<string, number>
    /** new epochs begun since start, by reason (power-loss, repaired, set-aside) */
    newEpochs: Record<string, number>
  }
  /** readings set aside (refused by the upstream) and kept for inspection */
  deadLetters: number
  /** the newest of them (at most 20), without their payloads */
  recentDeadLetters: Array<{ seq: number, epoch: string, topic: string, time: string, setAsideAt: string, reason: string, reasonCode: number | null, attempts: number, bytes: number }>
}

/** Gathers the report from a running gateway: cheap (two statfs and one seek). */
export async function buildStatus (gateway: Gateway): Promise<StatusReport> {
  const { config } = gateway
  const path = config.buffer.path
  const stats = gateway.stats()
  const [readiness, oldest, disk] = await Promise.all([
    gateway.readiness(),
    gateway.oldestUnsentTime().catch(() => null),
    gateway.diskSpace().catch(() => null)
  ])
  const bytes = gateway.bufferBytes()
  const now = gateway.now()
  // Every gap reason (docs/receiving.md) is shown, at 0 before any drop.
  const dropped: Record<string, number> = Object.fromEntries(DROP_REASONS.map((r) => [r, 0]))
  Object.assign(dropped, gateway.drops())
  const report: StatusReport = {
    gateway: config.gateway.id,
    version: packageVersion(),
    state: gateway.status,
    ready: readiness.ready,
    reasons: readiness.reasons,
    time: new Date(now).toISOString(),
    uptimeSeconds: Math.round(process.uptime()),
    buffer: {
      path,
      status: gateway.bufferStatus,
      epoch: stats.epoch,
      lastSeq: stats.lastSeq,
      backlog: {
        readings: stats.backlog,
        bytes,
        oldestUnsentAgeSeconds: oldest === null ? null : Math.max(0, (now - oldest) / 1000)
      },
      writtenBytes: gateway.metrics.writtenBytes,
      commits: gateway.metrics.commits,
      recoveries: gateway.recoveries.map((r) => ({
        at: new Date(r.at).toISOString(),
        action: r.action,
        problem: r.problem,
        lostSeqs: r.lostSeqs,
        setAsideTo: r.setAsideTo ?? null,
        files: r.files,
        bytes: r.bytes
      }))
    },
    disk: { path, freeBytes: disk?.freeBytes ?? null, totalBytes: disk?.totalBytes ?? null },
    upstream: {
      // The schema refuses credentials in the URL: it is safe to show.
      url: config.upstream.url,
      connected: stats.upstreamConnected,
      connections: stats.upstreamConnections,
      reconnects: Math.max(0, stats.upstreamConnections - 1),
      inFlight: stats.inFlight
    },
    ingest: gateway.ingestInfo(),
    rates: gateway.rates(),
    totals: {
      ingested: stats.ingested,
      forwarded: stats.forwarded,
      events: stats.events,
      published: stats.published,
      resent: stats.resent,
      rejected: stats.rejected,
      refused: { ...stats.refused },
      dropped,
      newEpochs: stats.newEpochs
    },
    deadLetters: stats.deadLetters,
    recentDeadLetters: (await gateway.deadLetters(20)).map((d) => ({
      seq: d.seq,
      epoch: d.epoch,
      topic: d.topic,
      time: new Date(d.time).toISOString(),
      setAsideAt: new Date(d.at).toISOString(),
      reason: d.reason,
      reasonCode: d.reasonCode,
      attempts: d.attempts,
      bytes: d.payload.byteLength
    }))
  }
  return report
}

let version: string | undefined

/** sluice's version from its package.json (found upwards from here: works from dist/ and from source). */
export function packageVersion (): string {
  if (version !== undefined) return version
  version = 'unknown'
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const file = join(dir, 'package.json')
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string, version?: string }
        if (pkg.name === 'sluice' && typeof pkg.version === 'string') return (version = pkg.version)
      } catch {}
    }
    const parent = dirname(dir)
    if (parent === dir) return version
    dir = parent
  }
}

// ------------------------------------------------------------------ `sluice status`

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
 * 1 when it is not ready or cannot be reached (the output says which).
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
