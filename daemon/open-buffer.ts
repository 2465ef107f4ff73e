import type { Logger } from 'pino'
import type { SluiceConfig } from '../config/index.js'
import { DurableLog, type RecoveryReport, readingSeqAtOrBefore } from '../buffer/index.js'
import { DeadLetterStore } from '../buffer/dead-letters.js'

/** Dead letters kept for inspection; the oldest already announced go first. */
const DEAD_LETTERS_KEPT = 1000

/** What the buffer is opened with besides the config (tests inject faults and clocks). */
export interface OpenBufferOptions {
  config: SluiceConfig
  logger: Logger
  bootId: string
  /** milliseconds since 1970 */
  clock?: () => number
  beforeCommit?: (readings: number) => Promise<void>
  beforeAck?: (upTo: number) => Promise<void>
}

/**
 * Opens the buffer and its store of dead letters, says what opening found (damage, a power loss)
 * and logs the buffer's state changes from then on. Nothing is left open when it throws.
 */
export async function openBuffer (o: OpenBufferOptions): Promise<{ log: DurableLog, deadLetters: DeadLetterStore }> {
  const { config, logger } = o
  const log = await DurableLog.open({
    path: config.buffer.path,
    sync: config.buffer.sync,
    syncIntervalMs: config.buffer.syncInterval,
    bootId: o.bootId,
    clock: o.clock,
    beforeCommit: o.beforeCommit,
    beforeAck: o.beforeAck,
    bounds: {
      maxBytes: config.buffer.maxBytes,
      minFreeDisk: config.buffer.minFreeDisk,
      overflow: config.buffer.overflow,
      ttlMs: config.buffer.ttl
    }
  })
  const { report } = log
  if (report.recovery !== undefined) logRecovery(logger, report.recovery)
  watchBuffer(log, logger)
  if (report.newEpoch !== undefined && report.newEpoch.reason === 'power-loss') {
    logger.warn(report.newEpoch, 'the machine rebooted after an unclean stop: unsynced readings may be lost, continuing under a new epoch')
  }
  try {
    const deadLetters = await DeadLetterStore.open(log.sublevel('dead-letters'), {
      maxKept: DEAD_LETTERS_KEPT,
      // The ack cursor is a position (seq * 4 + slot, buffer/keys.ts): the last seq it covers.
      ackedSeq: readingSeqAtOrBefore(log.ackPos)
    })
    return { log, deadLetters }
  } catch (err) {
    await log.close()
    throw err
  }
}

/** Says what was done about a damaged buffer: an operator must know data was set aside. */
function logRecovery (logger: Logger, recovery: RecoveryReport): void {
  const { action, problem, setAsideTo, files, bytes, lostSeqs } = recovery
  if (action === 'repaired') {
    logger.error({ code: 'SLUICE_BUFFER_CORRUPT', problem, lostSeqs },
      `the buffer was damaged and LevelDB repaired it; ${lostSeqs} readings could not be saved and are announced upstream as a gap (reason "corrupt"); continuing under a new epoch`)
  } else {
    logger.error({ code: 'SLUICE_BUFFER_CORRUPT', problem, setAsideTo, files, bytes },
      `the buffer was damaged beyond repair: its ${files} files (${bytes} bytes) were moved to ${String(setAsideTo)} (as they were before the repair attempt in its before-repair/ folder; delete them once inspected); started a fresh buffer`)
  }
}

/** The minimum time between two log lines about drops of one reason: a full buffer drops all the time. */
const DROP_LOG_INTERVAL_MS = 60_000

/**
 * Logs the buffer's state changes once each: when it stops accepting readings and why (full, low
 * disk, failing writes, a repair), when it accepts again, a repair while running, and drops (at
 * most one line a minute per reason, with the running count).
 */
function watchBuffer (log: DurableLog, logger: Logger): void {
  const child = logger.child({ part: 'buffer' })
  log.on('health', (health) => {
    if (health.accepting) child.info('the buffer accepts readings again')
    else child.warn({ code: health.code, reason: health.reason }, health.detail ?? 'the buffer does not accept readings')
  })
  log.on('recovered', (report) => { logRecovery(child, report) })
  const lastLogged = new Map<string, number>()
  log.on('dropped', (info) => {
    const now = Date.now()
    if (now - (lastLogged.get(info.reason) ?? Number.NEGATIVE_INFINITY) < DROP_LOG_INTERVAL_MS) return
    lastLogged.set(info.reason, now)
    child.warn({ reason: info.reason, from: info.from, to: info.to, total: log.dropped[info.reason] },
      `readings dropped (${info.reason}); each drop is announced upstream by a gap event`)
  })
}
