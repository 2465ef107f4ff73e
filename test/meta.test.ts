/**
 * The buffer's meta records on disk (buffer/meta.ts): their keys and encodings are part of the
 * on-disk format, so a buffer written by an earlier version of sluice must open where it stood.
 * The keys and values here are spelled out byte for byte, not taken from the code under test.
 */
import t from 'tap'
import { ClassicLevel } from 'classic-level'
import { Encoder } from 'cbor-x'
import { DurableLog } from '../buffer/index.js'

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false })
const EPOCH = 'a1'.repeat(16)

/** A log entry's key: 'l' then the position (seq * 4 + slot; a reading's slot is 3), 8 bytes big-endian. */
function entryKey (seq: number): Buffer {
  const key = Buffer.alloc(9)
  key[0] = 0x6c
  key.writeBigUInt64BE(BigInt(seq * 4 + 3), 1)
  return key
}

const meta = (name: string): Buffer => Buffer.from(`m${name}`, 'latin1')

async function rawDb (path: string): Promise<ClassicLevel<Buffer, Buffer>> {
  const db = new ClassicLevel<Buffer, Buffer>(path, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  await db.open()
  return db
}

t.test('a buffer written as earlier versions wrote it opens where it stood, and closes in the same format', async (t) => {
  const path = t.testdir()
  const db = await rawDb(path)
  // Seqs 1-2 acknowledged (the cursor on seq 2's reading: position 11), 3-5 waiting, a clean stop.
  await db.batch([
    { type: 'put', key: meta('epochs'), value: cbor.encode([{ epoch: EPOCH, from: 1 }]) },
    { type: 'put', key: meta('last'), value: cbor.encode(5) },
    { type: 'put', key: meta('ack'), value: cbor.encode(11) },
    { type: 'put', key: meta('state'), value: cbor.encode({ bootId: 'boot-a', running: false }) },
    { type: 'put', key: meta('clock'), value: cbor.encode({ now: 50_000, bootId: 'boot-a', uptime: 100 }) },
    ...[3, 4, 5].map((seq) => ({
      type: 'put' as const,
      key: entryKey(seq),
      value: cbor.encode([0, 1_700_000_000_000 + seq, `sensors/${seq}`, Buffer.from(`r${seq}`), 40_000 + seq])
    }))
  ])
  await db.close()

  const log = await DurableLog.open({
    path, sync: 'interval', syncIntervalMs: 1000, bootId: 'boot-a', uptime: () => 100, monotonic: () => 0
  })
  t.teardown(async () => { await log.close() })
  t.same(log.report, { created: false, uncleanStop: false }, 'a known buffer, stopped cleanly')
  t.equal(log.epoch, EPOCH, 'same epoch')
  t.equal(log.lastSeq, 5, 'last seq from its record')
  t.equal(log.ackPos, 11, 'ack cursor from its record')
  const entries = await log.read(log.ackPos, 10)
  t.same(entries.map((e) => e.kind === 'reading' ? [e.seq, e.topic, e.epoch, e.storedAt] : e.kind), [
    [3, 'sensors/3', EPOCH, 40_003], [4, 'sensors/4', EPOCH, 40_004], [5, 'sensors/5', EPOCH, 40_005]
  ], 'the waiting readings, in order')
  await log.append({ time: 1_700_000_000_006, topic: 'sensors/6', payload: Buffer.from('r6') }).durable
  await log.ack(entries[0].pos)
  await log.close()

  const after = await rawDb(path)
  t.teardown(async () => { await after.close() })
  const records = new Map<string, unknown>()
  for await (const [key, value] of after.iterator({ gte: Buffer.from('m'), lt: Buffer.from('n') })) {
    records.set(key.toString('latin1'), cbor.decode(value))
  }
  t.same([...records.keys()].sort(), ['mack', 'mclock', 'mepochs', 'mlast', 'mstate'], 'the same five records, no other')
  t.same(records.get('mepochs'), [{ epoch: EPOCH, from: 1 }], 'the epochs')
  t.equal(records.get('mlast'), 6, 'the last seq written')
  t.equal(records.get('mack'), 15, "the cursor on seq 3's reading")
  t.same(records.get('mstate'), { bootId: 'boot-a', running: false }, 'a clean stop')
  const clock = records.get('mclock') as { now: number, bootId: string, uptime: number }
  t.same(clock, { now: 50_000, bootId: 'boot-a', uptime: 100 }, 'buffer time carried on: no time passed on the fake clocks')
})
