/**
 * The catalogue of sluice's error codes (the README's error table mirrors it). Parts raise
 * their own error classes (ConfigError in config/, BufferError in buffer/); the process maps
 * each code to an exit code here.
 */
export const errorCodes = {
  SLUICE_CONFIG_INVALID: { exit: 2, meaning: 'the config file is missing, unreadable or invalid; every error is listed with its key path' },
  SLUICE_BUFFER_LOCKED: { exit: 2, meaning: 'another sluice process has the buffer directory open (LevelDB lock)' },
  SLUICE_BUFFER_OPEN_FAILED: { exit: 1, meaning: 'the buffer directory could not be opened' },
  SLUICE_BUFFER_NOT_OPEN: { exit: 1, meaning: 'a reading arrived while the buffer was closing or closed' },
  SLUICE_BUFFER_WRITE_FAILED: { exit: 1, meaning: 'a write to the buffer failed; the log stops accepting readings' },
  SLUICE_BUFFER_CORRUPT_RECORD: { exit: 1, meaning: 'a stored record could not be decoded' },
  SLUICE_USAGE: { exit: 2, meaning: 'the command line is wrong' }
} as const

export type ErrorCode = keyof typeof errorCodes

/** The exit code for an error: its catalogue entry's, else 1 (a runtime failure). */
export function exitCodeFor (err: unknown): number {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string' && code in errorCodes) return errorCodes[code as ErrorCode].exit
  return 1
}

export class UsageError extends Error {
  readonly code = 'SLUICE_USAGE'
}
