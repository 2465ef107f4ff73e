/**
 * The embedded broker's access rules as units: ACL matching (placeholders, deny rules, first match
 * wins, subscriptions), who may connect (passwords, the certificate seam, anonymous by address),
 * the per-address log limit on an injected clock, the password file and the config keys.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { compileAcl, mayPublish, maySubscribe, resolveAcl, type AclInput } from '../adapters/broker-acl.js'
import { BAD_USERNAME_OR_PASSWORD, BrokerAccess, isLoopbackAddress, newSession, NOT_AUTHORIZED, PerKeyLogLimit } from '../adapters/broker-auth.js'
import { hashPassword } from '../adapters/password-hash.js'
import { ConfigError, validateConfig } from '../config/index.js'
import { loadBrokerUsers } from '../daemon/broker-users.js'

function acl (input: AclInput, username: string | null, clientid: string): ReturnType<typeof resolveAcl> {
  return resolveAcl(compileAcl(input), { username, clientid })
}

t.test('publish: placeholders, deny entries, first match wins, nothing matched is refused', async (t) => {
  const a = acl({ publish: [{ deny: 'sensors/{username}/config/#' }, 'sensors/{username}/#', 'dev/{clientid}/state', 'fleet/+/hello'] }, 'pump7', 'c-1')
  const cases: Array<[string, boolean]> = [
    ['sensors/pump7/temp', true],
    ['sensors/pump7', true], // "#" also matches the parent level [MQTT-4.7.1-2]
    ['sensors/pump7/a/b/c', true],
    ['sensors/pump8/temp', false],
    ['sensors/pump7/config', false],
    ['sensors/pump7/config/x', false],
    ['dev/c-1/state', true],
    ['dev/c-2/state', false],
    ['dev/c-1/state/x', false],
    ['fleet/any/hello', true],
    ['fleet/any/other/hello', false],
    ['other', false]
  ]
  for (const [topic, allowed] of cases) t.equal(mayPublish(a, topic), allowed, topic)
  // Order matters: the same rules with the deny last let the config topic through.
  const late = acl({ publish: ['sensors/{username}/#', { deny: 'sensors/{username}/config/#' }] }, 'pump7', 'c-1')
  t.equal(mayPublish(late, 'sensors/pump7/config/x'), true, 'the first rule that applies decides')
  t.equal(mayPublish(acl({}, 'u', 'c'), 'anything/at/all'), true, 'an omitted list allows everything')
  t.equal(mayPublish(acl({ publish: [] }, 'u', 'c'), 'anything'), false, 'an empty list allows nothing')
  t.equal(mayPublish(acl({ publish: ['#'] }, 'u', 'c'), '$SYS/x'), false, 'wildcards do not match $ topics [MQTT-4.7.2-1]')
  t.equal(mayPublish(acl({ publish: [{ allow: 'a/b' }] }, 'u', 'c'), 'a/b'), true, '{ allow } is a bare filter')
})

t.test('a user name or client id that holds wildcards or "/" cannot widen a rule', async (t) => {
  const rules: AclInput = { publish: [{ deny: 'sensors/{username}/secret' }, 'sensors/{username}/#', 'x/{clientid}'] }
  for (const name of ['#', '+', 'a/b', '']) {
    const a = acl(rules, name, 'ok')
    t.equal(mayPublish(a, 'sensors/other/temp'), false, `user ${JSON.stringify(name)}`)
    t.equal(mayPublish(a, 'x/ok'), false, `user ${JSON.stringify(name)}: its deny rule matches everything, so later rules never apply`)
  }
  t.equal(mayPublish(acl({ publish: ['x/{clientid}'] }, 'u', '+'), 'x/y'), false, 'client id "+"')
  t.equal(mayPublish(acl({ publish: ['x/{username}'] }, null, 'c'), 'x/c'), false, 'anonymous: {username} matches nothing')
  t.equal(mayPublish(acl({ publish: ['pre-{username}-post/#'] }, 'u1', 'c'), 'pre-u1-post/t'), true, 'a placeholder inside a level')
})

t.test('subscribe: an allow must cover the filter, a deny refuses any overlap', async (t) => {
  const a = acl({ subscribe: [{ deny: 'sensors/+/secret' }, 'sensors/#', 'cmd/{username}/+'] }, 'dash', 'c')
  const cases: Array<[string, boolean]> = [
    ['sensors/a/temp', true],
    ['sensors/+/temp', true],
    ['sensors/a/secret', false],
    ['sensors/+/secret', false],
    ['sensors/#', false], // would receive the secrets
    ['sensors/a/#', false],
    ['sensors/a/secret/x', true], // no overlap with sensors/+/secret
    ['cmd/dash/x', true],
    ['cmd/dash/+', true],
    ['cmd/dash/#', false], // wider than cmd/dash/+
    ['cmd/+/x', false],
    ['#', false],
    ['other/x', false]
  ]
  for (const [filter, allowed] of cases) t.equal(maySubscribe(a, filter), allowed, filter)
  t.equal(maySubscribe(acl({ subscribe: ['a/#'] }, 'u', 'c'), 'a'), true, 'a/# covers a')
})

t.test('authentication: passwords, unknown users, the certificate seam, anonymous by address', async (t) => {
  const hash = await hashPassword('pw-one')
  const access = new BrokerAccess({
    users: [{ username: 'sensor1', passwordHash: hash }, { username: 'certonly' }],
    allowAnonymous: false,
    anonymous: {}
  })
  const creds = (o: { username?: string, password?: string, cert?: string, address?: string }) => ({
    username: o.username ?? null,
    password: o.password === undefined ? null : Buffer.from(o.password),
    certifiedUsername: o.cert ?? null,
    remoteAddress: o.address ?? '192.0.2.9'
  })
  t.match(await access.authenticate(creds({ username: 'sensor1', password: 'pw-one' })), { ok: true, username: 'sensor1' })
  t.match(await access.authenticate(creds({ username: 'sensor1', password: 'pw-two' })), { ok: false, returnCode: BAD_USERNAME_OR_PASSWORD, why: 'wrong password' })
  t.match(await access.authenticate(creds({ username: 'sensor1' })), { ok: false, returnCode: BAD_USERNAME_OR_PASSWORD })
  t.match(await access.authenticate(creds({ username: 'nobody', password: 'pw-one' })), { ok: false, returnCode: BAD_USERNAME_OR_PASSWORD, why: 'unknown user' })
  t.match(await access.authenticate(creds({ username: 'certonly', password: '' })), { ok: false, returnCode: BAD_USERNAME_OR_PASSWORD }, 'no hash: no password works')
  // A verified certificate's name stands for the user: no password needed, but the user must exist.
  t.match(await access.authenticate(creds({ cert: 'certonly' })), { ok: true, username: 'certonly' })
  t.match(await access.authenticate(creds({ cert: 'sensor1', username: 'ignored', password: 'wrong' })), { ok: true, username: 'sensor1' })
  t.match(await access.authenticate(creds({ cert: 'stranger' })), { ok: false, returnCode: NOT_AUTHORIZED })
  // Anonymous: loopback always, elsewhere only with allowAnonymous.
  for (const address of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) {
    t.match(await access.authenticate(creds({ address })), { ok: true, username: null }, address)
  }
  for (const address of ['192.0.2.9', '::ffff:192.0.2.9', 'fd00::2', '0.0.0.0']) {
    t.match(await access.authenticate(creds({ address })), { ok: false, returnCode: NOT_AUTHORIZED }, address)
  }
  t.equal(isLoopbackAddress(undefined), false, 'an unknown address is not loopback')
  access.update({ users: [{ username: 'sensor1', passwordHash: hash }], allowAnonymous: true, anonymous: {} })
  t.match(await access.authenticate(creds({ address: '192.0.2.9' })), { ok: true, username: null }, 'allowAnonymous: true')
  // Without any user, a user name is ignored (every client is anonymous).
  const open = new BrokerAccess({ users: [], allowAnonymous: false, anonymous: {} })
  t.match(await open.authenticate(creds({ username: 'x', password: 'y', address: '127.0.0.1' })), { ok: true, username: null })
})

t.test('a connected client is checked against the policy in force: a removed user gets nothing', async (t) => {
  const access = new BrokerAccess({ users: [{ username: 'u1', publish: ['a/#'] }], allowAnonymous: false, anonymous: { publish: ['public/#'] } })
  const session = newSession('u1', 'c1')
  const anon = newSession(null, 'c2')
  t.equal(mayPublish(access.aclFor(session), 'a/x'), true)
  t.equal(mayPublish(access.aclFor(anon), 'public/x'), true)
  t.equal(mayPublish(access.aclFor(anon), 'a/x'), false)
  access.update({ users: [{ username: 'u1', publish: ['b/#'] }], allowAnonymous: false, anonymous: {} })
  t.equal(mayPublish(access.aclFor(session), 'a/x'), false, 'the new ACL applies at once')
  t.equal(mayPublish(access.aclFor(session), 'b/x'), true)
  t.equal(mayPublish(access.aclFor(anon), 'a/x'), true, 'the anonymous ACL is back to everything')
  t.equal(access.mayPublish(session, 'b/x'), true, 'through the last-topic cache')
  t.equal(access.mayPublish(session, 'b/x'), true)
  t.equal(access.mayPublish(session, 'a/x'), false)
  t.equal(access.mayPublish(session, 'b/x'), true)
  access.update({ users: [], allowAnonymous: false, anonymous: {} })
  t.equal(access.mayPublish(session, 'b/x'), false, 'a policy change empties the cache')
  t.equal(mayPublish(access.aclFor(session), 'b/x'), false, 'a removed user may publish nothing')
  t.equal(maySubscribe(access.aclFor(session), 'b/x'), false)
})

t.test('refused connections are logged at most once per address per minute', async (t) => {
  let now = 1_000_000
  const limit = new PerKeyLogLimit(60_000, () => now)
  t.equal(limit.take('192.0.2.1'), true, 'the first refusal is logged')
  t.equal(limit.take('192.0.2.1'), false)
  t.equal(limit.take('192.0.2.2'), true, 'another address has its own minute')
  now += 59_999
  t.equal(limit.take('192.0.2.1'), false, 'not within the minute')
  now += 1
  t.equal(limit.take('192.0.2.1'), true, 'again after a minute')
  for (let i = 0; i < 20_000; i++) limit.take(`10.0.${i >> 8}.${i & 255}`)
  t.equal(limit.take('10.0.78.31'), false, 'after a flood of addresses the latest are still limited')
  t.equal(limit.take('10.0.0.0'), true, 'the map is bounded: the oldest were let go')
})

t.test('the password file: user:hash lines, comments, and what is wrong with it', async (t) => {
  const hash = await hashPassword('pw')
  const dir = t.testdir({
    good: `# sensors\n\nsensor1:${hash}\nsensor2:${hash}\r\n`,
    bad: `sensor1:${hash}\nnocolon\nsensor2:$6$mosquitto-sha512\nsensor1:${hash}\n`
  })
  const base = validateConfig({ gateway: { id: 'g' }, upstream: { url: 'mqtt://x' }, ingest: { broker: { users: [{ username: 'sensor2', publish: ['s/2/#'] }] } } }).ingest.broker
  const loaded = await loadBrokerUsers({ ...base, passwordFile: join(dir, 'good') })
  t.strictSame(loaded.users, [
    { username: 'sensor2', publish: ['s/2/#'], passwordHash: hash },
    { username: 'sensor1', passwordHash: hash }
  ], 'a users entry gives a file user its ACL; a file-only user has none (everything)')
  const errors = await loadBrokerUsers({ ...base, passwordFile: join(dir, 'bad') }).catch((err: unknown) => err)
  t.type(errors, ConfigError)
  t.strictSame((errors as ConfigError).errors.map((e) => `${e.path}: ${e.message}`), [
    `ingest.broker.passwordFile: ${JSON.stringify(join(dir, 'bad'))} line 2: expected "username:hash" with a hash printed by \`sluice hash-password\``,
    `ingest.broker.passwordFile: ${JSON.stringify(join(dir, 'bad'))} line 3: expected "username:hash" with a hash printed by \`sluice hash-password\``,
    `ingest.broker.passwordFile: ${JSON.stringify(join(dir, 'bad'))} line 4: user "sensor1" is listed twice`
  ])
  const missing = await loadBrokerUsers({ ...base, passwordFile: join(dir, 'none') }).catch((err: unknown) => err)
  t.match((missing as ConfigError).errors, [{ path: 'ingest.broker.passwordFile', message: /^cannot read the password file: ENOENT/ }])
  writeFileSync(join(dir, 'twice'), `sensor2:${hash}\n`)
  const withHash = validateConfig({ gateway: { id: 'g' }, upstream: { url: 'mqtt://x' }, ingest: { broker: { users: [{ username: 'sensor2', passwordHash: hash }] } } }).ingest.broker
  const twice = await loadBrokerUsers({ ...withHash, passwordFile: join(dir, 'twice') }).catch((err: unknown) => err)
  t.match((twice as ConfigError).errors, [{ message: /user "sensor2" also has a passwordHash in ingest.broker.users; give it in one place/ }])
})

t.test('config: users, ACL rules and the safe default', async (t) => {
  const base = { gateway: { id: 'g' }, upstream: { url: 'mqtt://x' } }
  const errorsOf = (broker: Record<string, unknown>): string[] => {
    try {
      validateConfig({ ...base, ingest: { broker } })
      return []
    } catch (err) {
      return (err as ConfigError).errors.map((e) => `${e.path}: ${e.message}`)
    }
  }
  t.strictSame(errorsOf({
    users: [
      { username: 'a', passwordHash: 'plain-text', publish: ['s/{user}/#', 'a/#/b', { deny: 's/x' }, { block: 's/y' }] },
      { username: 'a', subscribe: [{ allow: 'x/{clientid}' }] }
    ]
  }), [
    'ingest.broker.users[0].passwordHash: expected a hash printed by `sluice hash-password` ("scrypt$16384$8$1$..."), got "plain-text"',
    'ingest.broker.users[0].publish[0]: unknown placeholder {user} (allowed: {username}, {clientid}), got "s/{user}/#"',
    'ingest.broker.users[0].publish[1]: "#" must be a whole level and the last one, got "a/#/b"',
    'ingest.broker.users[0].publish[3]: expected a topic filter (allows it) or { deny: "filter" }, got a mapping',
    'ingest.broker.users[1].username: user "a" is listed twice'
  ])
  // Safe by default: another interface needs users, a password file, or an explicit allowAnonymous.
  t.equal(errorsOf({ listen: '0.0.0.0:1883' }).length, 1)
  t.strictSame(errorsOf({ listen: '0.0.0.0:1883', allowAnonymous: false }).length, 1, 'allowAnonymous: false is not enough')
  t.strictSame(errorsOf({ listen: '0.0.0.0:1883', allowAnonymous: true }), [])
  t.strictSame(errorsOf({ listen: '0.0.0.0:1883', passwordFile: '/etc/sluice/broker.passwords' }), [])
  t.strictSame(errorsOf({ listen: '0.0.0.0:1883', users: [{ username: 'a', passwordHash: await hashPassword('x') }] }), [])
})
