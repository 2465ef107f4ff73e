/**
 * The guest for the power-cut harness: an initramfs holding busybox, the kernel modules for a
 * virtio disk, ext4 and virtio networking, `node` with the libraries it links, and sluice (its
 * built `dist/` and production dependencies). Built once and cached under a directory keyed by a
 * hash of everything that goes in, so a code change rebuilds it.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync, chmodSync, renameSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join, relative } from 'node:path'

export interface GuestImage {
  kernel: string
  initrd: string
  dir: string
  /** true when this call built it, false when it came from the cache */
  built: boolean
}

/** In load order; dependencies are resolved from modules.dep. crc32c is what ext4's checksums ask the crypto API for. */
const MODULES = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4', 'virtio_net']

/**
 * The guest's /init: mounts, loads modules, brings up the network, mounts the persistent disk, writes
 * sluice's config from the kernel command line (sluice.sync, sluice.syncInterval, sluice.upstream)
 * and runs it. A relay exposes the loopback-only embedded broker on the guest's network address,
 * where qemu's port forward arrives.
 */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.load); do insmod /lib/modules/$m || echo "init: insmod $m failed"; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /data
mount -t ext4 /dev/vda /data || { echo "init: mount failed"; poweroff -f; }
for p in $(cat /proc/cmdline); do
  case "$p" in
    sluice.sync=*) SYNC="\${p#sluice.sync=}" ;;
    sluice.syncInterval=*) SYNCI="\${p#sluice.syncInterval=}" ;;
    sluice.upstream=*) UP="\${p#sluice.upstream=}" ;;
  esac
done
cat > /etc/sluice.yaml <<CFG
gateway: { id: powercut }
ingest: { broker: { listen: 127.0.0.1:1883 } }
buffer: { path: /data/sluice, sync: $SYNC, syncInterval: $SYNCI, maxBytes: 256MiB, minFreeDisk: 64MiB }
upstream: { url: "mqtt://$UP", clientId: powercut-gw }
admin: { listen: 0.0.0.0:9464 }
log: { level: warn }
CFG
echo "init: boot_id $(cat /proc/sys/kernel/random/boot_id)"
node /app/relay.mjs &
node /app/dist/daemon/bin.js run -c /etc/sluice.yaml
echo "init: sluice exited $?"
poweroff -f
`

/** Relays the guest's 10.0.2.15:1884 (where qemu forwards the host's port) to the loopback broker. */
const RELAY = `import { createServer, connect } from 'node:net'
createServer((a) => {
  const b = connect(1883, '127.0.0.1')
  a.pipe(b); b.pipe(a)
  a.on('error', () => b.destroy()); b.on('error', () => a.destroy())
  a.on('close', () => b.destroy()); b.on('close', () => a.destroy())
}).listen(1884, '0.0.0.0')
`

function kernelVersion (): string {
  const versions = readdirSync('/lib/modules').filter((v) => existsSync(`/boot/vmlinuz-${v}`)).sort()
  const k = versions.at(-1)
  if (k === undefined) throw new Error('no kernel with modules found (apt-get install linux-image-amd64)')
  return k
}

function moduleLoadOrder (k: string): string[] {
  const dep = new Map<string, { path: string, deps: string[] }>()
  const name = (p: string): string => p.split('/').at(-1)!.replace(/\.ko(\..*)?$/, '').replace(/-/g, '_')
  for (const line of readFileSync(`/lib/modules/${k}/modules.dep`, 'utf8').split('\n')) {
    const [path, rest] = line.split(':')
    if (path === undefined || rest === undefined) continue
    dep.set(name(path), { path, deps: rest.trim() === '' ? [] : rest.trim().split(/\s+/) })
  }
  const order: string[] = []
  const visit = (m: string): void => {
    const entry = dep.get(m)
    if (entry === undefined) return // built into the kernel
    if (order.includes(entry.path)) return
    for (const d of [...entry.deps].reverse()) visit(name(d))
    order.push(entry.path)
  }
  for (const m of MODULES) visit(m)
  return order
}

function libraries (binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' })
  return [...out.matchAll(/(\/\S+)/g)].map((m) => m[1]).filter((p) => existsSync(p))
}

function productionPackages (root: string): string[] {
  const out = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, encoding: 'utf8' })
  return out.split('\n').filter((p) => p !== '' && p !== root)
}

function hashTree (h: ReturnType<typeof createHash>, dir: string, skip: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = join(dir, e.name)
    if (p === skip) continue
    if (e.isDirectory()) hashTree(h, p, skip)
    else if (e.isFile() && !e.name.endsWith('.map')) h.update(p).update(readFileSync(p))
  }
}

function copyInto (staging: string, file: string): void {
  const to = join(staging, file)
  mkdirSync(dirname(to), { recursive: true })
  copyFileSync(file, to)
}

/** Builds the guest (or finds it in the cache) for the sluice checkout at `root`. */
export function guestImage (root: string, cacheRoot = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'sluice-powercut')): GuestImage {
  const k = kernelVersion()
  const node = execFileSync('readlink', ['-f', process.execPath], { encoding: 'utf8' }).trim()
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))
  if (busybox === undefined) throw new Error('busybox not found (apt-get install busybox-static)')
  const h = createHash('sha256')
  h.update(INIT).update(RELAY).update(k).update(node).update(process.version)
  h.update(MODULES.join(',')).update(readFileSync(join(root, 'package-lock.json')))
  h.update(readFileSync(busybox))
  hashTree(h, join(root, 'dist'), join(root, 'dist/scripts'))
  const key = h.digest('hex').slice(0, 16)
  const dir = join(cacheRoot, key)
  const kernel = `/boot/vmlinuz-${k}`
  const initrd = join(dir, 'initrd.cpio')
  if (existsSync(initrd)) {
    utimesSync(dir, new Date(), new Date())
    return { kernel, initrd, dir, built: false }
  }

  // Another run may still be booting an older image: only images unused for a week are removed.
  if (existsSync(cacheRoot)) {
    for (const old of readdirSync(cacheRoot)) {
      const p = join(cacheRoot, old)
      if (old.endsWith('.staging') || Date.now() - statSync(p).mtimeMs > 7 * 86400_000) rmSync(p, { recursive: true, force: true })
    }
  }
  const staging = join(cacheRoot, `${key}.staging`)
  mkdirSync(staging, { recursive: true })
  for (const d of ['bin', 'usr/bin', 'proc', 'sys', 'dev', 'etc', 'tmp', 'data', 'app']) mkdirSync(join(staging, d), { recursive: true })
  copyFileSync(busybox, join(staging, 'bin/busybox'))
  chmodSync(join(staging, 'bin/busybox'), 0o755)
  const mods = moduleLoadOrder(k)
  for (const m of mods) copyInto(staging, `/lib/modules/${k}/${m}`)
  writeFileSync(join(staging, 'modules.load'), mods.map((m) => `${k}/${m}`).join('\n') + '\n')
  copyFileSync(node, join(staging, 'usr/bin/node'))
  chmodSync(join(staging, 'usr/bin/node'), 0o755)
  for (const lib of libraries(node)) copyInto(staging, lib)
  writeFileSync(join(staging, 'init'), INIT, { mode: 0o755 })
  writeFileSync(join(staging, 'app/relay.mjs'), RELAY)
  // The guest runs the daemon; the harness (dist/scripts) stays on the host.
  cpSync(join(root, 'dist'), join(staging, 'app/dist'), { recursive: true, filter: (p) => !p.endsWith('.map') && !p.endsWith('.d.ts') && !p.startsWith(join(root, 'dist/scripts')) })
  copyFileSync(join(root, 'package.json'), join(staging, 'app/package.json'))
  cpSync(join(root, 'config'), join(staging, 'app/config'), { recursive: true })
  for (const pkg of productionPackages(root)) {
    const to = join(staging, 'app', relative(root, pkg))
    mkdirSync(dirname(to), { recursive: true })
    if (!existsSync(to)) cpSync(pkg, to, { recursive: true, filter: (p) => !/\/node_modules$/.test(p) || p === pkg })
  }
  execFileSync('sh', ['-c', 'find . | cpio -o -H newc --quiet > ../initrd.part'], { cwd: staging })
  mkdirSync(dir, { recursive: true })
  renameSync(join(cacheRoot, 'initrd.part'), initrd)
  rmSync(staging, { recursive: true, force: true })
  return { kernel, initrd, dir, built: statSync(initrd).size > 0 }
}
