/**
 * One boot of the guest under qemu's software emulation. SIGKILL of qemu is a power cut from the
 * guest's point of view: its page cache is gone and only what it flushed survives;
 * `cache=none,aio=threads` makes the guest's flushes real flushes on the host.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import type { GuestImage } from './image.js'

export interface BootOptions {
  image: GuestImage
  disk: string
  serialLog: string
  /** host ports forwarded to the guest's broker relay and admin endpoint */
  brokerPort: number
  adminPort: number
  /** the host's upstream broker port, reached from the guest at 10.0.2.2 */
  upstreamPort: number
  sync: 'always' | 'interval'
  syncIntervalMs: number
}

export class Vm {
  private readonly child: ChildProcess
  private readonly exited: Promise<void>
  private gone = false

  constructor (readonly options: BootOptions) {
    const o = options
    const append = [
      // no_timer_check: on a loaded host the emulated timer can miss the kernel's IO-APIC check,
      // which then panics before init (seen here at load average 25).
      'console=ttyS0', 'quiet', 'panic=-1', 'no_timer_check',
      `sluice.sync=${o.sync}`, `sluice.syncInterval=${o.syncIntervalMs}`, `sluice.upstream=10.0.2.2:${o.upstreamPort}`
    ].join(' ')
    this.child = spawn('qemu-system-x86_64', [
      '-accel', 'tcg', '-machine', 'q35', '-smp', '1', '-m', '1024', '-display', 'none', '-no-reboot',
      '-serial', `file:${o.serialLog}`, '-monitor', 'none',
      '-kernel', o.image.kernel, '-initrd', o.image.initrd, '-append', append,
      '-drive', `file=${o.disk},format=raw,if=virtio,cache=none,aio=threads`,
      '-netdev', `user,id=n,restrict=off,hostfwd=tcp:127.0.0.1:${o.brokerPort}-:1884,hostfwd=tcp:127.0.0.1:${o.adminPort}-:9464`,
      '-device', 'virtio-net-pci,netdev=n'
    ], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    this.child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
    this.exited = new Promise((resolve) => {
      this.child.once('exit', () => {
        this.gone = true
        if (stderr.trim() !== '') process.stderr.write(`qemu: ${stderr}`)
        resolve()
      })
    })
  }

  get running (): boolean { return !this.gone }

  /** The power cut: SIGKILL of the emulator; resolves once it has exited. */
  async kill (): Promise<void> {
    if (!this.gone) this.child.kill('SIGKILL')
    await this.exited
  }

  /** For the harness's own exit: no VM outlives it. */
  killNow (): void {
    if (!this.gone) this.child.kill('SIGKILL')
  }

  /** The kernel reached the guest's /init (it prints the boot id first). */
  reachedInit (): boolean {
    return this.serial().includes('init: boot_id')
  }

  serial (): string {
    try { return readFileSync(this.options.serialLog, 'utf8') } catch { return '' }
  }
}
