/**
 * `npm run powercut -- --cycles N --sync always|interval [--seed S]`: real power cuts of a virtual
 * machine running sluice, counted. See docs/power-cuts.md for what is measured and the figures.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { judgeCycle, type CycleResult } from './check.js'
import { guestImage } from './image.js'
import { Receiver, Sensors } from './load.js'
import { Vm, type BootOptions } from './vm.js'
import { freePort } from '../ports.js'
import { mulberry32 } from '../random.js'

const { values } = parseArgs({
  options: {
    cycles: { type: 'string', default: '10' },
    sync: { type: 'string', default: 'always' },
    'sync-interval': { type: 'string', default: '1000' },
    'commit-allowance': { type: 'string', default: '1000' },
    'max-delay': { type: 'string', default: '4000' },
    seed: { type: 'string' },
    keep: { type: 'boolean', default: false }
  }
})
const cycles = Number(values.cycles)
if (values.sync !== 'always' && values.sync !== 'interval') throw new Error('--sync is always or interval')
const sync: 'always' | 'interval' = values.sync
const syncIntervalMs = Number(values['sync-interval'])
const lossWindowMs = syncIntervalMs + Number(values['commit-allowance'])
const maxDelayMs = Number(values['max-delay'])
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed)

async function waitFor<T> (what: string, boundMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const until = performance.now() + boundMs
  for (;;) {
    const v = await probe().catch(() => undefined)
    if (v !== undefined) return v
    if (performance.now() > until) throw new Error(`timed out after ${boundMs} ms waiting for ${what}`)
    await sleep(250)
  }
}

interface Status { ready: boolean, buffer: { backlog: { readings: number }, recoveries: Array<{ action: 'repaired' | 'set-aside' }> }, upstream: { connected: boolean } }
async function status (port: number): Promise<Status> {
  const res = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(3000) })
  return await res.json() as Status
}

const children: ChildProcess[] = []
const vms: Vm[] = []
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); for (const v of vms) v.killNow() })
process.on('SIGINT', () => { process.exit(130) })
process.on('SIGTERM', () => { process.exit(143) })

async function startMosquitto (dir: string): Promise<number> {
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  // max_queued_messages 0: no limit, the receiver's session never drops a forwarded reading.
  writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence false\nlog_dest file ${join(dir, 'mosquitto.log')}\n`)
  const child = spawn('mosquitto', ['-c', conf], { stdio: 'ignore' })
  children.push(child)
  await waitFor('mosquitto', 15000, async () => await new Promise<true | undefined>((resolve) => {
    const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) })
    s.on('error', () => { resolve(undefined) })
  }))
  return port
}

function tail (text: string, lines = 15): string { return text.trimEnd().split('\n').slice(-lines).join('\n') }

async function main (): Promise<number> {
  const root = resolve(import.meta.dirname, '../../..')
  for (const tool of ['qemu-system-x86_64', 'mkfs.ext4', 'mosquitto', 'cpio']) {
    try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }) } catch { throw new Error(`${tool} not found: apt-get install --no-install-recommends qemu-system-x86 linux-image-amd64 busybox-static cpio e2fsprogs mosquitto`) }
  }
  const t0 = performance.now()
  const image = guestImage(root)
  console.log(`powercut: guest ${image.built ? 'built' : 'cached'} in ${image.dir} (${Math.round(performance.now() - t0)} ms)`)
  console.log(`powercut: sync ${sync}${sync === 'interval' ? ` (syncInterval ${syncIntervalMs} ms, loss window ${lossWindowMs} ms)` : ''}, ${cycles} cycles, seed ${seed} (replay: --seed ${seed})`)
  const work = mkdtempSync(join(tmpdir(), 'sluice-powercut-'))
  const disk = join(work, 'disk.img')
  execFileSync('truncate', ['-s', '1G', disk])
  execFileSync('mkfs.ext4', ['-q', '-F', disk])
  const upstreamPort = await startMosquitto(work)
  const receiver = await Receiver.start(upstreamPort)
  const random = mulberry32(seed)
  const base: BootOptions = { image, disk, serialLog: '', brokerPort: await freePort(), adminPort: await freePort(), upstreamPort, sync, syncIntervalMs }

  let boot = 0
  let kernelRetries = 0
  const bootVm = async (): Promise<{ vm: Vm, recoveries: Status['buffer']['recoveries'] }> => {
    for (let attempt = 1; ; attempt++) {
      const vm = new Vm({ ...base, serialLog: join(work, `serial-${boot++}.log`) })
      vms.push(vm)
      try {
        const s = await waitFor('sluice in the guest to be ready', 300000, async () => {
          if (!vm.running) return null
          const st = await status(base.adminPort)
          return st.ready && st.upstream.connected ? st : undefined
        })
        if (s !== null) return { vm, recoveries: s.buffer.recoveries }
        throw new Error('the virtual machine stopped')
      } catch (err) {
        await vm.kill()
        // A kernel that dies before the guest's /init never touched the disk: the emulator's
        // fault, not sluice's. Boot again (a few times); anything later counts against sluice.
        if (!vm.reachedInit() && attempt < 3) {
          kernelRetries++
          console.log(`powercut: boot ${boot - 1} failed before init (emulator), booting again\n${tail(vm.serial(), 3)}`)
          continue
        }
        console.log(`powercut: boot ${boot - 1} did not come up: ${(err as Error).message}\n${tail(vm.serial())}`)
        throw err
      }
    }
  }

  const totals = { cycles: 0, acked: 0, lost: 0, duplicates: 0, epochs: 0, repaired: 0, setAside: 0, reopenFailed: 0, oldestLossMs: 0, maxLostPerCycle: 0, broken: 0 }
  let epochFrom = 1
  let current = (await bootVm()).vm
  console.log('cycle  kill-after  acked  lost  oldest-lost  dup  epoch(lastDurableSeq)  recoveries')
  for (let c = 1; c <= cycles; c++) {
    const delay = Math.round(random() * maxDelayMs)
    const sensors = new Sensors(c, base.brokerPort)
    await Promise.race([sensors.firstAck, sleep(120000).then(() => { throw new Error('no PUBACK within 120 s') })])
    await sleep(delay)
    // The power cut, while the sensors are publishing.
    const killAt = performance.now()
    await current.kill()
    sensors.stop()
    let result: CycleResult
    let recov = ''
    try {
      const next = await bootVm()
      current = next.vm
      for (const r of next.recoveries) { if (r.action === 'repaired') totals.repaired++; else totals.setAside++ }
      recov = next.recoveries.map((r) => r.action).join(',')
      await waitFor('the backlog to drain upstream', 600000, async () => (await status(base.adminPort)).buffer.backlog.readings === 0 ? true : undefined)
      await waitFor('the receiver to go quiet', 30000, async () => performance.now() - receiver.lastAt > 1000 ? true : undefined)
      result = judgeCycle({ cycle: c, sync, lossWindowMs, acked: sensors.acked, killAt, arrivals: receiver.arrivals, epochFrom })
    } catch (err) {
      totals.reopenFailed++
      result = { acked: sensors.acked.length, lost: 0, duplicates: 0, oldestLossMs: null, epochsAnnounced: 0, epochEvent: null, broken: [`the gateway did not come back: ${(err as Error).message}`] }
    }
    totals.cycles++
    totals.acked += result.acked
    totals.lost += result.lost
    totals.duplicates += result.duplicates
    totals.epochs += result.epochsAnnounced
    totals.maxLostPerCycle = Math.max(totals.maxLostPerCycle, result.lost)
    if (result.oldestLossMs !== null) totals.oldestLossMs = Math.max(totals.oldestLossMs, result.oldestLossMs)
    if (result.epochEvent !== null) epochFrom = result.epochEvent.lastDurableSeq + 1
    const ep = result.epochEvent === null ? '-' : `${result.epochsAnnounced}(${result.epochEvent.lastDurableSeq})`
    const age = result.oldestLossMs === null ? '-' : `${Math.round(result.oldestLossMs)} ms`
    console.log(`${String(c).padStart(5)}  ${String(delay).padStart(7)} ms  ${String(result.acked).padStart(5)}  ${String(result.lost).padStart(4)}  ${age.padStart(11)}  ${String(result.duplicates).padStart(3)}  ${ep.padStart(20)}  ${recov === '' ? '-' : recov}`)
    for (const b of result.broken) console.log(`  BROKEN (cycle ${c}, seed ${seed}): ${b}`)
    totals.broken += result.broken.length
    if (result.broken.length > 0 && totals.reopenFailed > 0) break
  }
  await current.kill()
  await receiver.close()
  const reopened = totals.reopenFailed === 0 ? 'always' : `failed ${totals.reopenFailed} time(s)`
  console.log([
    '',
    `sync                  ${sync}${sync === 'interval' ? ` (syncInterval ${syncIntervalMs} ms)` : ''}, seed ${seed}`,
    `cycles                ${totals.cycles}`,
    `readings PUBACKed     ${totals.acked}`,
    `lost                  ${totals.lost} (most in one cycle: ${totals.maxLostPerCycle}${totals.lost > 0 ? `, oldest PUBACKed ${Math.round(totals.oldestLossMs)} ms before the cut; allowed ${lossWindowMs} ms` : ''})`,
    `duplicates            ${totals.duplicates}`,
    `epochs announced      ${totals.epochs} of ${totals.cycles} power cuts`,
    `buffer reopened       ${reopened} (repaired ${totals.repaired}, set aside ${totals.setAside})`,
    `promises broken       ${totals.broken}`,
    `boots retried         ${kernelRetries} (the kernel died before init, an emulator fault)`
  ].join('\n'))
  if (totals.broken === 0 && values.keep !== true) rmSync(work, { recursive: true, force: true })
  else console.log(`powercut: disk image, serial logs and mosquitto log kept in ${work}`)
  for (const ch of children) ch.kill('SIGTERM')
  return totals.broken === 0 ? 0 : 1
}

// process.exit: an MQTT.js client of a cut connection can keep the event loop alive; the exit
// handler powers off any VM and stops mosquitto.
main().then((code) => { process.exit(code) }, (err: unknown) => {
  console.error(`powercut: ${(err as Error).stack ?? String(err)}`)
  process.exit(2)
})
