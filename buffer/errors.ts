/** Errors raised by the durable log. Codes are stable; the error table in docs/operations.md lists them. */
export type BufferErrorCode =
  | 'SLUICE_BUFFER_LOCKED'
  | 'SLUICE_BUFFER_NOT_OPEN'
  | 'SLUICE_BUFFER_OPEN_FAILED'
  | 'SLUICE_BUFFER_WRITE_FAILED'
  | 'SLUICE_BUFFER_CORRUPT_RECORD'
  | 'SLUICE_BUFFER_CORRUPT'
  | 'SLUICE_BUFFER_FULL'

export class BufferError extends Error {
  readonly code: BufferErrorCode

  constructor (code: BufferErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'BufferError'
    this.code = code
  }
}

/** The code of a LevelDB error, looking through abstract-level's LEVEL_DATABASE_NOT_OPEN wrapper. */
export function levelCode (err: unknown): string | undefined {
  const e = err as { code?: unknown, cause?: { code?: unknown } } | null
  const inner = e?.cause?.code
  if (typeof inner === 'string' && e?.code === 'LEVEL_DATABASE_NOT_OPEN') return inner
  return typeof e?.code === 'string' ? e.code : undefined
}

/**
 * Whether a LevelDB error means the database's files are damaged (so repairing or setting the
 * directory aside is the answer), as opposed to a lock, a permission or a full disk, which no
 * repair fixes. A truncated table file surfaces as an I/O error ("Invalid argument") on read.
 */
export function isDamage (err: unknown): boolean {
  const code = levelCode(err)
  if (code === 'LEVEL_CORRUPTION' || code === 'SLUICE_BUFFER_CORRUPT_RECORD' || code === 'SLUICE_BUFFER_CORRUPT') return true
  if (code !== 'LEVEL_IO_ERROR') return false
  const text = `${(err as Error).message} ${String((err as { cause?: Error }).cause?.message ?? '')}`
  return !/Permission denied|Read-only file system|No space left|Disk quota|Too many open files/i.test(text)
}
