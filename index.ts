/**
 * The package entry for code that receives what sluice sends upstream (`import { decodeBatch }
 * from 'sluice'`). The daemon itself is the `sluice` command (dist/daemon/bin.js).
 */
export { decodeBatch, BatchDecodeError, type Batch, type BatchRecord } from './adapters/formats/decode-batch.js'
export type { EpochAnnouncement, GapAnnouncement } from './adapters/contract.js'
