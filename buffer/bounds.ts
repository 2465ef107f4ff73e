import { readdir, stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'

/** What the operator allows the buffer (config `buffer.*`, docs/config.md). */
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
 * rewrite. With its default 4 MiB a small buffer could never free anything; 1/256 of the bound
 * (64 KiB to 4 MiB, the default from 1 GiB up) keeps both small and still writes tables of a
 * useful size.
 */
export function levelSizes (maxBytes: number): { writeBufferSize: number, maxFileSize: number } {
  const scaled = Number.isFinite(maxBytes) ? Math.floor(maxBytes / 256) : Number.POSITIVE_INFINITY
  return {
    writeBufferSize: clamp(scaled, 64 * 1024, 4 * 1024 * 1024),
    maxFileSize: clamp(scaled, 64 * 1024, 2 * 1024 * 1024)
  }
}

/**
 * Room the buffer keeps below `maxBytes` for LevelDB's own work, which the disk sees and the
 * buffer's size does not count:
 *
 * - a compaction writes the new version of the tables it rewrites before it deletes the old one,
 *   so while it runs they are on disk twice. LevelDB compacts level 0 (up to 8 write buffers)
 *   into level 1 (10 MiB, fixed in LevelDB) with everything they overlap; deeper levels go a few
 *   tables at a time;
 * - tables a compaction replaced while an iterator was reading them stay on disk until LevelDB's
 *   next compaction (the buffer counts them once it sees them, and has them deleted before it
 *   calls itself full, but a compaction may start before that).
 *
 * So the reserve is twice what levels 0 and 1 can hold, and in a small buffer, where everything
 * sits in those two levels, 70% of the bound: the readings, an old copy and a new copy of them
 * must fit, with the write-ahead log. A 1 GiB buffer keeps 88 MiB (8.6%), 256 MiB keeps 38 MiB.
 * The peaks measured are in test/buffer-model.test.ts and test/bounds.test.ts.
 */
export function reserveFor (maxBytes: number): number {
  if (!Number.isFinite(maxBytes)) return 0
  const { writeBufferSize, maxFileSize } = levelSizes(maxBytes)
  return Math.min(Math.floor(maxBytes * 0.7), 2 * (8 * writeBufferSize + 10 * 1024 * 1024) + 2 * maxFileSize)
}

/** The bytes of readings a buffer bounded by `maxBytes` holds before it is full. */
export function capacityFor (maxBytes: number): number {
  return maxBytes - reserveFor(maxBytes)
}

/**
 * Room kept below the capacity, under `drop-oldest`, for readings dropped and not yet compacted
 * away. A drop deletes exactly the readings a commit needs room for, but their space comes back
 * only when LevelDB compacts their range, and one compaction per commit would wear the flash: so
 * dropped readings wait, counted as free, until they reach this much, and one compaction then
 * takes them all. 1/64 of the bound, 64 KiB to 16 MiB.
 */
export function dropAllowance (maxBytes: number): number {
  return clamp(Math.floor(maxBytes / 64), 64 * 1024, 16 * 1024 * 1024)
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
 * space that is about to come back. Obsolete tables LevelDB has not deleted yet are counted: the
 * log has it delete them before it calls itself full.
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
  /** the tables on disk that some sample found in LevelDB's live list: only these can be left over */
  private seenLive = new Set<number>()
  /** when the last sample was taken (performance.now) */
  sampledAt = Number.NEGATIVE_INFINITY
  /**
   * bytes of readings dropped (deleted) but not yet compacted away, which `room` counts as free:
   * under `drop-oldest` the limit is lowered by `dropAllowance` so that they still fit
   */
  credit = 0
  /** bytes of obsolete tables LevelDB has not deleted yet, at the last sample (counted in `bytes`) */
  lingeringBytes = 0
  /**
   * bytes of LevelDB's info log (LOG) and its MANIFEST at the last sample: both grow with every
   * compaction for as long as the database stays open (counted in `bytes`)
   */
  journalBytes = 0

  /** `liveTables` lists the current version's table files (number -> bytes), null when unknown */
  constructor (path: string, bounds: BufferBounds, liveTables: () => Map<number, number> | null = () => null) {
    this.path = path
    this.bounds = bounds
    this.limit = capacityFor(bounds.maxBytes) - (bounds.overflow === 'drop-oldest' ? dropAllowance(bounds.maxBytes) : 0)
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
    const byMax = this.limit - (this.bytes - this.credit)
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
    const [files, free] = await Promise.all([directoryFiles(this.path), freeBytes(this.path)])
    const second = this.liveTables()
    let bytes = 0
    let lingering = 0
    if (first === null || second === null) {
      for (const f of files) bytes += f.bytes
    } else {
      const live = new Map([...first, ...second])
      for (const size of live.values()) bytes += Math.ceil(size / BLOCK) * BLOCK
      const seen = new Set<number>()
      for (const f of files) {
        if (f.table === null) {
          bytes += f.bytes
        } else if (live.has(f.table)) {
          seen.add(f.table)
        } else if (this.seenLive.has(f.table)) {
          // A table LevelDB used and no longer does, not deleted yet: it deletes obsolete tables
          // after a compaction, but keeps those an open iterator still reads until the next one.
          seen.add(f.table)
          lingering += f.bytes
        }
        // A table never seen live is a compaction's output in the making, which the reserve is
        // for. Not "newer than every live table": a memtable flush in the middle of a long
        // compaction is live at once with a higher number, and the outputs below it, counted as
        // left over, made drop-oldest drop a megabyte of readings at once on a loaded machine.
      }
      this.seenLive = seen
    }
    this.sampledBytes = bytes + lingering
    this.lingeringBytes = lingering
    this.journalBytes = files.reduce((sum, f) => sum + (f.journal ? f.bytes : 0), 0)
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
 * The regular files directly in `dir`: allocated bytes, the table number of a LevelDB table, and
 * whether it is one of the files LevelDB appends to until it is reopened (LOG, MANIFEST-*).
 */
async function directoryFiles (dir: string): Promise<Array<{ table: number | null, journal: boolean, bytes: number }>> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch {
    return []
  }
  const files = await Promise.all(names.map(async (name) => {
    const table = /^(\d+)\.(ldb|sst)$/.exec(name)
    try {
      const s = await stat(join(dir, name))
      if (!s.isFile()) return null
      // Allocated blocks are what fills a disk; a file that is being written may not have them yet.
      const journal = name === 'LOG' || name.startsWith('MANIFEST-')
      return { table: table === null ? null : Number(table[1]), journal, bytes: Math.max(s.blocks * 512, s.size) }
    } catch {
      return null // LevelDB deleted it meanwhile
    }
  }))
  return files.filter((f) => f !== null)
}

/** The allocated size of the regular files directly in `dir`, in bytes. */
export async function directoryBytes (dir: string): Promise<number> {
  return (await directoryFiles(dir)).reduce((sum, f) => sum + f.bytes, 0)
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

/**
 * How large LevelDB's LOG and MANIFEST may grow before the log reopens the database, which starts
 * both afresh (LOG moves to LOG.old, the MANIFEST is rewritten as one snapshot). Each compaction
 * adds a few hundred bytes to both; a gateway that runs for months would otherwise creep towards
 * full on them alone. 1/64 of the bound, 64 KiB to 16 MiB.
 */
export function journalLimit (maxBytes: number): number {
  return Number.isFinite(maxBytes) ? clamp(Math.floor(maxBytes / 64), 64 * 1024, 16 * 1024 * 1024) : 16 * 1024 * 1024
}
