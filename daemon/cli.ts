import { parseArgs } from 'node:util'
import { ConfigError, loadConfig, redactConfig } from '../config/index.js'
import { Gateway } from './gateway.js'
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
        const { statusCommand } = await import('./status.js')
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
  let gateway: Gateway
  try {
    gateway = await Gateway.start({ config, logger })
  } catch (err) {
    // A ConfigError's frozen issue list defeats pino's error serializer: log its code and lines.
    const detail = err instanceof ConfigError ? { code: err.code, errors: err.format() } : { err }
    logger.fatal(detail, 'sluice could not start')
    await notifier.close()
    throw err
  }
  notifier.ready()
  const reloader = new Reloader({ configPath, env: proc.env, logger, target: gateway, initial: config })
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      proc.off('SIGTERM', stop)
      proc.off('SIGINT', stop)
      proc.off('SIGHUP', hup)
      logger.info('stopping')
      notifier.stopping()
      resolve()
    }
    const hup = (): void => { void reloader.reload() } // never rejects: it logs what happened
    proc.on('SIGTERM', stop)
    proc.on('SIGINT', stop)
    proc.on('SIGHUP', hup)
  })
  await gateway.close()
  await notifier.close()
  return 0
}
