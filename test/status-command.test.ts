/**
 * What a command loads, seen by a module-resolution hook in the spawned CLI that records every
 * module it resolves. `sluice status` is a small HTTP client: it must start fast on a Pi and stay
 * out of the daemon's way, so it loads neither the gateway nor the Prometheus client. `sluice run`
 * leaves out what its config does not use (MQTT.js without a subscription, pino-pretty without a
 * terminal): each is megabytes of a daemon's memory.
 */
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BIN, runNode, startDaemon, writeConfig } from './helpers/daemon.js'
import { startGateway } from './helpers/gateway.js'
import { startMosquitto } from './helpers/mosquitto.js'

/** Writes an `--import` hook that records the URL of every module resolved into `record`. */
function recordingHook (dir: string, record: string): string {
  writeFileSync(record, '')
  writeFileSync(join(dir, 'hooks.mjs'), [
    "import { appendFileSync } from 'node:fs'",
    'export async function resolve (specifier, context, next) {',
    '  const result = await next(specifier, context)',
    `  appendFileSync(${JSON.stringify(record)}, result.url + '\\n')`,
    '  return result',
    '}'
  ].join('\n'))
  const register = join(dir, 'register.mjs')
  writeFileSync(register, "import { register } from 'node:module'\nregister('./hooks.mjs', import.meta.url)\n")
  return register
}

const loaded = (record: string): string[] => readFileSync(record, 'utf8').split('\n').filter((l) => l !== '')
const promClient = (url: string): boolean => url.includes('/node_modules/prom-client/')

t.test('sluice status prints the summary without loading prom-client or the gateway', async (t) => {
  const dir = t.testdir()
  const upstream = await startMosquitto(t)
  const gateway = await startGateway(t, { upstreamUrl: upstream.url, bufferPath: join(dir, 'buffer'), gatewayId: 'gw-light' })
  const admin = gateway.adminAddress()
  if (admin === null) throw new Error('the gateway has no admin endpoint')
  const record = join(dir, 'loaded.txt')
  const hook = recordingHook(dir, record)

  const status = await runNode(['--import', hook, BIN, 'status', '--admin', `http://127.0.0.1:${admin.port}`])
  t.equal(status.code, 0, `exit 0: ready (${status.stderr})`)
  t.match(status.stdout, /^sluice gw-light: READY \(open, /, 'the summary came from the running gateway')
  const urls = loaded(record)
  t.ok(urls.some((u) => u.endsWith('/dist/daemon/bin.js')), 'the hook saw the CLI load')
  t.strictSame(urls.filter(promClient), [], 'prom-client was not loaded')
  t.strictSame(urls.filter((u) => /\/dist\/daemon\/(gateway|metrics)\.js$/.test(u)), [], 'nor the gateway or its metrics')
})

t.test('the hook sees prom-client when it is loaded', async (t) => {
  const dir = t.testdir()
  const record = join(dir, 'loaded.txt')
  const hook = recordingHook(dir, record)
  const metrics = fileURLToPath(new URL('../dist/daemon/metrics.js', import.meta.url))
  const run = await runNode(['--import', hook, '--input-type=module', '-e', `await import(${JSON.stringify(metrics)})`])
  t.equal(run.code, 0, run.stderr)
  t.ok(loaded(record).some(promClient), 'the metrics module loads prom-client')
})

const mqttJs = (url: string): boolean => url.includes('/node_modules/mqtt/')
const pinoPretty = (url: string): boolean => url.includes('/node_modules/pino-pretty/')

t.test('sluice run loads MQTT.js only for a subscription, and pino-pretty only for a terminal', async (t) => {
  const upstream = await startMosquitto(t)
  const local = await startMosquitto(t)
  for (const subscribe of [[], [{ url: local.url, topics: ['sensors/#'] }]]) {
    const dir = t.testdir()
    const record = join(dir, 'loaded.txt')
    const hook = recordingHook(dir, record)
    const config = writeConfig(dir, {
      gateway: { id: 'gw-lean' },
      ingest: { broker: { listen: '127.0.0.1:0' }, subscribe },
      buffer: { path: join(dir, 'buffer') },
      upstream: { url: upstream.url },
      admin: { enabled: false },
      health: { enabled: false }
    })
    const daemon = await startDaemon(t, config, {}, { command: [process.execPath, '--import', hook, BIN] })
    const urls = loaded(record)
    t.ok(urls.some((u) => u.endsWith('/dist/daemon/gateway.js')), 'the hook saw the gateway load')
    if (subscribe.length === 0) t.strictSame(urls.filter(mqttJs), [], 'no subscription: MQTT.js was not loaded')
    else t.ok(urls.some(mqttJs), 'a subscription: MQTT.js was loaded')
    t.strictSame(urls.filter(pinoPretty), [], 'stdout is a pipe: pino-pretty was not loaded')
    t.same(await daemon.kill('SIGTERM'), { code: 0, signal: null }, 'stopped cleanly')
  }
})
