/**
 * The command line as a user meets it: the built `sluice` binary, run as a child process.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCli, writeConfig } from './helpers/daemon.js'

t.test('a bad config exits 2 and names every wrong key with its path', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'bad.yaml')
  writeFileSync(file, [
    'gateway: {}',
    'ingest:',
    '  broker:',
    '    listen: 127.0.0.1:1883',
    '    colour: blue',
    '    maxClients: 0',
    '    allowAnonymous: maybe',
    'buffer:',
    '  syncInterval: soon',
    '  sync: sometimes',
    'upstream:',
    '  url: mqtt://127.0.0.1:1883',
    '  inflight: many',
    'extra: 1',
    ''
  ].join('\n'))
  for (const command of ['check', 'run']) {
    const { code, stderr } = await runCli([command, '-c', file])
    t.equal(code, 2, `${command}: exit 2`)
    for (const path of ['gateway.id', 'ingest.broker.colour', 'buffer.syncInterval', 'buffer.sync', 'ingest.broker.maxClients', 'ingest.broker.allowAnonymous', 'upstream.inflight', 'extra']) {
      t.match(stderr, new RegExp(`^\\s*${path.replaceAll('.', '\\.')}: `, 'm'), `${command}: names ${path}`)
    }
    t.match(stderr, /ingest\.broker\.allowAnonymous: expected/, 'a wrong type names what was expected')
    t.match(stderr, /buffer\.syncInterval: expected a duration/, 'says what was expected')
  }
})

t.test('check prints the effective config with defaults and the password redacted', async (t) => {
  const dir = t.testdir()
  const file = writeConfig(dir, {
    gateway: { id: 'gw-1' },
    ingest: { subscribe: [{ url: 'mqtt://127.0.0.1:1884', topics: ['sensors/#'], password: 'local-secret' }] },
    upstream: { url: 'mqtt://127.0.0.1:1883', password: 'hunter2' }
  })
  const { code, stdout } = await runCli(['check', '-c', file])
  t.equal(code, 0)
  t.notMatch(stdout, /hunter2|local-secret/, 'no secret printed')
  const effective = JSON.parse(stdout)
  t.match(effective, {
    gateway: { id: 'gw-1' },
    buffer: { path: '/var/lib/sluice', sync: 'interval', syncInterval: 1000 },
    upstream: { clientId: 'gw-1', format: 'cloudevents-json', inflight: 64, password: '[redacted]' }
  })
})

t.test('a missing config file, an unknown command and a bad option exit 2', async (t) => {
  const missing = await runCli(['check', '-c', join(t.testdir(), 'nope.yaml')])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /nope\.yaml/)
  const unknown = await runCli(['frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command: frobnicate/)
  const option = await runCli(['check', '--colour'])
  t.equal(option.code, 2)
  const help = await runCli(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /sluice run -c FILE|run\s+-c FILE/)
})

t.test('the error table of docs/operations.md lists every code of the catalogue with its exit code', async (t) => {
  const { readFileSync } = await import('node:fs')
  const { errorCodes } = await import('../daemon/errors.js')
  const readme = readFileSync(new URL('../docs/operations.md', import.meta.url), 'utf8')
  for (const [code, { exit }] of Object.entries(errorCodes)) {
    t.match(readme, new RegExp(`^\\| \`${code}\` \\| ${exit} \\|`, 'm'), `${code} is documented`)
  }
})
