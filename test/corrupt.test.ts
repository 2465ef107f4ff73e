/**
 * A damaged buffer directory (docs/guarantees.md §8): the built daemon, killed or stopped for
 * real, its LevelDB files then truncated or overwritten with garbage. It must start, say what it
 * did (repaired, or set aside and started afresh: never deleted), and go on; what it could not
 * save is announced upstream, so delivered + announced still equals assigned.
 */
import t, { type Test } from 'tap'
import { readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { startMosquitto } from './helpers/mosquitto.js'
import { startProxy, type Proxy } from './helpers/proxy.js'
import { startReceiver, type Receiver } from './helpers/receiver.js'
import { startSensors } from './helpers/sensors.js'
import { pinPorts, runCli, startDaemon, writeConfig, type DaemonRun } from './helpers/daemon.js'
import { freePort } from './helpers/ports.js'
import { coverage, coverageCounter } from './helpers/coverage.js'
import { publishAll, readings } from './helpers/upstream.js'

interface Setup { dir: string, buffer: string, config: string, link: Proxy, receiver: Receiver, port: number, admin: string, acked: Set<string>, epoch: string }

/**
 * A daemon whose upstream is cut off takes `perSensor` readings from two sensors, then stops
 * cleanly: its buffer holds them all, in tables and in the write-ahead log.
 */
async function bufferWithBacklog (t: Test, perSensor: number, forwarded = 0): Promise<Setup> {
  const dir = t.testdir()
  const buffer = join(dir, 'buffer')
  const upstream = await startMosquitto(t)
  const link = await startProxy(t, upstream.port)
  const receiver = await startReceiver(t, upstream.url, 'sluice/#')
  const config = writeConfig(dir, {
    gateway: { id: 'gw-corrupt' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    // A small bound keeps LevelDB's write buffer small, so the backlog is spread over many tables.
    buffer: { path: buffer, maxBytes: '16MiB' },
    upstream: { url: link.url, backoff: { min: '50ms', max: '500ms' } },
    health: { enabled: false },
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info' }
  })
  if (forwarded === 0) link.cut()
  const first = await startDaemon(t, config)
  // The restarts below listen where the sensors and the admin client already connect.
  pinPorts(config, first)
  const port = first.ports.broker ?? 0
  const admin = `127.0.0.1:${first.ports.admin ?? 0}`
  const epoch = (await first.waitForLine('sluice ready')).epoch
  if (forwarded > 0) {
    // These readings reach the upstream, which acknowledges them, before the link is cut.
    await publishAll(t, `mqtt://127.0.0.1:${port}`, readings(forwarded, 0, 'sensors/early/temp'))
    await receiver.waitFor((msgs) => coverage(msgs, epoch).readings.size >= forwarded, 30_000, 'the early readings upstream')
    let backlog = -1
    const deadline = Date.now() + 10_000
    while (backlog !== 0 && Date.now() < deadline) {
      backlog = (await (await fetch(`http://${admin}/status`)).json() as any).buffer.backlog.readings
      if (backlog !== 0) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    t.equal(backlog, 0, 'the early readings were acknowledged upstream')
    link.cut()
  }
  const sensors = await startSensors(t, `mqtt://127.0.0.1:${port}`, { count: 2, inflight: 20, readingsPerSensor: perSensor })
  await sensors.finished()
  await sensors.stop()
  t.equal((await first.kill('SIGTERM')).code, 0, 'the first run stopped cleanly')
  return { dir, buffer, config, link, receiver, port, admin, acked: new Set(sensors.acked), epoch }
}

function files (dir: string, pattern: RegExp): string[] {
  return readdirSync(dir).filter((name) => pattern.test(name)).sort()
}

/** Brings the upstream back and waits until every seq PUBACKed in the first run is delivered or announced. */
async function drained (s: Setup): Promise<{ seen: ReturnType<typeof coverage>, announced: number }> {
  s.link.restore()
  const covered = coverageCounter(s.epoch)
  await s.receiver.waitFor((msgs) => covered(msgs) >= s.acked.size, 30_000, 'every seq delivered or announced')
  const seen = coverage(s.receiver.messages, s.epoch)
  return { seen, announced: seen.gaps.reduce((sum, g) => sum + g.count, 0) }
}

/** What an operator sees of the damage: /status, /metrics and `sluice status`. */
async function operatorView (s: Setup): Promise<{ recoveries: any[], metric: (action: string) => number, summary: string }> {
  const status = await (await fetch(`http://${s.admin}/status`)).json() as any
  const metrics = await (await fetch(`http://${s.admin}/metrics`)).text()
  const summary = (await runCli(['status', '--admin', `http://${s.admin}`])).stdout
  const metric = (action: string): number => Number(new RegExp(`^sluice_buffer_recoveries_total\\{action="${action}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? Number.NaN)
  return { recoveries: status.buffer.recoveries, metric, summary }
}

function corruptLines (daemon: DaemonRun): any[] {
  return daemon.lines.filter((l) => l.code === 'SLUICE_BUFFER_CORRUPT')
}

t.test('garbage in CURRENT: LevelDB repairs the buffer, nothing is lost, a new epoch is announced', async (t) => {
  const s = await bufferWithBacklog(t, 1500)
  writeFileSync(join(s.buffer, 'CURRENT'), 'garbage, not a manifest name')
  const daemon = await startDaemon(t, s.config)
  const [said] = corruptLines(daemon)
  t.match(said, { level: 50, problem: /CURRENT/, lostSeqs: 0, msg: /repaired/ }, 'it says it repaired the buffer, and why')
  const ready = await daemon.waitForLine('sluice ready')
  t.not(ready.epoch, s.epoch, 'a repaired buffer goes on under a new epoch')
  t.notOk(readdirSync(dirname(s.buffer)).some((n) => n.startsWith(`${basename(s.buffer)}.corrupt-`)), 'nothing set aside')
  const { seen } = await drained(s)
  t.same(new Set(seen.readings.values()), s.acked, 'every PUBACKed reading arrived')
  t.same(seen.gaps, [], 'no gap')
  const view = await operatorView(s)
  t.match(view.recoveries, [{ action: 'repaired', problem: /CURRENT/, lostSeqs: 0, setAsideTo: null }], '/status says the buffer was repaired')
  t.equal(view.metric('repaired'), 1, 'sluice_buffer_recoveries_total{action="repaired"} 1')
  t.equal(view.metric('set-aside'), 0)
  t.match(view.summary, /damage\s+.*repaired; 0 readings lost/, '`sluice status` says so')
  const epochEvent = s.receiver.messages.find((m) => m.json?.type === 'io.sluice.epoch')
  t.match(epochEvent?.json.data, { previous: s.epoch, epoch: ready.epoch, lastDurableSeq: s.acked.size, reason: 'repaired' })
  await daemon.kill('SIGTERM')
})

t.test('every file overwritten with garbage: the directory is set aside, never deleted, and a fresh buffer starts, announced upstream', async (t) => {
  const early = 50
  const s = await bufferWithBacklog(t, 500, early)
  const oldEpochMessages = (): any[] => s.receiver.messages.filter((m) => m.json?.sluiceepoch === s.epoch)
  const oldBefore = oldEpochMessages().length
  const before = files(s.buffer, /./)
  for (const name of before) {
    if (statSync(join(s.buffer, name)).isFile()) writeFileSync(join(s.buffer, name), Buffer.alloc(300, 0xa5))
  }
  const daemon = await startDaemon(t, s.config)
  const [said] = corruptLines(daemon)
  t.match(said, { level: 50, setAsideTo: new RegExp(`${basename(s.buffer)}\\.corrupt-`), files: Number, bytes: Number, msg: /moved to/ },
    'it says where the damaged files went')
  const aside: string = said.setAsideTo
  t.ok(said.files >= before.length, `${String(said.files)} files set aside`)
  // LevelDB's own info log (LOG) holds no readings, and LevelDB starts it afresh at every open
  // attempt, also at the one that found the damage; every other file is kept as it was.
  for (const name of before.filter((n) => n !== 'LOG')) {
    t.same(readFileSync(join(aside, 'before-repair', name)), Buffer.alloc(300, 0xa5), `${name} is kept as it was before the repair`)
  }
  const ready = await daemon.waitForLine('sluice ready')
  t.equal(ready.created, true, 'a fresh buffer')
  const view = await operatorView(s)
  t.match(view.recoveries, [{ action: 'set-aside', setAsideTo: aside, files: said.files, bytes: said.bytes }], '/status says where the files went')
  t.equal(view.metric('set-aside'), 1, 'sluice_buffer_recoveries_total{action="set-aside"} 1')
  t.match(view.summary, new RegExp(`damage\\s+.*moved to ${aside.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), '`sluice status` says where')
  t.not(ready.epoch, s.epoch, 'under a new epoch: its seqs start again at 1')
  // It takes readings again.
  const sensors = await startSensors(t, `mqtt://127.0.0.1:${s.port}`, { count: 1, readingsPerSensor: 10, topic: () => 'sensors/fresh/temp' })
  await sensors.finished()
  s.link.restore()
  await s.receiver.waitFor((msgs) => coverage(msgs, ready.epoch).readings.size >= 10, 30_000, 'the new readings upstream')
  // The receiver is told the backlog is gone: the new buffer's first event says it was set aside.
  const fresh = s.receiver.messages.filter((m) => m.json?.sluiceepoch === ready.epoch)
  t.match(fresh[0]?.json, { type: 'io.sluice.epoch' }, 'the first message of the new buffer is an epoch event')
  t.same(fresh[0]?.json.data, { epoch: ready.epoch, previous: null, lastDurableSeq: null, reason: 'set-aside' },
    'reason set-aside; the garbage no longer says which epoch or seq came before')
  t.same(coverage(s.receiver.messages, ready.epoch).readings.size, 10, 'then the new readings, from seq 1')
  // The old epoch: what the upstream acknowledged arrived once; the unsent backlog is not sent.
  const old = coverage(s.receiver.messages, s.epoch)
  t.same([...old.readings.keys()].sort((a, b) => a - b), Array.from({ length: early }, (_, i) => i + 1), 'the old epoch\'s acknowledged readings, seqs 1..50, arrived')
  t.same(old.gaps, [], 'no gap in the old epoch')
  t.equal(oldEpochMessages().length, oldBefore, 'nothing of the old epoch was sent after the set-aside')
  t.notOk([...old.readings.values()].some((k) => s.acked.has(k)), 'none of the unsent backlog arrived (it was garbage)')
  const metrics = await (await fetch(`http://${s.admin}/metrics`)).text()
  t.match(metrics, /^sluice_new_epochs_total\{reason="set-aside"\} 1$/m, 'counted: sluice_new_epochs_total{reason="set-aside"} 1')
  await daemon.kill('SIGTERM')
})

t.test('a truncated table: repaired in place (at start, or when the forwarder reads it), the lost readings announced; the daemon keeps running', async (t) => {
  const s = await bufferWithBacklog(t, 2000)
  const tables = files(s.buffer, /\.ldb$/)
  t.ok(tables.length >= 2, `the backlog is in ${tables.length} tables`)
  const victim = join(s.buffer, tables[0])
  truncateSync(victim, Math.floor(statSync(victim).size / 3))
  const daemon = await startDaemon(t, s.config)
  const { seen, announced } = await drained(s)
  t.ok(announced > 0, `${announced} readings were lost with the table, and announced`)
  t.same([...new Set(seen.gaps.map((g) => g.reason))], ['corrupt'])
  t.equal(seen.readings.size + announced, s.acked.size, 'delivered + announced = assigned')
  t.same(seen.overlaps, [], 'no seq both delivered and announced')
  t.match(corruptLines(daemon)[0], { level: 50, problem: String, msg: /repaired/ }, 'it says what it did')
  t.equal(daemon.child.exitCode, null, 'still running')
  // ...and still takes readings.
  const sensors = await startSensors(t, `mqtt://127.0.0.1:${s.port}`, { count: 1, readingsPerSensor: 10, topic: () => 'sensors/after/temp' })
  await sensors.finished()
  await daemon.kill('SIGTERM')
})

t.test('garbage in the middle of the write-ahead log: LevelDB skips it, sluice announces what it lost', async (t) => {
  const s = await bufferWithBacklog(t, 300)
  const [wal] = files(s.buffer, /\.log$/)
  const bytes = readFileSync(join(s.buffer, wal))
  t.ok(bytes.length > 20_000, `the write-ahead log holds ${bytes.length} bytes`)
  bytes.fill(0x5a, 8000, 12_000)
  writeFileSync(join(s.buffer, wal), bytes)
  const daemon = await startDaemon(t, s.config)
  const [said] = corruptLines(daemon)
  t.match(said, { problem: /write-ahead log damaged/, msg: /repaired/ }, 'it says what it found')
  t.ok(said.lostSeqs > 0, `${String(said.lostSeqs)} readings lost`)
  const { seen, announced } = await drained(s)
  t.equal(announced, said.lostSeqs, 'the lost readings are announced')
  t.equal(seen.readings.size + announced, s.acked.size, 'delivered + announced = assigned')
  await daemon.kill('SIGTERM')
})

t.test('a second daemon on the same buffer is refused with exit 2; the lock is not taken for damage', async (t) => {
  const dir = t.testdir()
  const buffer = join(dir, 'buffer')
  const config = async (): Promise<Record<string, unknown>> => ({
    gateway: { id: 'gw-lock' },
    ingest: { broker: { listen: '127.0.0.1:0' } },
    buffer: { path: buffer },
    upstream: { url: `mqtt://127.0.0.1:${await freePort()}` }, // nothing listens there
    health: { enabled: false },
    admin: { enabled: false }
  })
  const first = await startDaemon(t, writeConfig(dir, await config(), 'first.yaml'))
  // LevelDB moves its info log (LOG -> LOG.old) before it asks for the lock; everything else stays.
  const data = /^(?!LOG)/
  const before = files(buffer, data)
  const second = await runCli(['run', '-c', writeConfig(dir, await config(), 'second.yaml')])
  t.equal(second.code, 2)
  t.match(second.stdout + second.stderr, /in use by another process/)
  t.notMatch(second.stdout, /SLUICE_BUFFER_CORRUPT/)
  t.same(readdirSync(dir).filter((n) => n.includes('.corrupt-')), [], 'nothing set aside')
  t.same(files(buffer, data), before, 'the buffer\'s files are untouched')
  t.equal(first.child.exitCode, null, 'the first daemon runs on')
  await first.kill('SIGTERM')
})
