export { DurableLog, type DurableLogOptions, type DurableLogEvents, type CommitInfo, type OpenReport } from './log.js'
export { BufferError, type BufferErrorCode } from './errors.js'
export type { LogEntry, ReadingInput, EpochEventData } from './codec.js'
export { readingSeqAtOrBefore } from './keys.js'
