import { readFile } from 'node:fs/promises'
import { uptime } from 'node:os'

/**
 * The kernel's id for this boot: it changes on every reboot, which is how the buffer tells a
 * power loss (new boot after an unclean stop) from a process crash (same boot).
 */
export async function readBootId (path = '/proc/sys/kernel/random/boot_id'): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim()
  } catch {
    // Not Linux: the boot time stands in, rounded so clock jitter does not fake a reboot.
    return `boot-${Math.round((Date.now() / 1000 - uptime()) / 60)}`
  }
}
