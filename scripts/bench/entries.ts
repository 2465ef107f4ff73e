/**
 * 10-11. The log's LevelDB entries: one per reading, as sluice stores them, beside the same
 * records 100 to an entry, in the bench's own process with nothing else running. classic-level
 * hands every key and every value to JavaScript in a Buffer of its own, and that, not LevelDB, is
 * most of a read (docs/benchmarks.md, target 4); these two sections measure what fewer, larger
 * entries would save. The grouped layout is not a format sluice has.
 *
 * 10. Reading back, 400 readings a read (the `cbor-batch` chunk of a drain). sluice: written
 * through DurableLog, read with `DurableLog.read` (the iterator, the key's position, the record
 * decoded). Baseline: the same records, written by the same record writer, stored 100 to an
 * entry (one CBOR array of the records), read and decoded into the same entries.
 *
 * 11. Writing, commits of 100 readings, each a chained batch as the log's group commit writes it
 * (buffer/commits.ts), without the rest of a commit (seqs, fences, meta): one put per reading,
 * against one put of the commit's 100 records. Both encode each record with the same writer; the
 * CPU includes LevelDB's compactions of what was written while it ran.
 */
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { Encoder } from 'cbor-x'
import { DurableLog, type LogEntry } from '../../buffer/index.js'
import { writeReadingRecord } from '../../buffer/reading-record.js'
import { LOG_END, Slot, logKey, position, positionOf, seqOf } from '../../buffer/keys.js'
import { makeRow, progress, type Row, type ScenarioResult, type Sizes } from './runner.js'
import { tempDir } from './common.js'

const READINGS = 200_000
/** entries a read, as the forwarder reads with `cbor-batch` (two 200-reading batches) */
const CHUNK = 400
/** readings to one LevelDB entry in the baseline */
const GROUP = 100
/** a CBOR array of GROUP items: a group is one CBOR document, decoded by the same call as a record */
const GROUP_HEAD = Buffer.from([0x98, GROUP])
/** each commit of the fill before section 10's reads, in readings */
const COMMIT = 1000
const TOPIC = 'sensors/s-07/env'
const PAYLOAD = Buffer.from('{"sensor":"s-07","temp":21.37,"hum":48.2,"seq":123456,"x":1}')
// The buffer's decoding options (buffer/codec.ts).
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false })

type Layout = 'entry-per-reading' | 'entry-per-100'
type Operation = 'read' | 'write'

interface Run {
  operation: Operation
  layout: Layout
  repeat: number
  readings: number
  /** wall time per reading, µs */
  wallPerReading: number
  /** CPU time of the process per reading (main thread and LevelDB's threads), µs */
  cpuPerReading: number
  /** share of the wall time the main thread was busy */
  mainThreadBusy: number
}

/** Reads (or writes) a layout through once; returns how many readings it handled. */
type Pass = () => Promise<number>

/** readings in each commit of section 11: one group of the baseline per commit */
const WRITE_COMMIT = GROUP
const LAYOUTS: readonly Layout[] = ['entry-per-reading', 'entry-per-100']

export async function logEntries (sizes: Sizes): Promise<ScenarioResult> {
  const dir = await tempDir('entries')
  try {
    const reads = { 'entry-per-reading': await entryPerReading(join(dir.path, 'log')), 'entry-per-100': await entryPerGroup(join(dir.path, 'grouped')) }
    const runs: Run[] = []
    try {
      // Round 0 is not counted: each pass runs once with cold code and a cold cache first.
      for (let repeat = 0; repeat <= sizes.repeats; repeat++) {
        for (const layout of LAYOUTS) {
          const read = await measure('read', layout, repeat, reads[layout].readAll)
          const write = await measure('write', layout, repeat, writePass(join(dir.path, `written-${layout}-${repeat}`), layout))
          if (repeat === 0) continue
          runs.push(read, write)
          for (const run of [read, write]) {
            progress(`${run.operation} ${layout} #${repeat}: ${run.wallPerReading.toFixed(2)} µs a reading, ${run.cpuPerReading.toFixed(2)} µs CPU, main thread busy ${(run.mainThreadBusy * 100).toFixed(0)}%`)
          }
        }
      }
    } finally {
      for (const layout of LAYOUTS) await reads[layout].close()
    }
    const of = (operation: Operation, layout: Layout, pick: (r: Run) => number): number[] =>
      runs.filter((r) => r.operation === operation && r.layout === layout).map(pick)
    const rowsOf = (operation: Operation, section: string, what: string): Row[] => [
      ['wall time', (r: Run) => r.wallPerReading] as const,
      ['CPU time', (r: Run) => r.cpuPerReading] as const
    ].map(([name, pick]) => makeRow({
      section,
      name: `${what}, ${name}`,
      unit: 'µs/reading',
      better: 'lower',
      baselineName: `the same records, ${GROUP} to a LevelDB entry`,
      sluiceRuns: of(operation, 'entry-per-reading', pick),
      baselineRuns: of(operation, 'entry-per-100', pick)
    }))
    const n = READINGS.toLocaleString('en-US')
    return {
      rows: [
        ...rowsOf('read', `10. reading the log back, ${n} readings, ${CHUNK} a read`, 'read and decoded'),
        ...rowsOf('write', `11. writing the log, ${n} readings, ${WRITE_COMMIT} a commit`, 'encoded and written')
      ],
      runs
    }
  } finally {
    await dir.remove()
  }
}

async function measure (operation: Operation, layout: Layout, repeat: number, pass: Pass): Promise<Run> {
  const elu = performance.eventLoopUtilization()
  const cpu = process.cpuUsage()
  const t0 = performance.now()
  const readings = await pass()
  const ms = performance.now() - t0
  const used = process.cpuUsage(cpu)
  if (readings !== READINGS) throw new Error(`${operation} ${layout}: ${readings} readings of ${READINGS}`)
  return {
    operation,
    layout,
    repeat,
    readings,
    wallPerReading: ms * 1000 / readings,
    cpuPerReading: (used.user + used.system) / readings,
    mainThreadBusy: performance.eventLoopUtilization(elu).utilization
  }
}

/**
 * Section 11's pass: a new store at `path`, READINGS readings written to it in commits of
 * WRITE_COMMIT, each a chained batch written without fsync (`sync: interval` between fsyncs).
 */
function writePass (path: string, layout: Layout): Pass {
  return async () => {
    const db = await openStore(path)
    try {
      const storedAt = Date.now()
      for (let first = 0; first < READINGS; first += WRITE_COMMIT) {
        const batch = db.batch()
        if (layout === 'entry-per-reading') {
          for (let seq = first; seq < first + WRITE_COMMIT; seq++) {
            batch.put(logKey(position(seq, Slot.Reading)), record(seq, storedAt))
          }
        } else {
          batch.put(logKey(position(first, Slot.Reading)), groupValue(first, storedAt))
        }
        await batch.write({ sync: false })
      }
      return READINGS
    } finally {
      await db.close()
    }
  }
}

/** The value of a group: its GROUP records as one CBOR array. */
function groupValue (first: number, storedAt: number): Buffer {
  const records: Buffer[] = [GROUP_HEAD]
  for (let seq = first; seq < first + GROUP; seq++) records.push(record(seq, storedAt))
  return Buffer.concat(records)
}

/** A reading's record as the log stores it, timed `seq` ms after `storedAt`. */
function record (seq: number, storedAt: number): Buffer {
  return writeReadingRecord(storedAt + seq, TOPIC, PAYLOAD, storedAt + seq) as Buffer
}

async function openStore (path: string): Promise<ClassicLevel<Buffer, Buffer>> {
  const db = new ClassicLevel<Buffer, Buffer>(path, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  await db.open()
  return db
}

/**
 * Compacts a filled store into LevelDB's tables before it is read, as a backlog that has waited
 * a while would be: a compaction running beside the reads would be counted as their CPU.
 */
async function compact (path: string): Promise<void> {
  const db = await openStore(path)
  try {
    await db.compactRange(Buffer.alloc(0), Buffer.from([0xff]))
  } finally {
    await db.close()
  }
}

/** The log as sluice stores it, filled, compacted and reopened before reading. */
async function entryPerReading (path: string): Promise<{ readAll: Pass, close: () => Promise<void> }> {
  const options = { path, sync: 'interval' as const, syncIntervalMs: 1000, bootId: 'bench' }
  const filling = await DurableLog.open(options)
  const storedAt = Date.now()
  for (let i = 0; i < READINGS; i += COMMIT) {
    let durable: Promise<unknown> = Promise.resolve()
    for (let j = 0; j < COMMIT; j++) durable = filling.append({ time: storedAt + i + j, topic: TOPIC, payload: PAYLOAD }).durable
    await durable
  }
  await filling.close()
  await compact(path)
  const log = await DurableLog.open(options)
  const readAll = async (): Promise<number> => {
    let count = 0
    let after = log.ackPos
    for (;;) {
      const entries = await log.read(after, CHUNK)
      if (entries.length === 0) return count
      for (const entry of entries) if (entry.kind === 'reading') count++
      after = entries[entries.length - 1].pos
    }
  }
  return { readAll, close: async () => { await log.close() } }
}

/** The same records, GROUP to an entry keyed by the group's first reading, compacted and reopened. */
async function entryPerGroup (path: string): Promise<{ readAll: Pass, close: () => Promise<void> }> {
  const filling = await openStore(path)
  const storedAt = Date.now()
  for (let i = 0; i < READINGS; i += COMMIT) {
    const ops = []
    for (let g = i; g < i + COMMIT; g += GROUP) {
      ops.push({ type: 'put' as const, key: logKey(position(g, Slot.Reading)), value: groupValue(g, storedAt) })
    }
    await filling.batch(ops)
  }
  await filling.close()
  await compact(path)
  const db = await openStore(path)
  const readAll = async (): Promise<number> => {
    let count = 0
    let after = position(0, Slot.Reading) - 1
    for (;;) {
      const groups = await db.iterator({ gt: logKey(after), lt: LOG_END, limit: CHUNK / GROUP }).all()
      if (groups.length === 0) return count
      const entries: LogEntry[] = []
      for (const [key, value] of groups) {
        const first = seqOf(positionOf(key))
        const records = cbor.decode(value) as unknown[][]
        records.forEach((r, i) => {
          const seq = first + i
          entries.push({ kind: 'reading', pos: position(seq, Slot.Reading), seq, epoch: 'bench', time: r[1] as number, topic: r[2] as string, payload: r[3] as Uint8Array, storedAt: r[4] as number })
        })
      }
      count += entries.length
      after = positionOf(groups[groups.length - 1][0])
    }
  }
  return { readAll, close: async () => { await db.close() } }
}
