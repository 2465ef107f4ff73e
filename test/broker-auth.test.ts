/**
 * Users and ACLs at the embedded broker, end to end: real aedes on a real socket, real MQTT.js
 * clients and mosquitto_pub. The authorisation matrix (user x topic x publish/subscribe x QoS),
 * CONNACK codes, refusals counted and logged, anonymous clients on loopback and from another
 * address of this machine.
 */
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { networkInterfaces } from 'node:os'
import { Writable } from 'node:stream'
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt'
import { pino } from 'pino'
import { BrokerAdapter } from '../adapters/broker.js'
import type { AccessPolicyInput } from '../adapters/broker-auth.js'
import type { RefusalReason } from '../adapters/contract.js'
import { hashPassword } from '../adapters/password-hash.js'
import { RecordingSink } from './conformance/sink.js'
import { waitUntil } from './helpers/wait.js'

interface Harness {
  adapter: BrokerAdapter
  sink: RecordingSink
  port: number
  refused: Array<[RefusalReason, string | null]>
  logs: any[]
  now: { ms: number }
  connect: (options: IClientOptions, host?: string) => Promise<MqttClient>
}

async function startBroker (t: Test, access: AccessPolicyInput, host = '127.0.0.1'): Promise<Harness> {
  const sink = new RecordingSink()
  const logs: any[] = []
  const stream = new Writable({ write (chunk: Buffer, _enc, done) { logs.push(JSON.parse(chunk.toString())); done() } })
  const now = { ms: 1_000_000 }
  const adapter = new BrokerAdapter({ listen: { host, port: 0 }, topics: ['#'], sink, logger: pino({ level: 'info' }, stream), clock: () => now.ms, access })
  const refused: Array<[RefusalReason, string | null]> = []
  adapter.on('refused', (reason, clientId) => { refused.push([reason, clientId]) })
  await adapter.start()
  t.teardown(async () => { await adapter.close() })
  const { port } = adapter.address()
  const connect = async (options: IClientOptions, to = '127.0.0.1'): Promise<MqttClient> => {
    const client = await connectAsync(`mqtt://${to.includes(':') ? `[${to}]` : to}:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...options })
    client.on('error', () => {})
    t.teardown(async () => { await client.endAsync(true) })
    return client
  }
  return { adapter, sink, port, refused, logs, now, connect }
}

/** The CONNACK return code a connect is refused with (MQTT.js puts it on the error's `code`). */
async function refusedWith (h: Harness, options: IClientOptions, host?: string): Promise<number | string | undefined> {
  try {
    const client = await h.connect(options, host)
    await client.endAsync(true)
    return 'accepted'
  } catch (err) {
    return (err as { code?: number }).code
  }
}

/** The QoS the SUBACK grants, 0x80 for a refusal (MQTT.js rejects then, with the packet). */
async function grantedQos (client: MqttClient, filter: string, qos: 0 | 1): Promise<number> {
  try {
    return (await client.subscribeAsync(filter, { qos }))[0].qos
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted
    if (granted === undefined) throw err
    return granted[0]
  }
}

async function closed (client: MqttClient): Promise<void> {
  if (client.disconnected || !client.connected) return
  await new Promise<void>((resolve) => client.once('close', () => { resolve() }))
}

t.test('the authorisation matrix: user x topic x publish/subscribe x QoS', async (t) => {
  const [h1, h2] = await Promise.all([hashPassword('pw-one'), hashPassword('pw-two')])
  const h = await startBroker(t, {
    users: [
      { username: 'sensor1', passwordHash: h1, publish: ['sensors/{username}/#'], subscribe: [] },
      {
        username: 'sensor2',
        passwordHash: h2,
        publish: [{ deny: 'sensors/{username}/secret' }, 'sensors/{username}/#', 'dev/{clientid}/state'],
        subscribe: [{ deny: 'sensors/+/secret' }, 'sensors/#']
      },
      { username: 'dashboard', passwordHash: h2, publish: [] }
    ],
    allowAnonymous: false,
    anonymous: { publish: ['public/#'], subscribe: ['public/#'] }
  })
  const who = {
    sensor1: { username: 'sensor1', password: 'pw-one', clientId: 'c-s1' },
    sensor2: { username: 'sensor2', password: 'pw-two', clientId: 'c-42' },
    dashboard: { username: 'dashboard', password: 'pw-two', clientId: 'c-dash' },
    anonymous: { clientId: 'c-anon' }
  }
  const publishes: Array<[keyof typeof who, string, boolean]> = [
    ['sensor1', 'sensors/sensor1/temp', true],
    ['sensor1', 'sensors/sensor1', true],
    ['sensor1', 'sensors/sensor2/temp', false],
    ['sensor1', 'public/x', false],
    ['sensor2', 'sensors/sensor2/temp', true],
    ['sensor2', 'sensors/sensor2/secret', false],
    ['sensor2', 'dev/c-42/state', true],
    ['sensor2', 'dev/c-43/state', false],
    ['dashboard', 'sensors/sensor1/temp', false],
    ['anonymous', 'public/x', true],
    ['anonymous', 'sensors/sensor1/temp', false]
  ]
  let n = 0
  for (const [user, topic, allowed] of publishes) {
    for (const qos of [0, 1] as const) {
      const label = `${user} publishes QoS ${qos} to ${topic}`
      const refusedBefore = h.refused.length
      const client = await h.connect({ ...who[user], clientId: `${who[user].clientId}` })
      const payload = `reading-${++n}`
      const taken = (): boolean => h.sink.appended.some((a) => Buffer.from(a.reading.payload).toString() === payload)
      if (allowed) {
        if (qos === 1) await client.publishAsync(topic, payload, { qos })
        else client.publish(topic, payload, { qos })
        await waitUntil(taken, 5000, label)
        t.ok(client.connected, `${label}: stored, connection up`)
        t.equal(h.refused.length, refusedBefore, `${label}: no refusal`)
      } else {
        const gone = closed(client)
        client.publish(topic, payload, { qos }, () => {})
        await gone
        t.notOk(taken(), `${label}: refused, never reached the buffer`)
        t.strictSame(h.refused.slice(refusedBefore), [['acl', client.options.clientId]], `${label}: connection closed, counted as acl`)
      }
      await client.endAsync(true)
    }
  }

  const subscribes: Array<[keyof typeof who, string, boolean]> = [
    ['sensor1', 'sensors/sensor1/#', false],
    ['sensor2', 'sensors/a/temp', true],
    ['sensor2', 'sensors/#', false],
    ['sensor2', 'sensors/a/secret', false],
    ['dashboard', '#', true],
    ['anonymous', 'public/#', true],
    ['anonymous', '#', false]
  ]
  for (const [user, filter, allowed] of subscribes) {
    for (const qos of [0, 1] as const) {
      const label = `${user} subscribes QoS ${qos} to ${filter}`
      const refusedBefore = h.refused.length
      const client = await h.connect(who[user])
      t.equal(await grantedQos(client, filter, qos), allowed ? qos : 0x80, `${label}: SUBACK ${allowed ? 'grants it' : '0x80'} [MQTT-3.9.3]`)
      t.strictSame(h.refused.slice(refusedBefore), allowed ? [] : [['acl', client.options.clientId]], `${label}: counted`)
      // The connection stays up either way: a ping round trip proves it.
      await client.unsubscribeAsync('public/nothing')
      t.ok(client.connected, `${label}: connection up`)
      await client.endAsync(true)
    }
  }

  // A subscriber receives what it may subscribe to (a refused filter delivers nothing).
  const dash = await h.connect(who.dashboard)
  await dash.subscribeAsync('sensors/#', { qos: 1 })
  const got = new Promise<string>((resolve) => dash.once('message', (topic) => { resolve(topic) }))
  const s1 = await h.connect(who.sensor1)
  await s1.publishAsync('sensors/sensor1/live', 'x', { qos: 1 })
  t.equal(await got, 'sensors/sensor1/live', 'allowed publishes reach allowed subscribers')
})

t.test('wrong password and unknown user: CONNACK 0x04, counted, logged once per address per minute', async (t) => {
  const hash = await hashPassword('right')
  const h = await startBroker(t, { users: [{ username: 'sensor1', passwordHash: hash }], allowAnonymous: false, anonymous: {} })
  t.equal(await refusedWith(h, { username: 'sensor1', password: 'wrong', clientId: 'a1' }), 4, 'wrong password: bad user name or password')
  t.equal(await refusedWith(h, { username: 'nobody', password: 'right', clientId: 'a2' }), 4, 'unknown user: the same answer')
  t.equal(await refusedWith(h, { username: 'sensor1', clientId: 'a3' }), 4, 'no password')
  t.equal(await refusedWith(h, { username: 'sensor1', password: 'right', clientId: 'a4' }), 'accepted', 'the right password')
  t.strictSame(h.refused, [['auth', 'a1'], ['auth', 'a2'], ['auth', 'a3']], 'every refusal counted')
  const refusalLines = (): any[] => h.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('connection refused'))
  t.match(refusalLines(), [{ level: 40, msg: 'connection refused: wrong password', address: '127.0.0.1', clientId: 'a1', username: 'sensor1', returnCode: 4 }],
    'one line for the address in its minute')
  t.notOk(JSON.stringify(h.logs).includes('wrong"'), 'the password is never logged')
  h.now.ms += 60_000
  t.equal(await refusedWith(h, { username: 'nobody', password: 'x', clientId: 'a5' }), 4)
  t.match(refusalLines(), [{ clientId: 'a1' }, { msg: 'connection refused: unknown user', clientId: 'a5' }], 'a minute later, one more line')
})

t.test('mosquitto_pub with a user name and password', async (t) => {
  const hash = await hashPassword('pw-one')
  const h = await startBroker(t, { users: [{ username: 'sensor1', passwordHash: hash, publish: ['sensors/{username}/#'] }], allowAnonymous: false, anonymous: {} })
  const pub = async (args: string[]): Promise<{ code: number, stderr: string }> => await new Promise((resolve) => {
    execFile('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(h.port), '-q', '1', ...args], (err, _stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stderr })
    })
  })
  t.match(await pub(['-u', 'sensor1', '-P', 'pw-one', '-t', 'sensors/sensor1/temp', '-m', '{"celsius":21.5}']), { code: 0 })
  t.strictSame(h.sink.on('sensors/sensor1/temp').map((a) => Buffer.from(a.reading.payload).toString()), ['{"celsius":21.5}'], 'the reading is in the buffer')
  const wrong = await pub(['-u', 'sensor1', '-P', 'nope', '-t', 'sensors/sensor1/temp', '-m', 'x'])
  t.not(wrong.code, 0)
  t.match(wrong.stderr, /bad user name or password/i, 'mosquitto_pub says why')
  await pub(['-u', 'sensor1', '-P', 'pw-one', '-t', 'sensors/sensor2/temp', '-m', 'x'])
  t.equal(h.sink.on('sensors/sensor2/temp').length, 0, 'a publish outside the ACL never reaches the buffer')
  t.strictSame(h.refused.map(([reason]) => reason), ['auth', 'acl'], 'both refusals counted')
})

/** An address of this machine that is not loopback, if it has one. */
function otherAddress (): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') return a.address
  }
  return undefined
}

t.test('anonymous clients: on loopback always, from another address only with allowAnonymous', async (t) => {
  const address = otherAddress()
  t.ok(address !== undefined, 'this machine has a non-loopback IPv4 address to connect from')
  if (address === undefined) return
  const hash = await hashPassword('pw')
  const users = [{ username: 'sensor1', passwordHash: hash }]
  const h = await startBroker(t, { users, allowAnonymous: false, anonymous: {} }, '0.0.0.0')
  t.equal(await refusedWith(h, { clientId: 'loop' }), 'accepted', 'anonymous on 127.0.0.1')
  t.equal(await refusedWith(h, { clientId: 'far' }, address), 5, `anonymous from ${address}: CONNACK 0x05 not authorised`)
  t.match(h.logs.find((l) => l.clientId === 'far'), { address, msg: /anonymous clients are accepted on loopback only/ })
  t.equal(await refusedWith(h, { clientId: 'far-user', username: 'sensor1', password: 'pw' }, address), 'accepted', 'a user from there')
  h.adapter.setAccess({ users, allowAnonymous: true, anonymous: {} })
  t.equal(await refusedWith(h, { clientId: 'far2' }, address), 'accepted', 'anonymous from there with allowAnonymous: true')
  t.strictSame(h.refused, [['auth', 'far']])
})
