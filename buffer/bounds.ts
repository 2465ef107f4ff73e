import { readdir, stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'

/** What the operator allows the buffer (config `buffer.*`, SPEC section 4). */
export interface BufferBounds {
  /** most bytes the buffer's directory may hold, as the disk sees it */
  maxBytes: number
  /** bytes to leave free on the buffer's volume */
  minFreeDisk: number
  /** what a full buffer does */
  overflow: 'block' | 'drop-oldest' | 'drop-newest'
  /** readings older than this (in buffer time, see clock.ts) are dropped; 0: never */
  ttlMs: number
}

export const UNBOUNDED: BufferBounds = { maxBytes: Number.POSITIVE_INFINITY, minFreeDisk: 0, overflow: 'block', ttlMs: 0 }

/**
 * LevelDB's sizes scaled to the bound. LevelDB keeps up to `writeBufferSize` in its write-ahead
 * log before it writes a table, and only then can deleted entries give their space back; and its
 * level 0 holds up to 8 such tables before it slows writes, all of which one compaction may
 * rewrite. With its default 4 MiB a small buffer could never free anything; 1/64 of the bound
 * (64 KiB to 4 MiB) keeps both small and still writes tables of a useful size.
 */
export function levelSizes (maxBytes: number): { writeBufferSize: number, maxFileSize: number } {
  const scaled = Number.isFinite(maxBytes) ? Math.floor(maxBytes / 64) : Number.POSITIVE_INFINITY
  return {
    writeBufferSize: clamp(scaled, 64 * 1024, 4 * 1024 * 1024),
    maxFileSize: clamp(scaled, 64 * 1024, 2 * 1024 * 1024)
  }
}

/**
 * Room the buffer keeps below `maxBytes` for LevelDB's compactions, which write the new version
 * of the tables they rewrite before they delete the old one: while one runs, those tables are on
 * disk twice. LevelDB compacts level 0 (up to 8 write buffers) into level 1 (10 MiB, fixed in
 * LevelDB) with everything they overlap; deeper levels go a few tables at a time. In a small
 * buffer everything sits in those two levels and one compaction can rewrite all of it, so 60% of
 * the bound stays free (the write-ahead log and LevelDB's small files need the extra tenth); in a
 * large one the reserve is what those two levels can hold: 46 MiB of a 1 GiB buffer (4.5%),
 * 20 MiB of 64 MiB. Measured peaks are in test/bounds.test.ts.
 */
export function reserveFor (maxBytes: number): number {
  if (!Number.isFinite(maxBytes)) return 0
  const { writeBufferSize, maxFileSize } = levelSizes(maxBytes)
  return Math.min(Math.floor(maxBytes * 0.6), 8 * writeBufferSize + 10 * 1024 * 1024 + 2 * maxFileSize)
}

/** The bytes of readings a buffer bounded by `maxBytes` holds before it is full. */
export function capacityFor (maxBytes: number): number {
  return maxBytes - reserveFor(maxBytes)
}

/** What a byte handed to LevelDB costs on disk beyond the key and value: record and batch headers. */
export const PER_OP_OVERHEAD = 8

export type Shortage = 'full' | 'disk-low'

/**
 * The buffer's size as the disk sees it, kept cheaply between samples.
 *
 * A sample sums the allocated size (st_blocks, what `du` counts) of the files of the LevelDB
 * directory and reads the volume's free space (statfs). LevelDB's tables are counted from its
 * list of the database's current version (`leveldb.sstables`, sizes rounded up to a filesystem
 * block), not from the directory: a table that a compaction is writing, or has just replaced,
 * is there only while the compaction runs, and the reserve below maxBytes is for those
 * (reserveFor). Counting them would make the size jump by whatever a compaction happens to be
 * rewriting at the moment of the sample, and a buffer under drop-oldest would drop readings for
 * space that is about to come back.
 *
 * Between samples every byte handed to LevelDB is added on top, so the estimate errs high while
 * the write-ahead log grows and is corrected by the next sample, taken at least every second while
 * writes happen and before the buffer declares itself full. Sub-directories (a repair's `lost/`, a
 * set-aside `corrupt-*`) are not counted against maxBytes: they are the operator's to inspect and
 * delete.
 */
export class DiskUsage {
  private readonly path: string
  private readonly bounds: BufferBounds
  private readonly limit: number
  private readonly liveTables: () => Map<number, number> | null
  private sampledBytes = 0
  private sampledFree = Number.POSITIVE_INFINITY
  private writtenSince = 0
  private sampling: Promise<void> | null = null
  /** when the last sample was taken (performance.now) */
  sampledAt = Number.NEGATIVE_INFINITY

  /** `liveTables` lists the current version's table files (number -> bytes), null when unknown */
  constructor (path: string, bounds: BufferBounds, liveTables: () => Map<number, number> | null = () => null) {
    this.path = path
    this.bounds = bounds
    this.limit = capacityFor(bounds.maxBytes)
    this.liveTables = liveTables
  }

  /** the estimated size of the buffer on disk, in bytes */
  get bytes (): number { return this.sampledBytes + this.writtenSince }

  /** the estimated free space on the buffer's volume, in bytes */
  get free (): number { return this.sampledFree - this.writtenSince }

  /** bytes handed to LevelDB since the last sample */
  get written (): number { return this.writtenSince }

  noteWritten (bytes: number): void {
    this.writtenSince += bytes
  }

  /** Bytes that can still be written, and which bound is the nearer. Negative when over. */
  room (): { bytes: number, shortage: Shortage } {
    const byMax = this.limit - this.bytes
    const byDisk = this.free - this.bounds.minFreeDisk
    return byDisk < byMax ? { bytes: byDisk, shortage: 'disk-low' } : { bytes: byMax, shortage: 'full' }
  }

  /** Measures the directory and the volume again; concurrent calls share one measurement. */
  async sample (): Promise<void> {
    this.sampling ??= this.measure().finally(() => { this.sampling = null })
    await this.sampling
  }

  /** Samples unless the last sample is younger than `maxAgeMs`. */
  async sampleIfOlder (maxAgeMs: number): Promise<void> {
    if (performance.now() - this.sampledAt >= maxAgeMs) await this.sample()
  }

  private async measure (): Promise<void> {
    // Bytes written while the measurement runs may or may not be in it: keep them counted.
    const before = this.writtenSince
    // The tables are counted from LevelDB's own list, read before and after the other files are
    // measured: a memtable flush that lands meanwhile moves data from the log file (measured
    // before) to a table (listed after), and is counted once rather than not at all.
    const first = this.liveTables()
    const [files, free] = await Promise.all([directoryBytes(this.path, first === null ? null : 'others'), freeBytes(this.path)])
    const second = this.liveTables()
    let tables = 0
    if (first !== null && second !== null) {
      for (const size of new Map([...first, ...second]).values()) tables += Math.ceil(size / BLOCK) * BLOCK
    }
    this.sampledBytes = files + tables
    this.sampledFree = free
    this.writtenSince = Math.max(0, this.writtenSince - before)
    this.sampledAt = performance.now()
  }
}

/** The table files of LevelDB's current version, from its `leveldb.sstables` property: number -> bytes. */
export function parseSstables (text: string): Map<number, number> {
  const tables = new Map<number, number>()
  for (const m of text.matchAll(/^ (\d+):(\d+)\[/gm)) tables.set(Number(m[1]), Number(m[2]))
  return tables
}

/**
 * The allocated size of the regular files directly in `dir`; with `'others'`, of those that are
 * not LevelDB tables (the tables are then counted from LevelDB's list, see DiskUsage).
 */
export async function directoryBytes (dir: string, which: 'all' | 'others' | null = 'all'): Promise<number> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch {
    return 0
  }
  const sizes = await Promise.all(names.map(async (name) => {
    if (which === 'others' && /^\d+\.(ldb|sst)$/.test(name)) return 0
    try {
      const s = await stat(join(dir, name))
      if (!s.isFile()) return 0
      // Allocated blocks are what fills a disk; a file that is being written may not have them yet.
      return Math.max(s.blocks * 512, s.size)
    } catch {
      return 0 // LevelDB deleted it meanwhile
    }
  }))
  return sizes.reduce((a, b) => a + b, 0)
}

/** The unit a file's size is rounded up to on disk (a filesystem block). */
const BLOCK = 4096

async function freeBytes (dir: string): Promise<number> {
  try {
    const s = await statfs(dir)
    return s.bavail * s.bsize
  } catch {
    return Number.POSITIVE_INFINITY
  }
}

function clamp (value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value))
}
