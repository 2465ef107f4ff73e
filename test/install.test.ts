/**
 * scripts/install.sh and scripts/uninstall.sh (docs/operations.md), run for real with `--root` into a temp
 * dir: the files, owners and modes an operator gets, the config never overwritten, the buffer
 * kept unless --purge, and the installed package running with its production dependencies only.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { once } from 'node:events'
import { appendFileSync, chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { connectAsync } from 'mqtt'
import { parse as parseYaml } from 'yaml'
import { freePort } from './helpers/ports.js'

const REPO = fileURLToPath(new URL('..', import.meta.url))
const INSTALL = join(REPO, 'scripts/install.sh')
const UNINSTALL = join(REPO, 'scripts/uninstall.sh')
const EXAMPLE = readFileSync(join(REPO, 'config/example.yaml'), 'utf8')
const UNIT = readFileSync(join(REPO, 'systemd/sluice.service'), 'utf8')

// The scripts create a system user and chown files to it: only root can, here as on a Pi.
const skip = process.getuid?.() === 0 ? false : 'the install scripts need root (CI runs as root)'

/** A fresh root dir for one install, and a scratch dir beside it. */
function dirs (t: Test): { root: string, scratch: string } {
  const base = t.testdir()
  const root = join(base, 'root')
  const scratch = join(base, 'scratch')
  mkdirSync(root)
  mkdirSync(scratch)
  return { root, scratch }
}

function sh (script: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync('bash', [script, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 })
}

function install (t: Test, root: string, ...args: string[]): void {
  const r = sh(INSTALL, ['--root', root, '--copy-node-modules', ...args])
  t.equal(r.status, 0, `install.sh ${args.join(' ')} exits 0${r.status === 0 ? '' : `: ${r.stderr}${r.stdout}`}`)
}

function uninstall (t: Test, root: string, ...args: string[]): void {
  const r = sh(UNINSTALL, ['--root', root, ...args])
  t.equal(r.status, 0, `uninstall.sh ${args.join(' ')} exits 0${r.status === 0 ? '' : `: ${r.stderr}${r.stdout}`}`)
}

/** The `name` entry of a colon-separated file (passwd, group) in the root, as fields. */
function entry (root: string, file: string, name: string): string[] | undefined {
  const path = join(root, 'etc', file)
  if (!existsSync(path)) return undefined
  return readFileSync(path, 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[0] === name)
}

function owner (path: string): { mode: string, uid: number, gid: number } {
  const s = lstatSync(path)
  return { mode: (s.mode & 0o7777).toString(8).padStart(4, '0'), uid: s.uid, gid: s.gid }
}

/** Every path under dir (not following links). */
function walk (dir: string): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    out.push(p)
    if (e.isDirectory()) out.push(...walk(p))
  }
  return out
}

function analyze (t: Test, unitFile: string): void {
  const verify = spawnSync('systemd-analyze', ['verify', unitFile], { encoding: 'utf8' })
  t.equal(verify.error, undefined, 'systemd-analyze runs (Debian package systemd)')
  t.equal(verify.status, 0, `systemd-analyze verify is clean: ${verify.stderr}`)
  t.equal(`${verify.stdout}${verify.stderr}`.trim(), '', 'not one warning')
  const security = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', unitFile], { encoding: 'utf8' })
  const score = Number(/Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(security.stdout)?.[1])
  t.ok(score <= 2.0, `systemd-analyze security: exposure ${score} <= 2.0`)
}

/** Runs the installed package's daemon on loopback ports until it logs ready, then SIGTERM. */
async function runInstalled (t: Test, root: string, dir: string): Promise<void> {
  const port = await freePort()
  const nobody = await freePort()
  const config = join(dir, 'run.yaml')
  writeFileSync(config, JSON.stringify({
    gateway: { id: 'gw-installed' },
    ingest: { broker: { listen: `127.0.0.1:${port}` } },
    buffer: { path: join(dir, 'buffer') },
    upstream: { url: `mqtt://127.0.0.1:${nobody}`, backoff: { min: '1s', max: '5s' } }
  }))
  const child = spawn(process.execPath, [join(root, 'opt/sluice/dist/daemon/bin.js'), 'run', '-c', config], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  t.teardown(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); await exited })
  let out = ''
  let err = ''
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`no "sluice ready" within 20 s: ${out} ${err}`)) }, 20_000)
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('"msg":"sluice ready"')) { clearTimeout(timer); resolve() }
    })
    void exited.then(() => { clearTimeout(timer); reject(new Error(`the installed daemon exited: ${err} ${out}`)) })
  })
  const sensor = await connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, reconnectPeriod: 0 })
  await sensor.publishAsync('sensors/installed', '{"v":1}', { qos: 1 })
  await sensor.endAsync()
  t.pass('the installed daemon PUBACKs a reading')
  child.kill('SIGTERM')
  const [code] = await exited
  t.equal(code, 0, 'and stops cleanly on SIGTERM')
}

t.test('install --root: the package, the user, the config, the buffer dir and the unit', { skip }, async (t) => {
  const { root, scratch } = dirs(t)
  install(t, root, '--gateway-id', 'gw-install', '--upstream', 'mqtts://upstream.example.net:8883')

  const user = entry(root, 'passwd', 'sluice')
  const group = entry(root, 'group', 'sluice')
  t.ok(user, 'a sluice user in DIR/etc/passwd')
  t.ok(group, 'a sluice group in DIR/etc/group')
  const uid = Number(user?.[2])
  const gid = Number(group?.[2])
  t.ok(uid > 0 && uid < 1000, `a system uid (${uid})`)
  t.equal(Number(user?.[3]), gid, 'its primary group is sluice')
  t.equal(user?.[5], '/nonexistent', 'no home')
  t.equal(user?.[6], '/usr/sbin/nologin', 'no login shell')
  t.match(entry(root, 'shadow', 'sluice')?.[1] ?? '', /^!/, 'a locked password')

  // The package: root's, nothing writable by the service user.
  const opt = join(root, 'opt/sluice')
  const loose = walk(opt).filter((p) => {
    const s = lstatSync(p)
    return s.uid !== 0 || (!s.isSymbolicLink() && (s.mode & 0o022) !== 0)
  })
  t.same(loose.slice(0, 5), [], 'every file under /opt/sluice is root-owned and not group/world-writable')
  for (const f of ['dist/daemon/bin.js', 'package.json', 'package-lock.json', 'config/sluice.schema.json', 'config/example.yaml', 'systemd/sluice.service', 'scripts/uninstall.sh']) {
    t.ok(existsSync(join(opt, f)), `/opt/sluice/${f}`)
  }
  t.equal(owner(join(opt, 'bin/sluice')).mode, '0755')
  const launcher = readFileSync(join(opt, 'bin/sluice'), 'utf8')
  t.match(launcher, /^exec "\/\S+\/node" \/opt\/sluice\/dist\/daemon\/bin\.js "\$@"$/m, 'bin/sluice execs the installed package with an absolute node')
  // The environment it execs node with: the same script, with `env` in node's place.
  const printsEnv = join(root, 'launcher-env.sh')
  writeFileSync(printsEnv, launcher.replace(/^exec .*$/m, 'exec env'))
  const envOf = (extra: Record<string, string>): string | undefined =>
    /^MALLOC_ARENA_MAX=(.*)$/m.exec(spawnSync('sh', [printsEnv], { encoding: 'utf8', env: { PATH: process.env.PATH, ...extra } }).stdout)?.[1]
  t.equal(envOf({}), '2', 'node runs with two malloc arenas')
  t.equal(envOf({ MALLOC_ARENA_MAX: '4' }), '4', 'unless the environment (a drop-in\'s Environment=) says otherwise')
  for (const dep of ['aedes', 'classic-level', 'mqtt', 'level', 'pino', 'cbor-x', 'zod', 'yaml']) {
    t.ok(existsSync(join(opt, 'node_modules', dep, 'package.json')), `production dependency ${dep}`)
  }
  for (const dev of ['tap', 'typescript', '@isaacs/ts-node-temp-fork-for-pr-2009']) {
    t.notOk(existsSync(join(opt, 'node_modules', dev)), `no dev dependency ${dev}`)
  }
  t.equal(readlinkSync(join(root, 'usr/local/bin/sluice')), '/opt/sluice/bin/sluice', '/usr/local/bin/sluice')

  // The config: the commented example, 0640 root:sluice, inside a 0750 root:sluice dir.
  t.same(owner(join(root, 'etc/sluice')), { mode: '0750', uid: 0, gid }, '/etc/sluice 0750 root:sluice')
  const configPath = join(root, 'etc/sluice/sluice.yaml')
  t.same(owner(configPath), { mode: '0640', uid: 0, gid }, '/etc/sluice/sluice.yaml 0640 root:sluice')
  const config = readFileSync(configPath, 'utf8')
  const lines = new Set(config.split('\n'))
  const missing = EXAMPLE.split('\n').filter((l) => !lines.has(l) && !/^ {2}(id|url): /.test(l))
  t.same(missing, [], 'every line of config/example.yaml is there, comments included')
  const parsed = parseYaml(config) as { gateway: { id: string }, upstream: { url: string } }
  t.equal(parsed.gateway.id, 'gw-install', '--gateway-id')
  t.equal(parsed.upstream.url, 'mqtts://upstream.example.net:8883', '--upstream')
  const check = spawnSync(process.execPath, [join(opt, 'dist/daemon/bin.js'), 'check', '-c', configPath], { encoding: 'utf8' })
  t.equal(check.status, 0, `the installed sluice accepts the written config: ${check.stderr}`)

  // The buffer dir and the unit.
  t.same(owner(join(root, 'var/lib/sluice')), { mode: '0750', uid, gid }, '/var/lib/sluice 0750 sluice:sluice')
  const unitPath = join(root, 'etc/systemd/system/sluice.service')
  t.same(owner(unitPath), { mode: '0644', uid: 0, gid: 0 }, 'the unit 0644 root:root')
  t.equal(readFileSync(unitPath, 'utf8'), UNIT, 'the unit is systemd/sluice.service')
  t.equal(readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/sluice.service')), '/etc/systemd/system/sluice.service', 'enabled (multi-user.target wants it)')

  // verify needs ExecStart to exist: point a copy of the installed unit into this root.
  const copy = join(root, 'verify-sluice.service')
  writeFileSync(copy, readFileSync(unitPath, 'utf8').replace('ExecStart=/opt/sluice/bin/sluice ', `ExecStart=${join(opt, 'bin/sluice')} `))
  analyze(t, copy)

  await runInstalled(t, root, scratch)
})

t.test('installing again upgrades the package and keeps the config and the buffer', { skip }, async (t) => {
  const { root } = dirs(t)
  // A config provisioned before the first install is never overwritten either.
  mkdirSync(join(root, 'etc/sluice'), { recursive: true })
  const provisioned = 'gateway:\n  id: provisioned\nupstream:\n  url: mqtt://10.0.0.1:1883\n'
  writeFileSync(join(root, 'etc/sluice/sluice.yaml'), provisioned)
  install(t, root, '--gateway-id', 'first')
  t.equal(readFileSync(join(root, 'etc/sluice/sluice.yaml'), 'utf8'), provisioned, 'a config that was there is kept as it was')
  const uid = entry(root, 'passwd', 'sluice')?.[2]

  appendFileSync(join(root, 'etc/sluice/sluice.yaml'), '# an operator edit\n')
  const edited = readFileSync(join(root, 'etc/sluice/sluice.yaml'), 'utf8')
  writeFileSync(join(root, 'var/lib/sluice/000042.log'), 'buffered readings')
  writeFileSync(join(root, 'opt/sluice/dist/from-the-old-version.js'), '')

  install(t, root, '--gateway-id', 'second')
  t.equal(readFileSync(join(root, 'etc/sluice/sluice.yaml'), 'utf8'), edited, 'the operator\'s config is untouched')
  t.equal(readFileSync(join(root, 'var/lib/sluice/000042.log'), 'utf8'), 'buffered readings', 'the buffer is untouched')
  t.notOk(existsSync(join(root, 'opt/sluice/dist/from-the-old-version.js')), 'the package is replaced whole, no stale files')
  t.equal(entry(root, 'passwd', 'sluice')?.[2], uid, 'the same sluice user')
  t.equal(readFileSync(join(root, 'etc/passwd'), 'utf8').split('\n').filter((l) => l.startsWith('sluice:')).length, 1, 'once')
  t.same(readdirSync(join(root, 'opt')), ['sluice'], 'no staging leftovers in /opt')
})

t.test('uninstall keeps the buffer, the config and the user; --purge removes them', { skip }, async (t) => {
  const { root } = dirs(t)
  mkdirSync(join(root, 'etc'), { recursive: true })
  writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\n')
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\n')
  install(t, root)
  const buffered = join(root, 'var/lib/sluice/000042.log')
  writeFileSync(buffered, 'buffered readings')
  const config = readFileSync(join(root, 'etc/sluice/sluice.yaml'), 'utf8')
  mkdirSync(join(root, 'etc/systemd/system/sluice.service.d'))
  writeFileSync(join(root, 'etc/systemd/system/sluice.service.d/override.conf'), '[Service]\nWatchdogSec=60s\n')

  for (const pass of ['first', 'second']) {
    uninstall(t, root)
    t.notOk(existsSync(join(root, 'opt/sluice')), `${pass} run: /opt/sluice removed`)
    t.notOk(existsSync(join(root, 'etc/systemd/system/sluice.service')), 'the unit removed')
    t.notOk(existsSync(join(root, 'etc/systemd/system/multi-user.target.wants/sluice.service')), 'and disabled')
    t.notOk(existsSync(join(root, 'usr/local/bin/sluice')), '/usr/local/bin/sluice removed')
    t.equal(readFileSync(buffered, 'utf8'), 'buffered readings', 'the buffer is kept')
    t.equal(readFileSync(join(root, 'etc/sluice/sluice.yaml'), 'utf8'), config, 'the config is kept')
    t.ok(existsSync(join(root, 'etc/systemd/system/sluice.service.d/override.conf')), 'the drop-in is kept')
    t.ok(entry(root, 'passwd', 'sluice'), 'the user that owns the buffer is kept')
  }

  install(t, root)
  t.equal(readFileSync(buffered, 'utf8'), 'buffered readings', 'a reinstall finds the buffer where it was')

  for (const pass of ['first', 'second']) {
    uninstall(t, root, '--purge')
    t.notOk(existsSync(join(root, 'var/lib/sluice')), `${pass} --purge: the buffer is gone`)
    t.notOk(existsSync(join(root, 'etc/sluice')), 'the config is gone')
    t.notOk(existsSync(join(root, 'etc/systemd/system/sluice.service.d')), 'the drop-ins are gone')
    for (const f of ['passwd', 'group', 'shadow', 'gshadow']) {
      t.notOk(entry(root, f, 'sluice'), `no sluice in /etc/${f}`)
    }
    t.ok(entry(root, 'passwd', 'root'), 'other users are untouched')
    t.ok(entry(root, 'group', 'root'), 'other groups are untouched')
  }
})

t.test('a Node.js older than 20 is refused with a clear message, before anything is installed', { skip }, async (t) => {
  const { root, scratch: bin } = dirs(t)
  writeFileSync(join(bin, 'node'), '#!/bin/sh\necho 18.20.4\n')
  chmodSync(join(bin, 'node'), 0o755)
  const r = sh(INSTALL, ['--root', root, '--copy-node-modules'], { PATH: `${bin}:${process.env.PATH ?? ''}` })
  t.not(r.status, 0, 'install.sh fails')
  t.match(r.stderr, /Node\.js >= 20 is required, found v18\.20\.4/, r.stderr.trim())
  t.same(readdirSync(root), [], 'nothing was written')
})

/** Puts fake `node` and `uname` first on PATH: the CPU and Node.js a Pi would report. */
function fakeHost (bin: string, node: string, machine: string): NodeJS.ProcessEnv {
  writeFileSync(join(bin, 'node'), `#!/bin/sh\necho '${node}'\n`)
  writeFileSync(join(bin, 'uname'), `#!/bin/sh\necho '${machine}'\n`)
  chmodSync(join(bin, 'node'), 0o755)
  chmodSync(join(bin, 'uname'), 0o755)
  return { PATH: `${bin}:${process.env.PATH ?? ''}` }
}

t.test('an armv6 Pi (Zero, Zero W, 1) is refused: Node.js 20 has no official armv6 build', { skip }, async (t) => {
  const { root, scratch: bin } = dirs(t)
  const r = sh(INSTALL, ['--root', root, '--copy-node-modules'], fakeHost(bin, '20.11.0 arm', 'armv6l'))
  t.not(r.status, 0, 'install.sh fails')
  t.match(r.stderr, /armv6 \(Raspberry Pi Zero, Zero W or 1\): not supported/, r.stderr.trim())
  t.same(readdirSync(root), [], 'nothing was written')
})

t.test('a CPU other than aarch64, armv7l or x86_64 is refused, naming what is supported', { skip }, async (t) => {
  const { root, scratch: bin } = dirs(t)
  const r = sh(INSTALL, ['--root', root, '--copy-node-modules'], fakeHost(bin, '20.11.0 riscv64', 'riscv64'))
  t.not(r.status, 0, 'install.sh fails')
  t.match(r.stderr, /CPU 'riscv64' \(uname -m\) is not supported: sluice runs on aarch64 \(arm64\), armv7l \(armhf\) and x86_64/, r.stderr.trim())
  t.same(readdirSync(root), [], 'nothing was written')
})

t.test('a Node.js built for a CPU without prebuilt bindings is refused, on a supported board', { skip }, async (t) => {
  const { root, scratch: bin } = dirs(t)
  const r = sh(INSTALL, ['--root', root, '--copy-node-modules'], fakeHost(bin, '20.11.0 ia32', 'x86_64'))
  t.not(r.status, 0, 'install.sh fails')
  t.match(r.stderr, /built for 'ia32' on a x86_64 CPU: sluice needs an arm64, arm \(armv7\) or x64 Node\.js/, r.stderr.trim())
  t.same(readdirSync(root), [], 'nothing was written')
})
