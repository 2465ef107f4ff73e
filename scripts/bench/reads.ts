/**
 * 10. Reading the log back: what one read of the buffer costs per reading, as the forwarder reads
 * it when it drains a backlog (400 entries a read, the `cbor-batch` chunk), in the bench's own
 * process with nothing else running.
 *
 * sluice: the log as it is stored, one LevelDB entry per reading, written through DurableLog and
 * read with `DurableLog.read` (the iterator, the key's position, the record decoded).
 *
 * Baseline: the same records, written by the same record writer, stored 100 to a LevelDB entry
 * (one CBOR array of the records), read 400 readings a read and decoded into the same entries.
 * Not a format sluice has: it measures what storing a group commit's readings as one entry would
 * save, because classic-level hands every key and every value to JavaScript in a Buffer of its
 * own, and that, not LevelDB, is most of a read (docs/benchmarks.md, target 4).
 */
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { Encoder } from 'cbor-x'
import { DurableLog, type LogEntry } from '../../buffer/index.js'
import { writeReadingRecord } from '../../buffer/reading-record.js'
import { LOG_END, Slot, logKey, position, positionOf, seqOf } from '../../buffer/keys.js'
import { makeRow, progress, type ScenarioResult, type Sizes } from './runner.js'
import { tempDir } from './common.js'

const READINGS = 200_000
/** entries a read, as the forwarder reads with `cbor-batch` (two 200-reading batches) */
const CHUNK = 400
/** readings to one LevelDB entry in the baseline */
const GROUP = 100
/** a CBOR array of GROUP items: a group is one CBOR document, decoded by the same call as a record */
const GROUP_HEAD = Buffer.from([0x98, GROUP])
/** each commit of the fill, in readings */
const COMMIT = 1000
const TOPIC = 'sensors/s-07/env'
const PAYLOAD = Buffer.from('{"sensor":"s-07","temp":21.37,"hum":48.2,"seq":123456,"x":1}')
// The buffer's decoding options (buffer/codec.ts).
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false })

type Layout = 'entry-per-reading' | 'entry-per-100'

interface ReadRun {
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

/** Reads a layout through once; returns how many readings came back (every one, or it throws). */
type ReadAll = () => Promise<number>

export async function logReads (sizes: Sizes): Promise<ScenarioResult> {
  const dir = await tempDir('reads')
  try {
    const perReading = await entryPerReading(join(dir.path, 'log'))
    const grouped = await entryPerGroup(join(dir.path, 'grouped'))
    try {
      const runs: ReadRun[] = []
      // One round unmeasured first: both layouts read once with cold code and a cold cache.
      for (let repeat = 0; repeat <= sizes.repeats; repeat++) {
        for (const [layout, readAll] of [['entry-per-reading', perReading.readAll], ['entry-per-100', grouped.readAll]] as const) {
          const run = await measure(layout, repeat, readAll)
          if (repeat === 0) continue
          runs.push(run)
          progress(`reads ${layout} #${repeat}: ${run.wallPerReading.toFixed(2)} µs a reading, ${run.cpuPerReading.toFixed(2)} µs CPU, main thread busy ${(run.mainThreadBusy * 100).toFixed(0)}%`)
        }
      }
      const of = (layout: Layout, pick: (r: ReadRun) => number): number[] => runs.filter((r) => r.layout === layout).map(pick)
      const section = `10. reading the log back, ${READINGS.toLocaleString('en-US')} readings, ${CHUNK} a read`
      const baselineName = `the same records, ${GROUP} to a LevelDB entry`
      return {
        rows: [
          makeRow({ section, name: 'read and decoded, wall time', unit: 'µs/reading', better: 'lower', baselineName, sluiceRuns: of('entry-per-reading', (r) => r.wallPerReading), baselineRuns: of('entry-per-100', (r) => r.wallPerReading) }),
          makeRow({ section, name: 'read and decoded, CPU time', unit: 'µs/reading', better: 'lower', baselineName, sluiceRuns: of('entry-per-reading', (r) => r.cpuPerReading), baselineRuns: of('entry-per-100', (r) => r.cpuPerReading) })
        ],
        runs
      }
    } finally {
      await perReading.close()
      await grouped.close()
    }
  } finally {
    await dir.remove()
  }
}

async function measure (layout: Layout, repeat: number, readAll: ReadAll): Promise<ReadRun> {
  const elu = performance.eventLoopUtilization()
  const cpu = process.cpuUsage()
  const t0 = performance.now()
  const readings = await readAll()
  const ms = performance.now() - t0
  const used = process.cpuUsage(cpu)
  if (readings !== READINGS) throw new Error(`${layout}: read ${readings} readings of ${READINGS}`)
  return {
    layout,
    repeat,
    readings,
    wallPerReading: ms * 1000 / readings,
    cpuPerReading: (used.user + used.system) / readings,
    mainThreadBusy: performance.eventLoopUtilization(elu).utilization
  }
}

/**
 * Compacts a filled store into LevelDB's tables before it is read, as a backlog that has waited
 * a while would be: a compaction running beside the reads would be counted as their CPU.
 */
async function compact (path: string): Promise<void> {
  const db = new ClassicLevel<Buffer, Buffer>(path, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  await db.open()
  try {
    await db.compactRange(Buffer.alloc(0), Buffer.from([0xff]))
  } finally {
    await db.close()
  }
}

/** The log as sluice stores it, filled, compacted and reopened before reading. */
async function entryPerReading (path: string): Promise<{ readAll: ReadAll, close: () => Promise<void> }> {
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
async function entryPerGroup (path: string): Promise<{ readAll: ReadAll, close: () => Promise<void> }> {
  const open = async (): Promise<ClassicLevel<Buffer, Buffer>> => {
    const db = new ClassicLevel<Buffer, Buffer>(path, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    await db.open()
    return db
  }
  const filling = await open()
  const storedAt = Date.now()
  for (let i = 0; i < READINGS; i += COMMIT) {
    const ops = []
    for (let g = i; g < i + COMMIT; g += GROUP) {
      const records: Buffer[] = []
      for (let seq = g; seq < g + GROUP; seq++) records.push(writeReadingRecord(storedAt + seq, TOPIC, PAYLOAD, storedAt + seq) as Buffer)
      ops.push({ type: 'put' as const, key: logKey(position(g, Slot.Reading)), value: Buffer.concat([GROUP_HEAD, ...records]) })
    }
    await filling.batch(ops)
  }
  await filling.close()
  await compact(path)
  const db = await open()
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
