/**
 * A small real filesystem (tmpfs) for the disk-full tests: writes past its size fail with ENOSPC
 * as they would on a full SD card. Mounting needs root (CAP_SYS_ADMIN). Under CI, and whenever the
 * process is root, a mount that fails is an error (the test fails: a disk-full test that silently
 * skips proves nothing); only an unprivileged developer run gets null, and the test says it skipped.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestLike } from './mosquitto.js'

/** Whether this run must be able to mount: under CI, or as root. */
export function mountRequired (env: NodeJS.ProcessEnv = process.env, uid: number | undefined = process.getuid?.()): boolean {
  return (env.CI !== undefined && env.CI !== '' && env.CI !== 'false') || uid === 0
}

/**
 * Mounts a tmpfs of `bytes` and returns its path, or null when mounting is not allowed and not
 * required. It lives outside the test's own directory, which tap removes before running teardowns
 * of later tests.
 */
export function mountTmpfs (t: TestLike, bytes: number): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-tmpfs-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${Math.ceil(bytes / 1024)}k`, 'tmpfs', dir], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    if (mountRequired()) {
      const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim()
      throw new Error(`mounting a tmpfs failed, and this run (CI or root) must test a full disk: ${stderr !== '' ? stderr : (err as Error).message}`)
    }
    return null
  }
  t.teardown(() => {
    // Lazy: whatever still holds a file there lets go at its own pace.
    execFileSync('umount', ['-l', dir], { stdio: 'ignore' })
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}
