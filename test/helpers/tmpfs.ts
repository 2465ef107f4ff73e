/**
 * A small real filesystem (tmpfs) for the disk-full tests: writes past its size fail with ENOSPC
 * as they would on a full SD card. Mounting needs root (CAP_SYS_ADMIN); without it the helper
 * returns null and the test says it skipped.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestLike } from './mosquitto.js'

/**
 * Mounts a tmpfs of `bytes` and returns its path, or null when mounting is not allowed. It lives
 * outside the test's own directory, which tap removes before running teardowns of later tests.
 */
export function mountTmpfs (t: TestLike, bytes: number): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-tmpfs-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${Math.ceil(bytes / 1024)}k`, 'tmpfs', dir], { stdio: 'ignore' })
  } catch {
    rmSync(dir, { recursive: true, force: true })
    return null
  }
  t.teardown(() => {
    // Lazy: whatever still holds a file there lets go at its own pace.
    execFileSync('umount', ['-l', dir], { stdio: 'ignore' })
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}
