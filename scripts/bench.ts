/**
 * sluice's benchmarks: `npm run bench` (about 15 minutes) or `node dist/scripts/bench.js --quick`
 * (about 5 minutes). Each figure is measured beside a baseline in the same run, repeated, and
 * reported as medians with their spread; a table goes to stdout and the full results (every run,
 * memory samples, machine info) to bench-results/bench-<timestamp>.json and bench-results/latest.json.
 *
 *   1. end-to-end throughput (sensors -> sluice -> upstream), vs a bare aedes forwarding with no disk
 *   2. ingest with PUBACK-after-durable, upstream down, vs bare aedes ingest; and with 100 broker
 *      users x 20 ACL patterns each, vs the same with no users
 *   3. drain rate of a backlog, vs one client publishing the same messages straight upstream
 *   4. time to ready with a large backlog, vs an empty buffer
 *   5. memory growth while buffering, vs a forwarder that queues in memory
 *   6. resident memory of the spawned daemon (`sluice run`) while its backlog grows, vs the same
 *      forwarder
 *   7-9. the spawned daemon vs an edge mosquitto with persistence bridged QoS 1 to the upstream
 *      (where mosquitto is installed): saturating, fixed rate with latency from the first
 *      publish after start, a backlog buffered with the upstream down then drained; each with
 *      peak RSS, CPU-seconds per 100k readings and bytes written per reading (/proc/PID)
 *  10-11. reading the log back as a drain does, and writing it in commits, per reading, vs the
 *      same records stored 100 to a LevelDB entry (what classic-level's Buffer per key and value
 *      costs)
 *
 * Everything listens on 127.0.0.1 only; every load is bounded, every wait has a timeout. Flags:
 * --quick (smaller loads), --only=e2e,ingest,drain,ready,backlog,saturate,rate,buffered,entries
 * (a subset; ingest includes memory), --inflight=N (sluice's upstream.inflight and the baselines'
 * window; default 64), --memory=SIZE (the spawned daemon of 6-9 runs in a memory cgroup that
 * size, as on a board with that much RAM: bench/memory-budget.ts; needs root), --json FILE (write
 * the figures there too).
 */
import { endToEnd } from './bench/e2e.js'
import { ingestAndMemory } from './bench/ingest.js'
import { drain } from './bench/drain.js'
import { makeTemplates, timeToReady } from './bench/ready.js'
import { backlogMemory } from './bench/backlog.js'
import { logEntries } from './bench/entries.js'
import { formatTable, machineInfo, writeResults } from './bench/report.js'
import { peer } from './bench/peer.js'
import { mosquittoInstalled } from './bench/mosquitto.js'
import { Scope, type Row, type ScenarioResult, type Sizes } from './bench/runner.js'
import { Daemon } from './bench/daemon.js'
import { MemoryBudget, parseSize } from './bench/memory-budget.js'

const SCENARIOS = ['e2e', 'ingest', 'drain', 'ready', 'backlog', 'saturate', 'rate', 'buffered', 'entries'] as const
type Scenario = typeof SCENARIOS[number]

const QUICK: Sizes = {
  repeats: 3,
  publishers: 10,
  window: 100,
  forwarderInflight: 64,
  e2eMessages: 30_000,
  e2eWarmup: 3_000,
  ingestMessages: 30_000,
  ingestWarmup: 10_000,
  drainMessages: 30_000,
  readyBacklogs: [200_000],
  backlogReadings: 200_000,
  rate: 5000,
  rateDurationMs: 10_000,
  peerBacklog: 100_000,
  timeoutMs: 120_000
}

const FULL: Sizes = {
  ...QUICK,
  e2eMessages: 100_000,
  e2eWarmup: 5_000,
  ingestMessages: 200_000,
  ingestWarmup: 100_000,
  drainMessages: 200_000,
  readyBacklogs: [200_000, 1_000_000],
  backlogReadings: 1_000_000,
  rateDurationMs: 30_000,
  peerBacklog: 1_000_000,
  timeoutMs: 180_000
}

function parseArgs (argv: string[]): { quick: boolean, only: Set<Scenario>, inflight: number | null, json: string | null, memory: number | null } {
  let quick = false
  let memory: number | null = null
  let json: string | null = null
  let only = new Set<Scenario>(SCENARIOS)
  let inflight: number | null = null
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--quick') quick = true
    else if (arg === '--json' || arg.startsWith('--json=')) {
      json = arg === '--json' ? argv[++i] ?? usage('--json takes a file name') : arg.slice('--json='.length)
    }
    else if (arg.startsWith('--inflight=')) {
      inflight = Number(arg.slice('--inflight='.length))
      if (!Number.isInteger(inflight) || inflight < 1 || inflight > 65535) usage('--inflight takes an integer from 1 to 65535')
    } else if (arg.startsWith('--memory=')) {
      memory = parseSize(arg.slice('--memory='.length))
      if (memory === null || memory < 64 * 1024 ** 2) usage('--memory takes a size of 64M or more, e.g. 512M or 1G')
    } else if (arg.startsWith('--only=')) {
      const names = arg.slice('--only='.length).split(',')
      for (const name of names) {
        if (!(SCENARIOS as readonly string[]).includes(name)) usage(`unknown scenario "${name}"`)
      }
      only = new Set(names as Scenario[])
    } else if (arg === '--help' || arg === '-h') usage()
    else usage(`unknown argument "${arg}"`)
  }
  return { quick, only, inflight, json, memory }
}

function usage (error?: string): never {
  if (error !== undefined) process.stderr.write(`bench: ${error}\n`)
  process.stderr.write(`usage: node dist/scripts/bench.js [--quick] [--only=${SCENARIOS.join(',')}] [--inflight=N] [--memory=SIZE] [--json FILE]\n`)
  process.exit(error === undefined ? 0 : 2)
}

async function main (): Promise<number> {
  const { quick, only, inflight, json, memory } = parseArgs(process.argv.slice(2))
  const sizes = { ...(quick ? QUICK : FULL), ...(inflight === null ? {} : { forwarderInflight: inflight }) }
  const startedAt = new Date()
  const machine = machineInfo()
  process.stderr.write(`sluice bench (${quick ? 'quick' : 'full'}): ${machine.cpus as number} cpus, node ${process.version}\n`)
  const budget = memory === null ? null : await MemoryBudget.create(memory)
  Daemon.budget = budget
  if (budget !== null) process.stderr.write(`the spawned daemon runs in a memory cgroup of ${budget.describe()}\n`)

  const rows: Row[] = []
  const runs: Record<string, unknown> = {}
  const errors: Record<string, string> = {}
  const templates = new Scope()
  const step = async (name: Scenario, fn: () => Promise<ScenarioResult>): Promise<void> => {
    if (!only.has(name)) return
    process.stderr.write(`${name}\n`)
    const t = Date.now()
    try {
      const result = await fn()
      rows.push(...result.rows)
      runs[name] = result.runs
    } catch (err) {
      errors[name] = err instanceof Error ? err.stack ?? err.message : String(err)
      process.stderr.write(`  FAILED: ${errors[name]}\n`)
    }
    process.stderr.write(`  (${((Date.now() - t) / 1000).toFixed(0)} s)\n`)
  }

  try {
    await step('e2e', async () => await endToEnd(sizes))
    await step('ingest', async () => await ingestAndMemory(sizes))
    if (only.has('drain') || only.has('ready')) {
      process.stderr.write('buffers\n')
      const needed = [...(only.has('drain') ? [sizes.drainMessages] : []), ...(only.has('ready') ? sizes.readyBacklogs : [])]
      const made = await makeTemplates(templates, needed)
      await step('drain', async () => await drain(sizes, made.backlogs.get(sizes.drainMessages) as string))
      await step('ready', async () => await timeToReady(sizes, made))
    }
    await step('backlog', async () => await backlogMemory(sizes))
    const bridged = { saturate: only.has('saturate'), rate: only.has('rate'), backlog: only.has('buffered') }
    if (bridged.saturate || bridged.rate || bridged.backlog) {
      if (mosquittoInstalled()) {
        for (const [name, flag] of [['saturate', 'saturate'], ['rate', 'rate'], ['buffered', 'backlog']] as const) {
          if (bridged[flag]) await step(name, async () => await peer(sizes, { saturate: false, rate: false, backlog: false, [flag]: true }))
        }
      } else {
        process.stderr.write('saturate, rate, buffered: skipped, mosquitto is not installed (the baseline is a mosquitto bridge)\n')
      }
    }
    await step('entries', async () => await logEntries(sizes))
  } finally {
    await templates.close()
    await budget?.remove()
  }

  const durationS = (Date.now() - startedAt.getTime()) / 1000
  const table = formatTable(rows, sizes.repeats)
  process.stdout.write(`\n${table}\n`)
  if (budget !== null) process.stdout.write(`The spawned sluice daemon (6-9) ran in a memory cgroup of ${budget.describe()}; everything else did not.\n`)
  const file = await writeResults(json, {
    date: startedAt.toISOString(),
    durationS,
    mode: quick ? 'quick' : 'full',
    scenarios: [...only],
    machine,
    daemonMemoryBudget: budget === null ? null : { bytes: budget.bytes, cgroup: budget.version },
    loadavgAtEnd: machineInfo().loadavg,
    sizes,
    rows,
    errors,
    runs
  })
  process.stdout.write(`\n${Object.keys(errors).length === 0 ? '' : `FAILED: ${Object.keys(errors).join(', ')}\n`}` +
    `finished in ${durationS.toFixed(0)} s; results in ${file}${json === null ? '' : `, ${json}`} and bench-results/latest.json\n`)
  return Object.keys(errors).length === 0 ? 0 : 1
}

main().then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
})
