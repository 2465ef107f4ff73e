import { parseArgs } from 'node:util'
import type { Logger } from 'pino'
import { ConfigError, loadConfig, redactConfig } from '../config/index.js'
import type { Gateway } from './gateway.js'
import { createLogger } from './logger.js'
import { createNotifier } from './notify.js'
import { Reloader } from './reload.js'
import { UsageError, exitCodeFor } from './errors.js'

export const DEFAULT_CONFIG = '/etc/sluice/sluice.yaml'

/** What the commands need of the process: its output streams and its signals. */
export interface ProcessLike {
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
  env: NodeJS.ProcessEnv
  /** where `hash-password` reads the password; process.stdin when not given */
  stdin?: NodeJS.ReadableStream
  on: (signal: 'SIGTERM' | 'SIGINT' | 'SIGHUP', listener: () => void) => unknown
  off: (signal: 'SIGTERM' | 'SIGINT' | 'SIGHUP', listener: () => void) => unknown
}

const USAGE = `usage: sluice <command> [options]

commands:
  run   -c FILE    run the daemon in the foreground (what systemd starts)
  check -c FILE    validate the config and print the effective config, secrets redacted
  status [--admin URL]
                   a summary from the running daemon's admin endpoint; exit 0 when ready, 1 when
                   not ready or unreachable (URL default: admin.listen of -c FILE or of the
                   default config, else http://127.0.0.1:9464)
  hash-password    reads a password on stdin, prints the hash for a broker user's passwordHash
  demo             the whole loop on this machine: sensors, gateway, an upstream, an outage

options:
  -c, --config FILE   the config file (default ${DEFAULT_CONFIG})
      --admin URL     the admin endpoint, for status
  -h, --help          this text
`

/** Runs one command line; resolves to the process exit code (0 ok, 1 failure, 2 usage/config). */
export async function main (argv: string[], proc: ProcessLike): Promise<number> {
  try {
    const { positionals, values } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        admin: { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    })
    const [command, ...rest] = positionals
    if (values.help === true || command === undefined) {
      proc.stdout.write(USAGE)
      return command === undefined && values.help !== true ? 2 : 0
    }
    if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`)
    const configPath = values.config ?? DEFAULT_CONFIG
    switch (command) {
      case 'run':
        return await run(configPath, proc)
      case 'check':
        return await check(configPath, proc)
      case 'status': {
        const { statusCommand } = await import('./status-command.js')
        return await statusCommand({ admin: values.admin, config: values.config, defaultConfig: DEFAULT_CONFIG, out: proc.stdout, err: proc.stderr })
      }
      case 'hash-password': {
        const { hashPassword, readPassword } = await import('../adapters/password-hash.js')
        const password = await readPassword(proc.stdin ?? process.stdin, proc.stderr)
        if (password === '') throw new UsageError('hash-password: no password on stdin (try: sluice hash-password < file)')
        proc.stdout.write(`${await hashPassword(password)}\n`)
        return 0
      }
      case 'demo': {
        const { runDemo } = await import('./demo.js')
        return await runDemo({ out: proc.stdout })
      }
      default:
        throw new UsageError(`unknown command: ${command}`)
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      proc.stderr.write(`sluice: invalid config:\n${err.format()}\n`)
    } else if (err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      proc.stderr.write(`sluice: ${(err as Error).message}\n\n${USAGE}`)
      return 2
    } else {
      proc.stderr.write(`sluice: ${(err as Error).message}\n`)
    }
    return exitCodeFor(err)
  }
}

async function check (configPath: string, proc: ProcessLike): Promise<number> {
  const config = await loadConfig(configPath, proc.env)
  proc.stdout.write(`${JSON.stringify(redactConfig(config), null, 2)}\n`)
  return 0
}

/** Runs the daemon until SIGTERM or SIGINT, then stops cleanly. */
async function run (configPath: string, proc: ProcessLike): Promise<number> {
  const config = await loadConfig(configPath, proc.env)
  const logger = createLogger(config.log.level, proc.stdout)
  // systemd (Type=notify): pings from now on, READY=1 once started, STOPPING=1 when stopping.
  const notifier = createNotifier({ env: proc.env, logger: logger.child({ part: 'systemd' }) })
  notifier.startWatchdog()
  // The signal handlers come first: a start can take long (a repair of a large buffer), and a
  // SIGTERM meanwhile must be a graceful stop (once the start is done), not the default death.
  let reloader: Reloader | null = null
  let reloadPending = false
  let stopRequested = false
  let onStop = (): void => {}
  const stopped = new Promise<void>((resolve) => { onStop = resolve })
  const stop = (): void => {
    if (stopRequested) return
    stopRequested = true
    logger.info(reloader === null ? { during: 'start' } : {}, 'stopping')
    notifier.stopping()
    onStop()
  }
  const hup = (): void => {
    if (reloader === null) reloadPending = true // reloaded once started
    else void reloader.reload() // never rejects: it logs what happened
  }
  proc.on('SIGTERM', stop)
  proc.on('SIGINT', stop)
  proc.on('SIGHUP', hup)
  const removeHandlers = (): void => {
    proc.off('SIGTERM', stop)
    proc.off('SIGINT', stop)
    proc.off('SIGHUP', hup)
  }
  let gateway: Gateway
  try {
    // Loaded here, not at the top: the other commands (`sluice status` above all) need none of
    // the daemon's parts, its Prometheus client among them.
    const { Gateway } = await import('./gateway.js')
    gateway = await Gateway.start({ config, logger })
  } catch (err) {
    removeHandlers()
    // A ConfigError's frozen issue list defeats pino's error serializer: log its code and lines.
    const detail = err instanceof ConfigError ? { code: err.code, errors: err.format() } : { err }
    logger.fatal(detail, 'sluice could not start')
    await notifier.close()
    throw err
  }
  reloader = new Reloader({ configPath, env: proc.env, logger, target: gateway, initial: config })
  if (!stopRequested) {
    notifier.ready()
    if (reloadPending) void reloader.reload()
  }
  await stopped
  removeHandlers()
  const code = await closeGateway(gateway, logger)
  await notifier.close()
  return code
}

/** Stops the gateway; its exit code: 0, or 1 when a step of the shutdown failed (each is logged). */
export async function closeGateway (gateway: Pick<Gateway, 'close'>, logger: Logger): Promise<number> {
  try {
    await gateway.close()
    return 0
  } catch (err) {
    logger.error({ code: (err as { code?: string }).code, err }, 'sluice did not stop cleanly')
    return exitCodeFor(err)
  }
}
