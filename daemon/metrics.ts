import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { type CommitInfo, GAP_REASONS } from '../buffer/index.js'
import type { StatusReport } from './status.js'

/** Every reason a reading can be dropped (the buffer's gap reasons): shown at 0 before any drop. */
export const DROP_REASONS = GAP_REASONS

/** What can be done about a damaged buffer (buffer/recover.ts): shown at 0 before it happens. */
export const RECOVERY_ACTIONS = ['repaired', 'set-aside'] as const

/**
 * One gateway's Prometheus metrics, in a registry of its own (never prom-client's global one, so
 * several gateways can live in one process, as in tests).
 *
 * Commit figures are fed by the buffer's `commit` event; everything else is set from a status
 * report at scrape time, so one scrape shows one consistent moment.
 */
export class GatewayMetrics {
  readonly registry = new Registry()
  /** bytes handed to LevelDB since start */
  writtenBytes = 0
  /** group commits since start */
  commits = 0
  private readonly m

  constructor () {
    const registers = [this.registry]
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers })
    const gauge = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
      new Gauge<L>({ name, help, labelNames, registers })
    this.m = {
      info: gauge('sluice_info', 'Always 1; the labels name this gateway, its buffer epoch and the sluice version.', ['gateway', 'epoch', 'version']),
      ready: gauge('sluice_ready', '1 when the gateway accepts readings (what /readyz answers), else 0.'),
      ingested: counter('sluice_ingested_readings_total', 'Readings written to the buffer (each given a seq), by ingest adapter.', ['adapter']),
      refused: counter('sluice_refused_total', 'Clients, publishes and subscriptions refused at ingest, by reason: a refused publish closes the client\'s connection; auth is a refused CONNECT, acl a publish (connection closed) or subscription (SUBACK 0x80) outside the client\'s ACL.', ['reason']),
      sensors: gauge('sluice_broker_connected_sensors', 'Sensors connected to the embedded broker.'),
      subscriberDrops: counter('sluice_broker_subscriber_dropped_total', 'Messages not delivered to a local subscriber of the embedded broker whose outgoing queue was full (ingest.broker.maxQueuedBytes).'),
      dropped: counter('sluice_dropped_readings_total', 'Buffered readings dropped without reaching the upstream, by reason; each drop is announced upstream by a gap event.', ['reason']),
      published: counter('sluice_upstream_published_messages_total', 'Messages published upstream, first sends and resends.'),
      acknowledged: counter('sluice_upstream_acknowledged_readings_total', 'Readings the upstream acknowledged (PUBACK) and the buffer then removed.'),
      events: counter('sluice_upstream_acknowledged_events_total', 'sluice\'s own events (epoch, gap) the upstream acknowledged.'),
      resent: counter('sluice_upstream_resent_readings_total', 'Readings published again after a reconnect: the receiver may see these twice.'),
      rejected: counter('sluice_upstream_rejected_total', 'Publishes the upstream refused (MQTT 5 PUBACK reason code >= 0x80), retried or not.'),
      deadLetters: gauge('sluice_dead_letters', 'Readings set aside (refused by the upstream past upstream.rejectRetries) and kept in the buffer for inspection.'),
      connected: gauge('sluice_upstream_connected', '1 while the upstream MQTT connection is up, else 0.'),
      reconnects: counter('sluice_upstream_reconnects_total', 'Upstream connections made after the first one.'),
      inFlight: gauge('sluice_upstream_inflight_messages', 'Messages published upstream and not yet acknowledged.'),
      backlog: gauge('sluice_backlog_readings', 'Readings in the buffer not yet acknowledged upstream.'),
      backlogBytes: gauge('sluice_backlog_bytes', 'Disk space the buffer takes, LevelDB\'s overhead included, as measured for buffer.maxBytes (space of acknowledged readings comes back at compaction).'),
      oldest: gauge('sluice_oldest_unsent_age_seconds', 'Age of the oldest reading not yet acknowledged upstream; 0 when the backlog is empty.'),
      lastSeq: gauge('sluice_last_seq', 'The last seq given to a reading in the current epoch.'),
      diskFree: gauge('sluice_disk_free_bytes', 'Free space on the buffer\'s volume (what an unprivileged writer may still use).'),
      diskSize: gauge('sluice_disk_size_bytes', 'Size of the buffer\'s volume.'),
      newEpochs: counter('sluice_new_epochs_total', 'New buffer epochs begun since start, by reason (power-loss, repaired, set-aside); each is announced upstream by an io.sluice.epoch event.', ['reason']),
      recoveries: counter('sluice_buffer_recoveries_total', 'Times the buffer was found damaged and repaired (action "repaired") or moved aside for a fresh one (action "set-aside"), since start.', ['action']),
      written: counter('sluice_buffer_written_bytes_total', 'Bytes written to the buffer (keys and values handed to LevelDB): the flash-wear figure, before LevelDB\'s own compaction writes.'),
      commitSeconds: new Histogram({
        name: 'sluice_commit_duration_seconds',
        help: 'Time to write one group commit to the buffer (with sync "always", fsync included); a sensor\'s PUBACK waits for it.',
        // From a fast SSD (~0.1 ms) to an SD card fsync under load (~hundreds of ms).
        buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
        registers
      }),
      commitReadings: new Histogram({
        name: 'sluice_commit_readings',
        help: 'Readings per group commit: how much writing the group commit saves.',
        buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
        registers
      })
    }
    for (const reason of DROP_REASONS) this.m.dropped.inc({ reason }, 0)
    for (const action of RECOVERY_ACTIONS) this.m.recoveries.inc({ action }, 0)
    // process_resident_memory_bytes, process_cpu_seconds_total, nodejs_eventloop_lag_seconds...:
    // the figures behind "memory stays flat however large the backlog" (docs/guarantees.md §5).
    collectDefaultMetrics({ register: this.registry })
  }

  /** One group commit finished (the buffer's `commit` event). */
  observeCommit (info: CommitInfo): void {
    this.commits++
    this.writtenBytes += info.bytes
    this.m.commitSeconds.observe(info.durationMs / 1000)
    this.m.commitReadings.observe(info.readings)
    this.m.written.inc(info.bytes)
  }

  get contentType (): string { return this.registry.contentType }

  /** The metrics text for one scrape, set from `report`. */
  async render (report: StatusReport): Promise<string> {
    const { m } = this
    m.info.reset()
    m.info.set({ gateway: report.gateway, epoch: report.buffer.epoch, version: report.version }, 1)
    m.ready.set(report.ready ? 1 : 0)
    setTotals(m.ingested, 'adapter', report.totals.ingested)
    setTotals(m.refused, 'reason', report.totals.refused)
    const broker = report.ingest.find((a) => a.name === 'broker')
    m.sensors.set(Number(broker?.clients ?? 0))
    setTotal(m.subscriberDrops, Number(broker?.subscriberDrops ?? 0))
    setTotals(m.dropped, 'reason', report.totals.dropped)
    setTotal(m.published, report.totals.published)
    setTotal(m.acknowledged, report.totals.forwarded)
    setTotal(m.events, report.totals.events)
    setTotal(m.resent, report.totals.resent)
    setTotal(m.rejected, report.totals.rejected)
    m.deadLetters.set(report.deadLetters)
    m.connected.set(report.upstream.connected ? 1 : 0)
    setTotal(m.reconnects, report.upstream.reconnects)
    m.inFlight.set(report.upstream.inFlight)
    const { backlog } = report.buffer
    m.backlog.set(backlog.readings)
    m.backlogBytes.set(backlog.bytes)
    m.oldest.set(backlog.oldestUnsentAgeSeconds ?? 0)
    m.lastSeq.set(report.buffer.lastSeq)
    const recoveries: Record<string, number> = Object.fromEntries(RECOVERY_ACTIONS.map((a) => [a, 0]))
    for (const r of report.buffer.recoveries) recoveries[r.action]++
    setTotals(m.recoveries, 'action', recoveries)
    setTotals(m.newEpochs, 'reason', report.totals.newEpochs)
    setOrNaN(m.diskFree, report.disk.freeBytes)
    setOrNaN(m.diskSize, report.disk.totalBytes)
    return await this.registry.metrics()
  }
}

/** A counter shown as a running total kept elsewhere (the gateway's own counters). */
function setTotal (counter: Counter, value: number): void {
  counter.reset()
  counter.inc(value)
}

function setTotals<L extends string> (counter: Counter<L>, label: L, values: Record<string, number>): void {
  counter.reset()
  for (const [key, value] of Object.entries(values)) counter.inc({ [label]: key } as Partial<Record<L, string>>, value)
}

/** A figure that could not be read is NaN (Prometheus' "no value"), never a misleading 0. */
function setOrNaN (gauge: Gauge, value: number | null): void {
  gauge.set(value ?? Number.NaN)
}
