export {
  DurableLog, type DurableLogOptions, type DurableLogEvents, type CommitInfo, type OpenReport,
  type AppendOptions, type AppendResult, type BufferHealth, type HealthReason, type DropInfo
} from './log.js'
export { BufferError, type BufferErrorCode } from './errors.js'
export type { LogEntry, ReadingInput, EpochEventData, EpochReason, GapData, GapReason } from './codec.js'
export { EPOCH_REASONS, GAP_REASONS } from './codec.js'
export type { BufferBounds } from './bounds.js'
export type { RecoveryReport } from './recover.js'
export { readingSeqAtOrBefore } from './keys.js'
