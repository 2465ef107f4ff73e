/**
 * SIGHUP on the spawned daemon changes the embedded broker's users live: a new user connects, a
 * removed one is refused on its next connect (and its next publish), a password file is re-read,
 * and the other sensors never disconnect.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt'
import { hashPassword } from '../adapters/password-hash.js'
import { BIN, adminUrl, brokerUrl, startDaemon, writeConfig, type DaemonRun } from './helpers/daemon.js'
import { spawn } from 'node:child_process'
import { waitUntil } from './helpers/wait.js'

async function hup (daemon: DaemonRun): Promise<any> {
  const isReload = (l: any): boolean => typeof l.msg === 'string' && /^config reload/.test(l.msg)
  const before = daemon.lines.filter(isReload).length
  daemon.child.kill('SIGHUP')
  await waitUntil(() => daemon.lines.filter(isReload).length > before, 10_000, 'the reload log line')
  return daemon.lines.filter(isReload)[before]
}

t.test('SIGHUP adds a user and removes another; connected sensors stay connected', async (t) => {
  const dir = t.testdir()
  const [keepHash, goneHash, newHash, fileHash] = await Promise.all(['keep-pw', 'gone-pw', 'new-pw', 'file-pw'].map(hashPassword))
  const passwordFile = join(dir, 'broker.passwords')
  writeFileSync(passwordFile, '# no users here yet\n')
  const config = (users: unknown[]): Record<string, unknown> => ({
    gateway: { id: 'gw-users' },
    ingest: { broker: { listen: '127.0.0.1:0', users, passwordFile } },
    buffer: { path: join(dir, 'buffer') },
    upstream: { url: 'mqtt://127.0.0.1:9', backoff: { min: '1s', max: '10s' } }, // nothing upstream: not needed
    health: { enabled: false },
    admin: { listen: '127.0.0.1:0' },
    log: { level: 'info' }
  })
  const keep = { username: 'keep', passwordHash: keepHash, publish: ['sensors/{username}/#'] }
  const file = writeConfig(dir, config([keep, { username: 'gone', passwordHash: goneHash }]))
  const daemon = await startDaemon(t, file)
  const url = brokerUrl(daemon)
  const connect = async (options: IClientOptions): Promise<MqttClient> => {
    const client = await connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options })
    client.on('error', () => {})
    t.teardown(async () => { await client.endAsync(true) })
    return client
  }
  const refusedCode = async (options: IClientOptions): Promise<unknown> => await connect(options).then(() => 'accepted', (err: { code?: unknown }) => err.code)

  // A sensor publishing QoS 1 throughout, on one connection.
  const sensor = await connect({ username: 'keep', password: 'keep-pw', clientId: 'keep-1' })
  let closes = 0
  sensor.on('close', () => { closes++ })
  let acked = 0
  let stop = false
  const publishing = (async () => {
    while (!stop) {
      await sensor.publishAsync('sensors/keep/temp', String(acked), { qos: 1 })
      acked++
    }
  })()
  const gone = await connect({ username: 'gone', password: 'gone-pw', clientId: 'gone-1' })
  await waitUntil(() => acked >= 20, 10_000, 'readings before the reload')

  writeConfig(dir, config([keep, { username: 'newbie', passwordHash: newHash }]))
  const line = await hup(daemon)
  t.match(line, { level: 30, applied: ['ingest.broker.users [keep, gone] -> [keep, newbie]'] })
  t.notOk(JSON.stringify(daemon.lines).includes('scrypt$'), 'no password hash in the log')
  t.equal(await refusedCode({ username: 'newbie', password: 'new-pw', clientId: 'new-1' }), 'accepted', 'the new user connects')
  t.equal(await refusedCode({ username: 'gone', password: 'gone-pw', clientId: 'gone-2' }), 4, 'the removed user is refused on its next connect')
  // The removed user's open connection is not cut by the reload; its next publish is refused.
  t.ok(gone.connected, 'the removed user\'s connection was left open')
  const goneClosed = new Promise<void>((resolve) => gone.once('close', () => { resolve() }))
  gone.publish('anything', 'x', { qos: 1 }, () => {})
  await goneClosed

  // The password file is re-read on SIGHUP even when its path did not change.
  t.equal(await refusedCode({ username: 'filer', password: 'file-pw', clientId: 'file-1' }), 4)
  writeFileSync(passwordFile, `filer:${fileHash}\n`)
  const again = await hup(daemon)
  t.match(again, { applied: [`ingest.broker.passwordFile ${passwordFile} (re-read)`] })
  t.equal(await refusedCode({ username: 'filer', password: 'file-pw', clientId: 'file-2' }), 'accepted', 'a user added to the password file connects')
  // A broken password file changes nothing.
  writeFileSync(passwordFile, 'filer\n')
  const broken = await hup(daemon)
  t.match(broken, { level: 40, failed: [/^ingest\.broker\.passwordFile: .*line 1: expected "username:hash"/] })
  t.equal(await refusedCode({ username: 'filer', password: 'file-pw', clientId: 'file-3' }), 'accepted', 'the last good users stay in force')

  const afterReloads = acked
  await waitUntil(() => acked >= afterReloads + 20, 10_000, 'readings after the reloads')
  stop = true
  await publishing
  t.equal(closes, 0, 'the connected sensor never disconnected')
  t.ok(sensor.connected)
  const status = await (await fetch(`${adminUrl(daemon)}/status`)).json() as any
  t.equal(status.totals.refused.auth, 2, 'two refused connects counted: gone, and filer before it was added')
  t.equal(status.totals.refused.acl, 1, 'the removed user\'s publish counted')
})

t.test('a broker on another interface without users refuses to start: exit 2, saying why and what to add', async (t) => {
  const dir = t.testdir()
  const file = writeConfig(dir, {
    gateway: { id: 'gw-open' },
    ingest: { broker: { listen: '0.0.0.0:0' } },
    buffer: { path: join(dir, 'buffer') },
    upstream: { url: 'mqtt://127.0.0.1:9' },
    admin: { enabled: false }
  })
  const child = spawn(process.execPath, [BIN, 'run', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr.on('data', (d: Buffer) => { output += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  t.equal(code, 2)
  t.match(output, /ingest\.broker\.listen: "0\.0\.0\.0:0" is not a loopback address and the broker has no users: anyone on the network could publish readings\. Add ingest\.broker\.users .* or ingest\.broker\.passwordFile, or set ingest\.broker\.allowAnonymous: true/)
})
