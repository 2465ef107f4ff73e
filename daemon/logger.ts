import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino'
import { createRequire } from 'node:module'
import type { PrettyOptions } from 'pino-pretty'

export interface LoggerOptions {
  /** human-readable lines instead of JSON; default: when the destination is a terminal */
  pretty?: boolean
}

/**
 * JSON lines on stdout, which journald stores as they are; readable lines (pino-pretty) when
 * stdout is a terminal, as when an operator runs `sluice run` by hand.
 */
export function createLogger (level: LevelWithSilent, destination: NodeJS.WritableStream = process.stdout, options: LoggerOptions = {}): Logger {
  const pretty = options.pretty ?? (destination as { isTTY?: boolean }).isTTY === true
  // A reader that went away (journald restarted, `sluice run | head`) costs log lines, never the
  // daemon: an unhandled EPIPE would crash it with readings in flight.
  destination.on('error', () => {})
  return pino({
    level,
    base: { name: 'sluice' },
    // Never log a secret, whatever object a log call is handed (a config, an options object).
    redact: { paths: ['password', '*.password', '*.*.password', '*.*.*.password'], censor: '[redacted]' }
  }, pretty ? prettyDestination(destination) : destination)
}

/**
 * pino-pretty's formatter run in-line: synchronous, so no line is lost at exit, and no worker
 * thread. It formats the JSON pino made, after redaction.
 */
function prettyDestination (out: NodeJS.WritableStream): DestinationStream {
  // Loaded only for a terminal (42 files and about 1 MB of RSS that a daemon under systemd does without).
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as { prettyFactory: (options: PrettyOptions) => (line: string) => string }
  const format = prettyFactory({ colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' })
  return { write: (line: string) => { out.write(format(line)) } }
}
