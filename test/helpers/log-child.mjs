// A DurableLog in a child process, driven over IPC by test/buffer-model.test.ts, so that a crash
// is a real SIGKILL at an arbitrary moment (commits in flight, timers pending), not a simulation.
// Plain JavaScript on the built dist/ (`npx tsc` first): a child on the TypeScript loader takes
// seconds to start, and the model test starts one after every crash.
//
// argv[2]: JSON { path, bootId, bootWall, offset, bounds, sync, syncIntervalMs, maintenanceIntervalMs }
// The TTL clock's sources are fake but consistent: the monotonic clock is performance.now() plus
// `offset` (the test advances it), the uptime counts from `bootWall` plus the same offset.
import { randomBytes } from 'node:crypto'
import { DurableLog } from '../../dist/buffer/index.js'
import { LOG_END, logKey, positionOf, seqOf } from '../../dist/buffer/keys.js'
import { decodeEntry } from '../../dist/buffer/codec.js'

const opts = JSON.parse(process.argv[2])
let offset = opts.offset
const monotonic = () => performance.now() + offset
const log = await DurableLog.open({
  path: opts.path,
  sync: opts.sync,
  syncIntervalMs: opts.syncIntervalMs,
  bootId: opts.bootId,
  bounds: opts.bounds,
  maintenanceIntervalMs: opts.maintenanceIntervalMs,
  monotonic,
  uptime: () => (Date.now() - opts.bootWall + offset) / 1000
})

if (process.env.SLUICE_MODEL_TRACE !== undefined) {
  const { directoryBytes } = await import('../../dist/buffer/bounds.js')
  setInterval(async () => {
    const real = await directoryBytes(opts.path)
    if (real > opts.bounds.maxBytes * 0.8) process.stderr.write(`  [child] est ${log.state.usage.bytes} (sampled ${log.state.usage.sampledBytes} + ${log.state.usage.writtenSince}) real ${real} health ${log.health.reason}\n`)
  }, 3).unref()
}

function describe (e) {
  if (e.kind === 'reading') {
    const text = Buffer.from(e.payload).subarray(0, 24).toString('latin1')
    return { kind: e.kind, pos: e.pos, seq: e.seq, epoch: e.epoch, rid: text.slice(0, text.indexOf('|')), storedAt: e.storedAt }
  }
  return { kind: e.kind, pos: e.pos, seq: e.seq, epoch: e.epoch, data: e.data }
}

function state () {
  return {
    lastSeq: log.lastSeq,
    lastCommittedSeq: log.lastCommittedSeq,
    ackPos: log.ackPos,
    health: log.health,
    dropped: log.dropped,
    readHigh: log.state.readHigh,
    epoch: log.epoch
  }
}

async function handle (m) {
  switch (m.op) {
    case 'append': {
      const appended = []
      for (const r of m.readings) {
        const payload = Buffer.concat([Buffer.from(`${r.rid}|`), randomBytes(r.size)])
        const a = log.append({ time: Date.now(), topic: 'sensors/model', payload }, { canWait: r.canWait })
        appended.push({ rid: r.rid, seq: a.seq, dropped: a.dropped })
        a.durable.then(() => { process.send({ durable: a.seq }) }, () => {})
      }
      return { appended }
    }
    case 'read':
      return { entries: (await log.read(m.after, m.limit)).map(describe) }
    case 'ack':
      await log.ack(m.upTo)
      return {}
    case 'expire': {
      offset += m.advanceMs
      const cutoff = log.state.ttlClock.now() - opts.bounds.ttlMs
      // Readings held back by a full buffer are written later, stamped with the time they were
      // accepted: the next expiry takes them.
      const committed = log.lastCommittedSeq
      const dropped = await log.expire()
      return { cutoff, committed, dropped }
    }
    case 'snapshot': {
      // Straight from LevelDB, past the log's API: reading through it would count as the
      // forwarder having read everything, and protect it from drops.
      // Commits may land while the scan runs: the state before and after bracket what it sees.
      const before = state()
      const entries = []
      for await (const [key, value] of log.state.db.iterator({ gt: logKey(log.ackPos), lt: LOG_END })) {
        const pos = positionOf(key)
        const seq = seqOf(pos)
        entries.push(describe(decodeEntry(pos, seq, log.epochOf(seq), value)))
      }
      return { entries, before, state: state() }
    }
    case 'state':
      return { state: state() }
    case 'close': {
      const timer = process.env.SLUICE_MODEL_TRACE === undefined ? null : setInterval(() => {
        process.stderr.write(`closing: writing ${log.commits.writing !== null} queue ${log.commits.queue.length} acking ${log.acks.acking !== null} maintaining ${log.maintenance.running !== null} gate ${log.state.gate.active} ${log.state.gate.exclusiveHeld !== null} db ${log.state.db.status}\n`)
      }, 1000)
      await log.close()
      if (timer !== null) clearInterval(timer)
      return {}
    }
    default:
      throw new Error(`unknown op ${m.op}`)
  }
}

process.on('message', (m) => {
  handle(m).then(
    // After a clean close the process ends (the IPC channel would keep it alive).
    (reply) => { process.send({ id: m.id, ok: true, ...reply }, () => { if (m.op === 'close') process.disconnect() }) },
    (err) => { process.send({ id: m.id, ok: false, error: String(err?.stack ?? err) }) }
  )
})
// The test died: die with it, as after a crash (no clean close), rather than hold the lock.
process.on('disconnect', () => { process.kill(process.pid, 'SIGKILL') })
process.send({ ready: true, state: state(), report: log.report })
