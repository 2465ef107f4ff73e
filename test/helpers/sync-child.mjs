// A DurableLog in a child process for test/buffer.test.ts, run under strace so that the test sees
// the fsyncs LevelDB really makes. Plain JavaScript on the built dist/ (`npm run build` first).
// argv: PATH SYNC. Appends 100 readings in 5 waves of 20 (each wave within one tick, the next
// one while the previous commit may still be writing) and writes two markers to stdout around
// them, which strace shows in order with the fsyncs: "appending", then "commits N".
import { DurableLog } from '../../dist/buffer/index.js'

const [path, sync] = process.argv.slice(2)
const log = await DurableLog.open({ path, sync, syncIntervalMs: 600_000, bootId: 'boot-sync' })
let commits = 0
log.on('commit', () => { commits++ })
process.stdout.write('appending\n')
const all = []
for (let wave = 0; wave < 5; wave++) {
  for (let i = 0; i < 20; i++) all.push(log.append({ time: 1_700_000_000_000 + i, topic: 's/1', payload: Buffer.from(`r${wave}-${i}`) }))
  await new Promise((resolve) => setImmediate(resolve))
}
await Promise.all(all.map((a) => a.durable))
process.stdout.write(`commits ${commits}\n`)
await log.close()
