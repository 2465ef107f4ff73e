import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GAP_REASONS } from '../buffer/index.js'
import type { Rates } from './rates.js'
import { readiness } from './readiness.js'
import type { GatewayStatus, GatewayView } from './view.js'

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

/** The backlog as the report and the health readings show it: one seek for its oldest reading. */
export async function backlogOf (view: GatewayView): Promise<StatusReport['buffer']['backlog']> {
  const oldest = await view.oldestUnsentTime().catch(() => null)
  const stats = view.stats()
  return {
    readings: stats.backlog,
    bytes: stats.buffer.bytes,
    oldestUnsentAgeSeconds: oldest === null ? null : Math.max(0, (view.now() - oldest) / 1000)
  }
}

/** Gathers the report from a running gateway: cheap (two statfs and one seek). */
export async function buildStatus (view: GatewayView): Promise<StatusReport> {
  const { config } = view
  const path = config.buffer.path
  const stats = view.stats()
  const [ready, backlog, disk] = await Promise.all([
    readiness(view),
    backlogOf(view),
    view.diskSpace().catch(() => null)
  ])
  const now = view.now()
  // Every gap reason (docs/receiving.md) is shown, at 0 before any drop.
  const dropped: Record<string, number> = Object.fromEntries(GAP_REASONS.map((r) => [r, 0]))
  Object.assign(dropped, stats.dropped)
  const report: StatusReport = {
    gateway: config.gateway.id,
    version: packageVersion(),
    state: view.status,
    ready: ready.ready,
    reasons: ready.reasons,
    time: new Date(now).toISOString(),
    uptimeSeconds: Math.round(process.uptime()),
    buffer: {
      path,
      status: stats.buffer.status,
      epoch: stats.epoch,
      lastSeq: stats.lastSeq,
      backlog,
      writtenBytes: stats.writtenBytes,
      commits: stats.commits,
      recoveries: stats.recoveries.map((r) => ({
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
    ingest: view.ingest().map((a) => ({ name: a.name, ...a.info })),
    rates: stats.rates,
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
    recentDeadLetters: (await view.deadLetters(20)).map((d) => ({
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
