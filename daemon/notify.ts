import { spawn } from 'node:child_process'
import type { Logger } from 'pino'

/**
 * The systemd notification protocol (sd_notify(3)) for a unit of `Type=notify`: READY=1 once the
 * gateway is started, STOPPING=1 when a stop begins, WATCHDOG=1 every half `WatchdogSec`. Only
 * when systemd asks: NOTIFY_SOCKET set (it is for `Type=notify` units), WATCHDOG_USEC set (it is
 * with `WatchdogSec=`), and WATCHDOG_PID, when set, naming this process.
 *
 * Why a helper process: NOTIFY_SOCKET is a Unix datagram socket and Node's `dgram` cannot send
 * to one; the npm packages that can (sd-notify, unix-dgram) are native addons that compile on
 * the Pi. `systemd-notify` is part of systemd itself, so it is there wherever NOTIFY_SOCKET is.
 * The unit needs `NotifyAccess=all`, since the message comes from the helper, not the main
 * process. The race that made this unreliable (the helper exiting before systemd looks up which
 * unit its PID belongs to, systemd#2739) is gone since systemd 246: systemd-notify sends a
 * BARRIER=1 after the message and waits until systemd has processed both.
 */
export interface Notifier {
  /** true when systemd asked for notifications (NOTIFY_SOCKET set) */
  readonly enabled: boolean
  /** the watchdog ping period in ms, or null when systemd asked for no watchdog */
  readonly watchdogMs: number | null
  /** starts the watchdog pings (when asked for); they go on until close() */
  startWatchdog: () => void
  /** READY=1: the buffer is open and sensors can connect */
  ready: (status?: string) => void
  /** STOPPING=1: a stop has begun (the drain may take a few seconds) */
  stopping: (status?: string) => void
  /** stops the watchdog and waits (bounded) for messages already queued to be sent */
  close: () => Promise<void>
}

export interface NotifierOptions {
  env: NodeJS.ProcessEnv
  logger: Logger
  /** this process's id, compared with WATCHDOG_PID */
  pid?: number
  /** the helper to run; found on PATH */
  command?: string
  /** longest wait for one helper run before it is killed, in ms */
  timeoutMs?: number
}

/** systemd-notify waits up to 5 s for its barrier; past this something is wrong. */
const HELPER_TIMEOUT_MS = 10_000

/** A notifier for the environment the process was started in; a no-op outside systemd. */
export function createNotifier (options: NotifierOptions): Notifier {
  const socket = options.env.NOTIFY_SOCKET
  if (socket === undefined || socket === '') return disabled
  return new SystemdNotifier(options, watchdogPeriodMs(options.env, options.pid ?? process.pid, options.logger))
}

const disabled: Notifier = {
  enabled: false,
  watchdogMs: null,
  startWatchdog: () => {},
  ready: () => {},
  stopping: () => {},
  close: async () => {}
}

/**
 * Half of WATCHDOG_USEC, in ms, as sd_watchdog_enabled(3) reads it: null when it is unset,
 * or when WATCHDOG_PID names another process (the variable was inherited, not meant for us).
 */
export function watchdogPeriodMs (env: NodeJS.ProcessEnv, pid: number, logger?: Logger): number | null {
  const usecText = env.WATCHDOG_USEC
  if (usecText === undefined || usecText === '') return null
  const watchdogPid = env.WATCHDOG_PID
  if (watchdogPid !== undefined && watchdogPid !== '' && Number(watchdogPid) !== pid) return null
  const usec = Number(usecText)
  if (!Number.isSafeInteger(usec) || usec <= 0) {
    logger?.warn({ WATCHDOG_USEC: usecText }, 'WATCHDOG_USEC is not a positive integer: no watchdog pings')
    return null
  }
  // Half the timeout, as sd_watchdog_enabled(3) recommends: one late ping is not yet a kill.
  return Math.max(1, Math.floor(usec / 2000))
}

type State = 'open' | 'closing' | 'closed'

class SystemdNotifier implements Notifier {
  readonly enabled = true
  readonly watchdogMs: number | null
  private readonly options: NotifierOptions
  private state: State = 'open'
  private timer: NodeJS.Timeout | null = null
  /** messages are sent one at a time, in order: STOPPING never overtakes READY */
  private queue: Promise<void> = Promise.resolve()
  private pending = 0
  private reportedFailure = false

  constructor (options: NotifierOptions, watchdogMs: number | null) {
    this.options = options
    this.watchdogMs = watchdogMs
  }

  startWatchdog (): void {
    if (this.watchdogMs === null || this.timer !== null || this.state !== 'open') return
    this.timer = setInterval(() => {
      // A ping still waiting behind other messages is as good as a new one: never pile them up.
      if (this.pending === 0) this.send(['WATCHDOG=1'])
    }, this.watchdogMs)
    // The pings never keep the process alive on their own: the gateway's sockets do that.
    this.timer.unref()
    this.send(['WATCHDOG=1'])
  }

  ready (status = 'ready'): void {
    this.send(['READY=1', `STATUS=${status}`])
  }

  stopping (status = 'stopping'): void {
    this.send(['STOPPING=1', `STATUS=${status}`])
  }

  async close (): Promise<void> {
    if (this.state !== 'open') return await this.queue
    this.state = 'closing'
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.queue
    this.state = 'closed'
  }

  private send (assignments: string[]): void {
    if (this.state === 'closed') return
    this.pending++
    this.queue = this.queue.then(async () => await this.run(assignments)).finally(() => { this.pending-- })
  }

  /** Runs the helper once; never rejects (a failed notification is logged, not fatal). */
  private async run (assignments: string[]): Promise<void> {
    const { env } = this.options
    const command = this.options.command ?? 'systemd-notify'
    await new Promise<void>((resolve) => {
      let stderr = ''
      const child = spawn(command, assignments, { env, stdio: ['ignore', 'ignore', 'pipe'] })
      const timer = setTimeout(() => { child.kill('SIGKILL') }, this.options.timeoutMs ?? HELPER_TIMEOUT_MS)
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
      child.on('error', (err) => {
        clearTimeout(timer)
        this.failed(assignments, err.message)
        resolve()
      })
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        if (code !== 0) this.failed(assignments, signal !== null ? `killed by ${signal}` : `exit ${String(code)}: ${stderr.trim()}`)
        resolve()
      })
    })
  }

  private failed (assignments: string[], reason: string): void {
    const { logger } = this.options
    const fields = { code: 'SLUICE_NOTIFY_FAILED', notification: assignments[0], reason }
    // Once loudly: a Type=notify unit whose READY=1 never arrives is killed at TimeoutStartSec, and
    // this line is what says why. Watchdog pings that fail every 15 s then stay quiet.
    if (!this.reportedFailure) {
      this.reportedFailure = true
      logger.error(fields, 'could not notify systemd through systemd-notify; the unit needs NotifyAccess=all and systemd >= 246')
    } else {
      logger.debug(fields, 'could not notify systemd')
    }
  }
}
