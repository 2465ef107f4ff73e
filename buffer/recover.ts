import { copyFile, link, mkdir, readFile, readdir, rename, rm, stat } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { ClassicLevel } from 'classic-level'

/**
 * What the log did about a damaged LevelDB (docs/guarantees.md §8: "a damaged LevelDB
 * is repaired, or set aside; never silently deleted, always reported").
 */
export interface RecoveryReport {
  /** what was wrong: the error LevelDB gave */
  problem: string
  /**
   * `repaired`: LevelDB's repairer rebuilt the database from the files it could read (it moves
   * what it cannot use to `lost/` inside the directory); `set-aside`: the repair failed or left
   * nothing usable, so the directory was moved aside whole and a fresh buffer started.
   */
  action: 'repaired' | 'set-aside'
  /**
   * where the damaged files went (set-aside): the directory as the failed repair left it, with
   * the files exactly as they were before the repair in its `before-repair/` folder
   */
  setAsideTo?: string
  /** how many files, and bytes, were set aside */
  files: number
  bytes: number
  /** seqs found missing after a repair, announced upstream as gaps with reason `corrupt` */
  lostSeqs: number
}

/** The folder inside a damaged buffer that keeps its files as they were before a repair. */
export const BEFORE_REPAIR = 'before-repair'

/**
 * Runs LevelDB's repairer on a closed database; false when it fails. The repairer rewrites
 * CURRENT and the MANIFEST and moves what it cannot use to `lost/`, so first the files are kept
 * as they were in `before-repair/` (hard links: LevelDB never changes a file in place, so this
 * costs no space until the repaired database replaces them). A repair that works removes that
 * folder with `discardBeforeRepair`; one that fails leaves it for the set-aside directory.
 */
export async function repairDatabase (path: string): Promise<{ ok: boolean, error?: string }> {
  const keep = join(path, BEFORE_REPAIR)
  await rm(keep, { recursive: true, force: true })
  await mkdir(keep)
  for (const name of await readdir(path)) {
    const from = join(path, name)
    if (!(await stat(from).catch(() => null))?.isFile()) continue
    await link(from, join(keep, name)).catch(async () => { await copyFile(from, join(keep, name)) })
  }
  try {
    await ClassicLevel.repair(path)
    return { ok: true }
  } catch (err) {
    return { ok: false, error: (err as Error).message }
  }
}

/** After a repair that worked: the copy of the files from before it is not needed. */
export async function discardBeforeRepair (path: string): Promise<void> {
  await rm(join(path, BEFORE_REPAIR), { recursive: true, force: true })
}

/**
 * Moves a damaged buffer out of the way, never deleting it: the directory is renamed to
 * `<path>.corrupt-<time>`. When the directory itself cannot be renamed (it is a mount point, or
 * systemd's StateDirectory whose parent the service may not write), its files are moved into
 * `<path>/corrupt-<time>/` instead; LevelDB ignores sub-directories.
 */
export async function setAside (path: string, now = new Date()): Promise<{ to: string, files: number, bytes: number }> {
  const stamp = now.toISOString().replace(/[:.]/g, '-')
  const { files, bytes } = await treeSize(path)
  const sibling = `${path}.corrupt-${stamp}`
  try {
    await rename(path, sibling)
    await mkdir(path, { recursive: true })
    return { to: sibling, files, bytes }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EBUSY' && code !== 'EXDEV' && code !== 'EROFS') throw err
  }
  const inside = join(path, `corrupt-${stamp}`)
  await mkdir(inside)
  for (const name of await readdir(path)) {
    if (name === basename(inside) || name.startsWith('corrupt-')) continue
    await rename(join(path, name), join(inside, name))
  }
  return { to: inside, files, bytes }
}

/** Files and bytes under `dir`, not counting earlier set-aside folders. */
async function treeSize (dir: string): Promise<{ files: number, bytes: number }> {
  let files = 0
  let bytes = 0
  let names: string[]
  try {
    names = await readdir(dir)
  } catch {
    return { files, bytes }
  }
  for (const name of names) {
    if (name.startsWith('corrupt-') || name === BEFORE_REPAIR) continue
    const full = join(dir, name)
    const s = await stat(full).catch(() => null)
    if (s === null) continue
    if (s.isDirectory()) {
      const inner = await treeSize(full)
      files += inner.files
      bytes += inner.bytes
    } else {
      files++
      bytes += s.size
    }
  }
  return { files, bytes }
}

/**
 * What LevelDB's recovery at open skipped, from its info log (LOG, started afresh at each open):
 * "(ignoring error) .../000003.log: dropping 32768 bytes; Corruption: checksum mismatch". Null
 * when it skipped nothing. A log cut short at its end is not reported: that is what a crash in
 * the middle of a write leaves, and the read-back treats it the same way.
 */
export async function recoveryDrops (path: string): Promise<string | null> {
  let text: string
  try {
    text = await readFile(join(path, 'LOG'), 'utf8')
  } catch {
    return null
  }
  const lines = text.split('\n').filter((line) => /: dropping \d+ bytes; /.test(line))
  if (lines.length === 0) return null
  const bytes = lines.reduce((sum, line) => sum + Number(/dropping (\d+) bytes/.exec(line)?.[1] ?? 0), 0)
  return `${bytes} bytes in ${lines.length} places (${lines[0].replace(/^.*?: dropping/, 'dropping')})`
}
