/** Errors raised by the durable log. Codes are stable; the README's error table lists them. */
export type BufferErrorCode =
  | 'SLUICE_BUFFER_LOCKED'
  | 'SLUICE_BUFFER_NOT_OPEN'
  | 'SLUICE_BUFFER_OPEN_FAILED'
  | 'SLUICE_BUFFER_WRITE_FAILED'
  | 'SLUICE_BUFFER_CORRUPT_RECORD'

export class BufferError extends Error {
  readonly code: BufferErrorCode

  constructor (code: BufferErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'BufferError'
    this.code = code
  }
}
