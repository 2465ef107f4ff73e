import type { BufferErrorCode, BufferHealth } from '../buffer/index.js'
import type { ConfigError } from '../config/index.js'
import type { UpstreamRejection } from '../adapters/contract.js'
import type { BatchDecodeError } from '../adapters/formats/decode-batch.js'

/**
 * The catalogue of sluice's error codes (the error table in docs/operations.md mirrors it). Parts raise
 * their own error classes (ConfigError in config/, BufferError in buffer/); the process maps
 * each code to an exit code here.
 */
export const errorCodes = {
  SLUICE_CONFIG_INVALID: { exit: 2, meaning: 'the config file is missing, unreadable or invalid; every error is listed with its key path' },
  SLUICE_BUFFER_LOCKED: { exit: 2, meaning: 'another sluice process has the buffer directory open (LevelDB lock)' },
  SLUICE_BUFFER_OPEN_FAILED: { exit: 1, meaning: 'the buffer directory could not be opened' },
  SLUICE_BUFFER_NOT_OPEN: { exit: 1, meaning: 'a reading arrived while the buffer was closing or closed' },
  SLUICE_BUFFER_WRITE_FAILED: { exit: 1, meaning: 'a write to the buffer failed (disk full, I/O error): logged and shown by /readyz; readings are held back and the same write is retried until it succeeds' },
  // -- buffer bounds: logged and shown by /readyz, never thrown at start
  SLUICE_BUFFER_FULL: { exit: 1, meaning: 'the buffer reached buffer.maxBytes, or its volume has less than buffer.minFreeDisk free: with overflow "block" PUBACKs are held back until space frees' },
  SLUICE_BUFFER_CORRUPT: { exit: 1, meaning: 'the buffer\'s LevelDB was damaged: it was repaired (what was lost is announced by gap events with reason "corrupt"), or moved aside to <path>.corrupt-<time> and a fresh buffer started' },
  SLUICE_BUFFER_CORRUPT_RECORD: { exit: 1, meaning: 'a stored record could not be decoded' },
  SLUICE_USAGE: { exit: 2, meaning: 'the command line is wrong' },
  SLUICE_SHUTDOWN_FAILED: { exit: 1, meaning: 'a step of the shutdown failed (saving the ack cursor, closing the buffer, ...): every other step still ran; each failure is logged' },
  // -- observability. Logged, never thrown: sluice goes on running without its endpoint.
  SLUICE_ADMIN_LISTEN_FAILED: { exit: 1, meaning: 'the admin endpoint could not listen on admin.listen (port in use, bad address); retried on SIGHUP' },
  // Logged, never thrown: sluice goes on running; under Type=notify systemd may then time the start out.
  SLUICE_NOTIFY_FAILED: { exit: 1, meaning: 'systemd-notify could not be run or could not reach systemd (READY/STOPPING/WATCHDOG)' },
  // -- upstream. A bad upstream.ca/cert/key file is SLUICE_CONFIG_INVALID (exit 2) at start.
  // Logged and counted, never thrown: the message is retried, then set aside (dead letter + gap event).
  SLUICE_UPSTREAM_REJECTED: { exit: 1, meaning: 'the upstream refused a message (MQTT 5 PUBACK reason code >= 0x80); retried upstream.rejectRetries times, then set aside as a dead letter and announced by a gap event (reason "rejected")' },
  // Thrown by decodeBatch (the package's export for receivers), never by the daemon.
  SLUICE_BATCH_INVALID: { exit: 1, meaning: 'decodeBatch was given bytes that are not a cbor-batch message' }
} as const satisfies Record<RaisedCode, { exit: 1 | 2, meaning: string }>

/**
 * Every code a part raises or logs, from the part's own list: a code added there without an
 * entry here does not compile.
 */
type RaisedCode =
  | BufferErrorCode
  | NonNullable<BufferHealth['code']>
  | ConfigError['code']
  | UpstreamRejection['code']
  | BatchDecodeError['code']
  | UsageError['code'] | ShutdownError['code']
  // logged only, by the admin endpoint and the systemd notifier
  | 'SLUICE_ADMIN_LISTEN_FAILED' | 'SLUICE_NOTIFY_FAILED'

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

/** One or more steps of a shutdown failed; the others ran. */
export class ShutdownError extends AggregateError {
  readonly code = 'SLUICE_SHUTDOWN_FAILED'
}
