import { pino, type Logger, type LevelWithSilent } from 'pino'

/** JSON lines on stdout, which journald stores as they are. */
export function createLogger (level: LevelWithSilent, destination: NodeJS.WritableStream = process.stdout): Logger {
  return pino({
    level,
    base: { name: 'sluice' },
    // Never log a secret, whatever object a log call is handed.
    redact: { paths: ['password', '*.password', 'upstream.password'], censor: '[redacted]' }
  }, destination)
}
