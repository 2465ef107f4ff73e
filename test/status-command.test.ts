/**
 * `sluice status` is a small HTTP client: it must start fast on a Pi and stay out of the daemon's
 * way, so it loads neither the gateway nor the Prometheus client. A module-resolution hook in the
 * spawned CLI records every module it loads.
 */
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BIN, runNode } from './helpers/daemon.js'
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
