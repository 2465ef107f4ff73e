/**
 * `--memory=SIZE`: the spawned daemon runs in a memory cgroup of SIZE bytes, the RAM of the board
 * being stood in for (512M for a Pi Zero 2 W or a Pi 3, 1G for a 1 GB Pi 4).
 *
 * Why a cgroup and not V8 flags: Node sizes V8's heap from the memory the process may use, the
 * cgroup's limit when there is one, else the machine's RAM (process.constrainedMemory()). On this
 * 24 GiB machine that gives a 16 MiB semi-space (a 32 MiB young generation) and a 4 GiB old-space
 * limit; on a 512 MB Pi, 1 MiB and 256 MiB. Confined to a Pi's memory, the daemon sizes itself as
 * it would on that Pi, by V8's rules rather than by a guess at them; the limit also holds the
 * daemon's page cache to that much, as the Pi's RAM would. The CPU is still this machine's.
 *
 * Needs root and a writable memory controller: cgroup v1 (`/sys/fs/cgroup/memory`) or v2 (the
 * unified hierarchy with `memory` in the root's subtree_control). Only the sluice daemon is
 * confined; the baselines (mosquitto, the bench's own processes) are not.
 */
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }

/** "512M", "1G", "600000000": bytes; null when it is not a size. */
export function parseSize (text: string): number | null {
  const match = /^(\d+)([KMG]?)$/i.exec(text.trim())
  if (match === null) return null
  const bytes = Number(match[1]) * UNITS[match[2].toUpperCase()]
  return bytes > 0 ? bytes : null
}

interface Hierarchy { version: 1 | 2, parent: string, limitFile: string }

/** Where this process may make a memory cgroup, or why it may not. */
async function findHierarchy (): Promise<Hierarchy | string> {
  if (process.getuid?.() !== 0) return 'a memory cgroup needs root'
  const own = await readFile('/proc/self/cgroup', 'utf8').catch(() => '')
  // v1: a line "N:memory:/path"; the controller is mounted at /sys/fs/cgroup/memory.
  const v1 = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/m.exec(own)
  if (v1 !== null) return { version: 1, parent: join('/sys/fs/cgroup/memory', v1[1]), limitFile: 'memory.limit_in_bytes' }
  // v2: the root's children may use the memory controller (the root itself has no limit files).
  const controllers = await readFile('/sys/fs/cgroup/cgroup.subtree_control', 'utf8').catch(() => '')
  if (controllers.split(/\s+/).includes('memory')) return { version: 2, parent: '/sys/fs/cgroup', limitFile: 'memory.max' }
  return 'no writable memory cgroup controller (cgroup v1 memory, or v2 with memory in /sys/fs/cgroup/cgroup.subtree_control)'
}

export class MemoryBudget {
  private constructor (
    readonly bytes: number,
    /** the cgroup's directory */
    readonly dir: string,
    readonly version: 1 | 2
  ) {}

  /** Makes the cgroup; throws, saying why, where none can be made. */
  static async create (bytes: number): Promise<MemoryBudget> {
    const found = await findHierarchy()
    if (typeof found === 'string') throw new Error(`--memory: ${found}`)
    const dir = join(found.parent, `sluice-bench-${process.pid}`)
    await mkdir(dir)
    try {
      await writeFile(join(dir, found.limitFile), String(bytes))
    } catch (err) {
      await rmdir(dir).catch(() => {})
      throw new Error(`--memory: could not set ${found.limitFile} in ${dir}: ${(err as Error).message}`)
    }
    return new MemoryBudget(bytes, dir, found.version)
  }

  /** `command args`, started inside the cgroup (the shell moves itself in, then execs: one pid). */
  wrap (command: string, args: readonly string[]): { command: string, args: string[] } {
    return { command: '/bin/sh', args: ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', this.dir, command, ...args] }
  }

  describe (): string {
    return `${(this.bytes / 1024 ** 2).toFixed(0)} MiB (cgroup v${this.version})`
  }

  /** Removes the cgroup; every process in it must have exited. */
  async remove (): Promise<void> {
    await rmdir(this.dir)
  }
}
