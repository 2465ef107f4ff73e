import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DurableLog, type DurableLogOptions, type LogEntry } from '../buffer/index.js'

const reading = (i: number): { time: number, topic: string, payload: Buffer } =>
  ({ time: 1_700_000_000_000 + i, topic: `s/${i % 3}`, payload: Buffer.from(`r${i}`) })

const SYNC_CHILD = fileURLToPath(new URL('./helpers/sync-child.mjs', import.meta.url))

function options (path: string, extra: Partial<DurableLogOptions> = {}): DurableLogOptions {
  return { path, sync: 'interval', syncIntervalMs: 1000, bootId: 'boot-a', ...extra }
}

async function readAll (log: DurableLog, after = log.ackPos): Promise<LogEntry[]> {
  const all: LogEntry[] = []
  for (;;) {
    const chunk = await log.read(after, 7)
    if (chunk.length === 0) return all
    all.push(...chunk)
    after = chunk[chunk.length - 1].pos
  }
}

t.test('seq starts at 1, grows by one, and survives a reopen with the same epoch', async (t) => {
  const path = t.testdir()
  const log = await DurableLog.open(options(path))
  t.ok(log.report.created)
  t.match(log.epoch, /^[0-9a-f]{32}$/)
  const seqs = [1, 2, 3].map((i) => log.append(reading(i)))
  t.same(seqs.map((s) => s.seq), [1, 2, 3])
  await Promise.all(seqs.map(async (s) => await s.durable))
  const epoch = log.epoch
  await log.close()
  await log.close() // twice is fine

  const again = await DurableLog.open(options(path))
  t.teardown(async () => { await again.close() })
  t.notOk(again.report.created)
  t.notOk(again.report.uncleanStop)
  t.equal(again.epoch, epoch)
  t.equal(again.append(reading(4)).seq, 4)
  await again.close()
  const entries = await readAll(await DurableLog.open(options(path)))
  t.same(entries.map((e) => e.seq), [1, 2, 3, 4])
})

t.test('appends in one tick share one group commit, and read returns only committed entries', async (t) => {
  const path = t.testdir()
  const commits: number[] = []
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  const log = await DurableLog.open(options(path, {
    beforeCommit: async (n) => { commits.push(n); if (commits.length === 1) await held }
  }))
  t.teardown(async () => { await log.close() })
  const first = Array.from({ length: 50 }, (_, i) => log.append(reading(i)))
  // While the first commit is held open, more readings queue for the next one.
  await t.resolveMatch(new Promise<number>((resolve) => { const check = (): void => { commits.length === 1 ? resolve(1) : setImmediate(check) }; check() }), 1)
  const second = Array.from({ length: 30 }, (_, i) => log.append(reading(50 + i)))
  t.same(await log.read(0, 1000), [], 'nothing is readable before its commit is written')
  let durable = false
  void first[0].durable.then(() => { durable = true })
  await new Promise((resolve) => setImmediate(resolve))
  t.notOk(durable, 'durable waits for the write')
  release()
  await Promise.all([...first, ...second].map(async (a) => await a.durable))
  t.same(commits, [50, 30], 'two commits for 80 readings')
  const entries = await readAll(log)
  t.equal(entries.length, 80)
  t.same(entries.map((e) => e.seq), Array.from({ length: 80 }, (_, i) => i + 1))
  const e = entries[5]
  t.equal(e.kind, 'reading')
  if (e.kind === 'reading') {
    t.equal(e.topic, 's/2')
    t.same(Buffer.from(e.payload), Buffer.from('r5'))
    t.equal(e.time, 1_700_000_000_005)
  }
})

t.test('ack removes entries up to a position and the cursor survives a crash-like reopen', async (t) => {
  const path = t.testdir()
  const log = await DurableLog.open(options(path))
  for (let i = 1; i <= 20; i++) log.append(reading(i))
  await log.append(reading(21)).durable
  const entries = await readAll(log)
  await log.ack(entries[9].pos)
  t.same((await readAll(log)).map((e) => e.seq), Array.from({ length: 11 }, (_, i) => i + 11))
  // Reading from 0 finds nothing below the cursor: acknowledged entries are gone from disk.
  t.equal((await log.read(0, 100))[0].seq, 11)
  await log.close()
  const again = await DurableLog.open(options(path))
  t.teardown(async () => { await again.close() })
  t.equal(again.ackPos, entries[9].pos)
  t.same((await readAll(again)).map((e) => e.seq)[0], 11)
})

t.test('a reboot after an unclean stop begins a new epoch and announces it; a crash on the same boot does not', async (t) => {
  const path = t.testdir()
  // An unclean stop is a log that is never closed; a second open in this process would hit the
  // LevelDB lock, so the first run happens in a child process killed with SIGKILL.
  const { spawnSync } = await import('node:child_process')
  const script = `
    import { DurableLog } from ${JSON.stringify(new URL('../buffer/index.ts', import.meta.url).href)}
    const log = await DurableLog.open({ path: ${JSON.stringify(path)}, sync: 'interval', syncIntervalMs: 1000, bootId: process.argv[1] })
    for (let i = 1; i <= 5; i++) await log.append({ time: i, topic: 't', payload: Buffer.from('x') }).durable
    process.stdout.write(log.epoch)
    process.kill(process.pid, 'SIGKILL')
  `
  const crash = (bootId: string): string => {
    const child = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script, bootId], { encoding: 'utf8' })
    t.equal(child.signal, 'SIGKILL', 'the child was killed')
    return child.stdout
  }
  const epoch1 = crash('boot-a')
  t.match(epoch1, /^[0-9a-f]{32}$/)
  const epoch2 = crash('boot-a')
  t.equal(epoch2, epoch1, 'a crash on the same boot keeps the epoch')

  const log = await DurableLog.open(options(path, { bootId: 'boot-b' }))
  t.teardown(async () => { await log.close() })
  t.ok(log.report.uncleanStop)
  t.not(log.epoch, epoch1, 'a new boot after an unclean stop starts a new epoch')
  t.same(log.report.newEpoch, { epoch: log.epoch, previous: epoch1, lastDurableSeq: 10, reason: 'power-loss' })
  const next = log.append(reading(11))
  t.equal(next.seq, 11, 'seq goes on')
  await next.durable
  const entries = await readAll(log)
  t.same(entries.map((e) => [e.kind, e.seq, e.epoch]), [
    ...Array.from({ length: 10 }, (_, i) => ['reading', i + 1, epoch1]),
    ['epoch', 11, log.epoch],
    ['reading', 11, log.epoch]
  ], 'old readings keep their epoch; the announcement comes between the epochs')
})

t.test('two power losses in a row with no reading between them: each new epoch is announced', async (t) => {
  // A cut soon after a boot, before any new reading was durable, leaves the next epoch starting at
  // the same seq as the one before, whose announcement was already forwarded and acknowledged.
  const path = t.testdir()
  const { spawnSync } = await import('node:child_process')
  const script = `
    import { DurableLog } from ${JSON.stringify(new URL('../buffer/index.ts', import.meta.url).href)}
    const log = await DurableLog.open({ path: ${JSON.stringify(path)}, sync: 'interval', syncIntervalMs: 1000, bootId: process.argv[1] })
    for (let i = 0; i < Number(process.argv[2]); i++) await log.append({ time: i, topic: 't', payload: Buffer.from('x') }).durable
    // the forwarder's part: everything is sent and acknowledged upstream
    const entries = await log.read(log.ackPos, 1000)
    const announced = entries.filter((e) => e.kind === 'epoch').map((e) => e.data.epoch)
    if (entries.length > 0) await log.ack(entries[entries.length - 1].pos)
    process.stdout.write(JSON.stringify({ epoch: log.epoch, announced }))
    process.kill(process.pid, 'SIGKILL')
  `
  const boot = (bootId: string, readings: number): { epoch: string, announced: string[] } => {
    const child = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script, bootId, String(readings)], { encoding: 'utf8' })
    t.equal(child.signal, 'SIGKILL', 'the child was killed')
    return JSON.parse(child.stdout) as { epoch: string, announced: string[] }
  }
  const first = boot('boot-a', 3)
  const second = boot('boot-b', 0)
  t.not(second.epoch, first.epoch)
  t.same(second.announced, [second.epoch], 'the first power loss is announced')
  const third = boot('boot-c', 0)
  t.not(third.epoch, second.epoch)
  t.same(third.announced, [third.epoch], 'the second one is announced too, although no reading came between them')

  const log = await DurableLog.open(options(path, { bootId: 'boot-d' }))
  t.teardown(async () => { await log.close() })
  const next = log.append(reading(4))
  t.equal(next.seq, 4, 'seq goes on')
  await next.durable
  t.equal(log.epochOf(4), log.epoch, 'the new reading is of the newest epoch')
})

t.test('a second open of the same buffer is a clear locked error', async (t) => {
  const path = t.testdir()
  const log = await DurableLog.open(options(path))
  t.teardown(async () => { await log.close() })
  await t.rejects(DurableLog.open(options(path)), { code: 'SLUICE_BUFFER_LOCKED' })
})

t.test('append after close is refused', async (t) => {
  const log = await DurableLog.open(options(t.testdir()))
  await log.close()
  t.throws(() => log.append(reading(1)), { code: 'SLUICE_BUFFER_NOT_OPEN' })
})

/**
 * Runs test/helpers/sync-child.mjs under strace and returns, between its two markers, the
 * fsyncs of LevelDB's write-ahead log (*.log) and the group commits the log reported.
 */
async function observeSyncs (t: Test, sync: 'always' | 'interval'): Promise<{ walSyncs: number, commits: number }> {
  const dir = t.testdir()
  const trace = join(dir, 'strace.txt')
  const child = spawn('strace', ['-f', '-y', '-e', 'trace=fsync,fdatasync,write', '-o', trace, process.execPath, SYNC_CHILD, join(dir, 'db'), sync],
    { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const [code] = await once(child, 'close') as [number | null]
  t.equal(code, 0, `strace and the child ran (install strace if it is missing): ${stderr}`)
  const lines = readFileSync(trace, 'utf8').split('\n')
  const start = lines.findIndex((l) => /write\(1<[^>]*>, "appending/.test(l))
  const end = lines.findIndex((l) => /write\(1<[^>]*>, "commits \d+/.test(l))
  t.ok(start >= 0 && end > start, 'both markers are in the trace')
  const walSyncs = lines.slice(start, end).filter((l) => /f(data)?sync\(\d+<[^>]*\.log>\) = 0/.test(l)).length
  const commits = Number(/commits (\d+)/.exec(lines[end])?.[1])
  return { walSyncs, commits }
}

t.test('sync: always fsyncs every group commit and still groups (seen with strace)', async (t) => {
  const always = await observeSyncs(t, 'always')
  t.ok(always.commits >= 1 && always.commits <= 50, `100 readings in ${always.commits} group commits`)
  t.equal(always.walSyncs, always.commits, 'one fsync of the write-ahead log per group commit')
  // The control: without sync "always", a commit is not fsynced (so the observation can fail).
  const interval = await observeSyncs(t, 'interval')
  t.equal(interval.walSyncs, 0, 'sync: interval does not fsync the commits themselves')
})
