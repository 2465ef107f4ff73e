/**
 * How the buffer measures its directory (buffer/bounds.ts, DiskUsage): which LevelDB tables count
 * as left over (obsolete, not deleted yet) and which as a compaction's output in the making. The
 * files are real files in a temp dir; LevelDB's list of live tables is scripted, because the
 * moment this is about (a memtable flush landing in the middle of a long compaction) cannot be
 * made to happen on demand in a real LevelDB. Counting that compaction's outputs as left over made
 * drop-oldest drop 4,487 readings at once where one was needed (a CI run on a loaded machine).
 */
import t from 'tap'
import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DiskUsage } from '../buffer/bounds.js'

const MiB = 1024 * 1024
const table = (n: number): string => `${String(n).padStart(6, '0')}.ldb`

t.test('a compaction\'s outputs are never counted as left over, even below a newer flush; tables that were live are', async (t) => {
  const dir = t.testdir()
  const sizes = new Map([[3, 40_000], [5, 20_000], [7, 60_000], [9, 8_000]])
  const put = async (n: number): Promise<void> => { await writeFile(join(dir, table(n)), Buffer.alloc(sizes.get(n) as number, 1)) }
  const liveOf = (...tables: number[]): Map<number, number> => new Map(tables.map((n) => [n, sizes.get(n) as number]))
  let live = liveOf(3, 5)
  const usage = new DiskUsage(dir, { maxBytes: 16 * MiB, minFreeDisk: 0, overflow: 'drop-oldest', ttlMs: 0 }, () => live)

  await put(3)
  await put(5)
  await usage.sample()
  t.equal(usage.lingeringBytes, 0, 'two live tables: nothing left over')
  const before = usage.bytes

  // A compaction of 3 and 5 is writing 7; meanwhile a memtable flush writes 9, live at once.
  await put(7)
  await put(9)
  live = liveOf(3, 5, 9)
  await usage.sample()
  t.equal(usage.lingeringBytes, 0, 'the compaction\'s output below the newer flush is not left over')
  t.ok(usage.bytes < before + 20_000, `nor counted in the buffer's size (${usage.bytes - before} bytes more: the flush)`)

  // The compaction ends: 3 and 5 are obsolete, still on disk while an iterator reads them.
  live = liveOf(7, 9)
  await usage.sample()
  t.ok(usage.lingeringBytes >= 60_000 && usage.lingeringBytes < 70_000, `the two obsolete tables are left over (${usage.lingeringBytes} bytes)`)

  // LevelDB deletes them at its next compaction.
  await rm(join(dir, table(3)))
  await rm(join(dir, table(5)))
  await usage.sample()
  t.equal(usage.lingeringBytes, 0, 'deleted: nothing left over')
})
