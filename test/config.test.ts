import t, { type Test } from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { configReferenceText } from '../config/reference.js'
import {
  ConfigError,
  configJsonSchema,
  configJsonSchemaText,
  loadConfig,
  parseConfig,
  parseDuration,
  parseSize,
  redactConfig,
  resolveSecrets,
  validateConfig,
  type SluiceConfig
} from '../config/index.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const minimal = { gateway: { id: 'gw-01' }, upstream: { url: 'mqtts://broker.example.com:8883' } }

/** `minimal` with `extra` merged in, one level deep per section. */
function withKeys (extra: Record<string, Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...minimal }
  for (const [section, keys] of Object.entries(extra)) {
    out[section] = { ...(out[section] as Record<string, unknown> | undefined), ...keys }
  }
  return out
}

/** The errors validateConfig reports for `raw`, as `path: message` lines; fails the test if it passes. */
function errorsOf (t: Test, raw: unknown): string[] {
  try {
    validateConfig(raw)
  } catch (err) {
    t.type(err, ConfigError)
    return (err as ConfigError).errors.map((e) => `${e.path}: ${e.message}`)
  }
  t.fail('expected a ConfigError')
  return []
}

const defaults: SluiceConfig = {
  gateway: { id: 'gw-01' },
  ingest: {
    broker: { enabled: true, listen: { host: '127.0.0.1', port: 1883 }, users: [], allowAnonymous: false, anonymous: {}, maxPayload: 64 * 1024, maxClients: 1000, connectTimeout: 10_000, maxConnectRate: 10, connectBurst: 100, maxQueuedBytes: 1024 ** 2 },
    topics: ['#'],
    subscribe: []
  },
  buffer: { path: '/var/lib/sluice', sync: 'interval', syncInterval: 1000, maxBytes: 1024 ** 3, minFreeDisk: 256 * 1024 ** 2, overflow: 'block', ttl: 7 * 86_400_000 },
  upstream: {
    url: 'mqtts://broker.example.com:8883',
    clientId: 'gw-01',
    topic: 'sluice/{gateway}/{topic}',
    eventsTopic: 'sluice/{gateway}/$sluice/{kind}',
    format: 'cloudevents-json',
    protocol: '3.1.1',
    inflight: 64,
    batch: { maxRecords: 200, maxBytes: 64 * 1024, maxDelay: 20 },
    backoff: { min: 500, max: 60_000 },
    maxMessagesPerSecond: 0,
    rejectRetries: 5
  },
  health: { enabled: true, interval: 60_000 },
  admin: { enabled: true, listen: { host: '127.0.0.1', port: 9464 } },
  log: { level: 'info' }
}

t.test('a minimal config gets every default', async (t) => {
  const config = validateConfig(minimal)
  t.strictSame(config, defaults)
  t.notOk('password' in config.upstream, 'no password unless one is given')
})

t.test('upstream.clientId defaults to gateway.id, and can be set', async (t) => {
  t.equal(validateConfig(withKeys({ gateway: { id: 'pi.kitchen_2' } })).upstream.clientId, 'pi.kitchen_2')
  t.equal(validateConfig(withKeys({ upstream: { clientId: 'other' } })).upstream.clientId, 'other')
})

t.test('sizes', async (t) => {
  t.equal(parseSize('100B'), 100)
  t.equal(parseSize('100'), 100)
  t.equal(parseSize('64KiB'), 64 * 1024)
  t.equal(parseSize('512MiB'), 512 * 1024 * 1024)
  t.equal(parseSize('1GiB'), 1024 ** 3)
  t.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3)
  t.equal(parseSize('2TiB'), 2 * 1024 ** 4)
  t.equal(parseSize('512 MiB'), 512 * 1024 * 1024)
  for (const bad of ['lots', '512MB', '1KB', '5mib', '-1KiB', '', 'KiB', '1e3']) t.equal(parseSize(bad), undefined, bad)
  t.equal(parseSize('99999999999TiB'), undefined, 'past the safe integers')

  t.equal(validateConfig(withKeys({ buffer: { maxBytes: '64MiB' } })).buffer.maxBytes, 64 * 1024 ** 2)
  t.equal(validateConfig(withKeys({ buffer: { maxBytes: 2_000_000 } })).buffer.maxBytes, 2_000_000, 'a bare number is bytes')
  t.equal(validateConfig(withKeys({ buffer: { minFreeDisk: 0 } })).buffer.minFreeDisk, 0)
  t.strictSame(errorsOf(t, withKeys({ buffer: { maxBytes: 'lots' } })), ['buffer.maxBytes: expected a size like "512MiB", got "lots"'])
  t.strictSame(errorsOf(t, withKeys({ buffer: { maxBytes: '512KiB' } })), ['buffer.maxBytes: must be at least 1MiB (1048576 bytes)'])
  t.match(errorsOf(t, withKeys({ buffer: { minFreeDisk: '256MB' } }))[0],
    /^buffer\.minFreeDisk: expected a size like "512MiB", got "256MB" \(units: B, KiB, MiB, GiB, TiB\)$/)
  t.match(errorsOf(t, withKeys({ buffer: { minFreeDisk: -1 } }))[0], /^buffer\.minFreeDisk: expected a size like "512MiB", got -1$/)
  t.match(errorsOf(t, withKeys({ buffer: { minFreeDisk: 1.5 } }))[0], /^buffer\.minFreeDisk: expected a size like "512MiB", got 1\.5$/)
  t.match(errorsOf(t, withKeys({ buffer: { minFreeDisk: true } }))[0], /^buffer\.minFreeDisk: expected a size like "512MiB", got true$/)
})

t.test('durations', async (t) => {
  t.equal(parseDuration('20ms'), 20)
  t.equal(parseDuration('1s'), 1000)
  t.equal(parseDuration('1.5s'), 1500)
  t.equal(parseDuration('2m'), 120_000)
  t.equal(parseDuration('1h'), 3_600_000)
  t.equal(parseDuration('7d'), 7 * 86_400_000)
  t.equal(parseDuration('250'), 250, 'no unit: milliseconds')
  for (const bad of ['soon', '1 sec', '1S', '-1s', '', 's', '1w']) t.equal(parseDuration(bad), undefined, bad)

  const config = validateConfig(withKeys({ buffer: { syncInterval: '20ms' }, upstream: { backoff: { min: '1s', max: '2h' } } }))
  t.equal(config.buffer.syncInterval, 20)
  t.strictSame(config.upstream.backoff, { min: 1000, max: 7_200_000 })
  t.equal(validateConfig(withKeys({ buffer: { syncInterval: 250 } })).buffer.syncInterval, 250, 'a bare number is milliseconds')
  t.equal(validateConfig(withKeys({ buffer: { ttl: '36h' } })).buffer.ttl, 36 * 3_600_000)
  t.equal(validateConfig(withKeys({ buffer: { ttl: 0 } })).buffer.ttl, 0, 'ttl 0: readings never expire')

  t.strictSame(errorsOf(t, withKeys({ buffer: { syncInterval: 'soon' } })), [
    'buffer.syncInterval: expected a duration like "1s" or "500ms", got "soon"'
  ])
  t.strictSame(errorsOf(t, withKeys({ buffer: { syncInterval: '1 week' } })), [
    'buffer.syncInterval: expected a duration like "1s" or "500ms", got "1 week" (units: ms, s, m, h, d)'
  ])
  t.strictSame(errorsOf(t, withKeys({ buffer: { syncInterval: '5sec' } })), [
    'buffer.syncInterval: expected a duration like "1s" or "500ms", got "5sec" (units: ms, s, m, h, d)'
  ])
  t.strictSame(errorsOf(t, withKeys({ buffer: { syncInterval: 0 } })), ['buffer.syncInterval: must be more than 0'])
  t.strictSame(errorsOf(t, withKeys({ buffer: { syncInterval: '0s' } })), ['buffer.syncInterval: must be more than 0'])
  t.strictSame(errorsOf(t, withKeys({ upstream: { backoff: { min: '10s', max: '1s' } } })), [
    'upstream.backoff.max: must not be less than backoff.min (10000ms), got 1000ms'
  ])
  t.strictSame(errorsOf(t, withKeys({ upstream: { backoff: { min: '70s' } } })), [
    'upstream.backoff.max: must not be less than backoff.min (70000ms), got 60000ms'
  ], 'checked against the default max too')
})

t.test('listen addresses', async (t) => {
  const listenOf = (listen: string): unknown => validateConfig(withKeys({ admin: { listen } })).admin.listen
  t.strictSame(listenOf('0.0.0.0:9100'), { host: '0.0.0.0', port: 9100 })
  t.strictSame(listenOf('[::1]:1883'), { host: '::1', port: 1883 })
  t.strictSame(listenOf('[::]:0'), { host: '::', port: 0 })
  t.strictSame(listenOf('localhost:65535'), { host: 'localhost', port: 65535 })
  t.strictSame(listenOf('gw-01.local:80'), { host: 'gw-01.local', port: 80 })

  const bad: Array<[unknown, RegExp]> = [
    ['127.0.0.1', /^admin\.listen: expected host:port like "127\.0\.0\.1:1883" or "\[::1\]:1883", got "127\.0\.0\.1"$/],
    ['127.0.0.1:65536', /^admin\.listen: port must be from 0 to 65535, got 65536$/],
    ['::1:1883', /got "::1:1883" \(an IPv6 address goes in brackets\)$/],
    ['[::12345]:1883', /^admin\.listen: "\[::12345\]" is not an IPv6 address$/],
    ['[::g]:1883', /^admin\.listen: expected host:port like/],
    ['300.1.1.1:80', /^admin\.listen: "300\.1\.1\.1" is not an IPv4 address$/],
    [':1883', /write "0\.0\.0\.0:PORT"/],
    [9464, /got 9464 \(a port alone is not enough/],
    ['-bad-:80', /^admin\.listen: "-bad-" is not a host name$/]
  ]
  for (const [listen, expected] of bad) {
    const errors = errorsOf(t, withKeys({ admin: { listen } }))
    t.equal(errors.length, 1, String(listen))
    t.match(errors[0], expected, String(listen))
  }
})

t.test('the embedded broker listens only on loopback while it has no users and no allowAnonymous', async (t) => {
  for (const listen of ['127.0.0.1:1883', '127.1.2.3:1883', '[::1]:1883', 'localhost:0', 'LOCALHOST:1883']) {
    t.equal(validateConfig(withKeys({ ingest: { broker: { listen } } })).ingest.broker.listen?.port, listen.endsWith(':0') ? 0 : 1883, listen)
  }
  for (const listen of ['0.0.0.0:1883', '[::]:1883', '192.168.1.10:1883', 'gw-01.local:1883']) {
    const errors = errorsOf(t, withKeys({ ingest: { broker: { listen } } }))
    t.equal(errors.length, 1, listen)
    t.match(errors[0], /^ingest\.broker\.listen: ".*" is not a loopback address and the broker has no users: anyone on the network could publish readings\. Add ingest\.broker\.users .* or ingest\.broker\.passwordFile, or set ingest\.broker\.allowAnonymous: true/, listen)
  }
  t.same(validateConfig(withKeys({ admin: { listen: '0.0.0.0:9464' } })).admin.listen, { host: '0.0.0.0', port: 9464 },
    'the admin endpoint may listen anywhere')
})

t.test('ingest.broker.tls: beside or instead of the plain listener, its rules reported with their paths', async (t) => {
  const tls = { listen: '127.0.0.1:8883', cert: '/etc/sluice/tls/cert.pem', key: '/etc/sluice/tls/key.pem' }
  t.strictSame(validateConfig(withKeys({ ingest: { broker: { tls } } })).ingest.broker, {
    enabled: true,
    listen: { host: '127.0.0.1', port: 1883 },
    tls: { listen: { host: '127.0.0.1', port: 8883 }, cert: tls.cert, key: tls.key, requireClientCert: false, useIdentityAsUsername: false },
    users: [],
    allowAnonymous: false,
    anonymous: {},
    maxPayload: 64 * 1024,
    maxClients: 1000,
    connectTimeout: 10_000,
    maxConnectRate: 10,
    connectBurst: 100,
    maxQueuedBytes: 1024 ** 2
  }, 'beside the plain listener, with the defaults')
  t.equal(validateConfig(withKeys({ ingest: { broker: { listen: null, tls } } })).ingest.broker.listen, null, 'instead of it: listen: null')
  t.strictSame(errorsOf(t, withKeys({ ingest: { broker: { listen: null } } })), [
    'ingest.broker.listen: the embedded broker needs a listener: a listen address, a tls listener, or enabled: false'
  ])
  t.strictSame(errorsOf(t, withKeys({ ingest: { broker: { tls: { ...tls, useIdentityAsUsername: true } } } })), [
    'ingest.broker.tls.useIdentityAsUsername: needs requireClientCert: true (the identity comes from a verified client certificate)'
  ])
  t.strictSame(errorsOf(t, withKeys({ ingest: { broker: { tls: { ...tls, requireClientCert: true } } } })), [
    'ingest.broker.tls.ca: requireClientCert needs ca: the CA certificate(s) that sign the sensors\' certificates'
  ])
  t.strictSame(errorsOf(t, withKeys({ ingest: { broker: { tls: { ...tls, listen: '127.0.0.1:1883' } } } })), [
    'ingest.broker.tls.listen: the plain listener already uses "127.0.0.1:1883"'
  ])
  t.strictSame(errorsOf(t, withKeys({ ingest: { broker: { tls: { listen: '127.0.0.1:8883', cert: '', kee: '/k' } } } })), [
    'ingest.broker.tls.cert: expected at least 1 character, got an empty string',
    'ingest.broker.tls.key: required',
    'ingest.broker.tls.kee: unknown key (did you mean "key"?)'
  ])
  // Encryption says nothing about who may publish: the loopback rule covers the TLS listener too.
  for (const listen of ['0.0.0.0:8883', '[::]:8883', '192.168.1.10:8883']) {
    t.strictSame(errorsOf(t, withKeys({ ingest: { broker: { tls: { ...tls, listen } } } })), [
      `ingest.broker.tls.listen: "${listen}" is not a loopback address and the broker has no users: anyone on the network could publish readings. Add ingest.broker.users (hashes from \`sluice hash-password\`) or ingest.broker.passwordFile, or set ingest.broker.allowAnonymous: true to accept anyone`
    ], listen)
    t.equal(validateConfig(withKeys({ ingest: { broker: { tls: { ...tls, listen }, allowAnonymous: true } } })).ingest.broker.allowAnonymous, true, `${listen} with allowAnonymous`)
  }
})

t.test('ingest.broker.enabled: false leaves no ingest', async (t) => {
  t.strictSame(errorsOf(t, withKeys({ ingest: { broker: { enabled: false } } })), [
    'ingest.broker.enabled: at least one ingest must be enabled: the embedded broker, or an ingest.subscribe entry'
  ])
  // A subscription to a local broker is an ingest (test/subscribe.test.ts has the rest)
  const config = validateConfig(withKeys({ ingest: { broker: { enabled: false }, subscribe: [{ url: 'mqtt://127.0.0.1:1884', topics: ['sensors/#'] }] } }))
  t.strictSame(config.ingest.subscribe, [{ url: 'mqtt://127.0.0.1:1884', topics: ['sensors/#'], clientId: 'gw-01-ingest', qos: 1 }])
})

t.test('topic filters and templates', async (t) => {
  t.strictSame(validateConfig(withKeys({ ingest: { topics: ['sensors/+/temp', 'a/#', '+', '#', '/x'] } })).ingest.topics,
    ['sensors/+/temp', 'a/#', '+', '#', '/x'])
  t.strictSame(errorsOf(t, withKeys({ ingest: { topics: ['a/#/b', 'a/b#', 'x+', '', '$SYS/#', 'ok/+', 7] } })), [
    'ingest.topics[0]: "#" must be a whole level and the last one, got "a/#/b"',
    'ingest.topics[1]: "#" must be a whole level and the last one, got "a/b#"',
    'ingest.topics[2]: "+" must be a whole level, got "x+"',
    'ingest.topics[3]: a topic filter must not be empty, got ""',
    'ingest.topics[4]: $SYS topics are never forwarded, got "$SYS/#"',
    'ingest.topics[6]: expected a string, got 7'
  ])
  t.strictSame(errorsOf(t, withKeys({ ingest: { topics: [] } })), [
    'ingest.topics: expected at least one topic filter ("#" forwards everything)'
  ])

  t.equal(validateConfig(withKeys({ upstream: { topic: 'site/{gateway}/raw/{topic}' } })).upstream.topic, 'site/{gateway}/raw/{topic}')
  t.strictSame(errorsOf(t, withKeys({ upstream: { topic: 'sluice/{gateway}' } })), [
    'upstream.topic: must contain {topic}, got "sluice/{gateway}"'
  ])
  t.strictSame(errorsOf(t, withKeys({ upstream: { topic: 'sluice/+/{topic}/{site}' } })), [
    'upstream.topic: unknown placeholder {site} (allowed: {gateway}, {topic}), got "sluice/+/{topic}/{site}"',
    'upstream.topic: must not contain the wildcards "+" or "#" (it names the topic to publish to), got "sluice/+/{topic}/{site}"'
  ])
  t.strictSame(errorsOf(t, withKeys({ upstream: { eventsTopic: 'sluice/{gateway}/{topic}' } })), [
    'upstream.eventsTopic: unknown placeholder {topic} (allowed: {gateway}, {kind}), got "sluice/{gateway}/{topic}"',
    'upstream.eventsTopic: must contain {kind}, got "sluice/{gateway}/{topic}"'
  ])
})

t.test('upstream.url', async (t) => {
  for (const url of ['mqtt://localhost', 'mqtts://broker.example.com:8883', 'tcp://10.0.0.1:1883', 'ssl://[::1]:8883']) {
    t.equal(validateConfig(withKeys({ upstream: { url } })).upstream.url, url)
  }
  for (const url of ['http://broker', 'broker.example.com:1883', 'mqtt://', 'ws://broker/mqtt', '']) {
    t.strictSame(errorsOf(t, withKeys({ upstream: { url } })), [
      `upstream.url: expected an MQTT URL like "mqtts://broker.example.com:8883" (mqtt, mqtts, tcp or ssl), got ${JSON.stringify(url)}`
    ], url)
  }
  t.strictSame(errorsOf(t, withKeys({ upstream: { url: 'mqtts://gw:secret@broker' } })), [
    'upstream.url: credentials do not go in the URL: use upstream.username and upstream.passwordFile'
  ])
})

t.test('unknown keys at every level are all reported, each with its path', async (t) => {
  const raw = {
    gateway: { id: 'gw-01', name: 'kitchen' },
    ingest: { broker: { enabled: true, port: 1883 }, topic: ['#'] },
    buffer: { sizee: 1, syncInteval: '1s' },
    upstream: { url: 'mqtt://localhost', backoff: { min: '1s', maximum: '2s' } },
    logging: { level: 'info' }
  }
  const errors = errorsOf(t, raw)
  t.strictSame([...errors].sort(), [
    'buffer.sizee: unknown key',
    'buffer.syncInteval: unknown key (did you mean "syncInterval"?)',
    'gateway.name: unknown key',
    'ingest.broker.port: unknown key',
    'ingest.topic: unknown key (did you mean "topics"?)',
    'logging: unknown key',
    'upstream.backoff.maximum: unknown key'
  ])
})

t.test('cross-field rules and refusals are reported alongside every other error', async (t) => {
  // zod skips a section's checks after an aborting issue inside it; none of ours may abort.
  const errors = errorsOf(t, {
    gateway: { id: 'gw-01' },
    ingest: { broker: { listen: '0.0.0.0:1883', maxClients: 1.5 }, topics: ['a/#/b'] },
    buffer: { syncInterval: 'soon', ttl: 'forever' },
    upstream: { url: 'mqtt://localhost', inflight: 1.5, password: 'a', passwordFile: '/b', backoff: { min: 1.5, max: '1s' } },
    health: { interval: 0 }
  })
  t.strictSame([...errors].sort(), [
    'buffer.syncInterval: expected a duration like "1s" or "500ms", got "soon"',
    'buffer.ttl: expected a duration like "1s" or "500ms", got "forever"',
    'health.interval: must be at least 100ms',
    'ingest.broker.listen: "0.0.0.0:1883" is not a loopback address and the broker has no users: anyone on the network could publish readings. Add ingest.broker.users (hashes from `sluice hash-password`) or ingest.broker.passwordFile, or set ingest.broker.allowAnonymous: true to accept anyone',
    'ingest.broker.maxClients: expected an integer, got 1.5',
    'ingest.topics[0]: "#" must be a whole level and the last one, got "a/#/b"',
    'upstream.backoff.min: expected a duration like "1s" or "500ms", got 1.5',
    'upstream.inflight: expected an integer, got 1.5',
    'upstream.password: give either password or passwordFile, not both'
  ])
})

t.test('broker limits: units, and bad values named', async (t) => {
  const broker = validateConfig(withKeys({ ingest: { broker: { maxPayload: '1KiB', connectTimeout: '3s', maxConnectRate: 0.5, connectBurst: 3, maxQueuedBytes: '256KiB', maxClients: 7 } } })).ingest.broker
  t.strictSame(
    [broker.maxPayload, broker.connectTimeout, broker.maxConnectRate, broker.connectBurst, broker.maxQueuedBytes, broker.maxClients],
    [1024, 3000, 0.5, 3, 256 * 1024, 7]
  )
  t.strictSame(errorsOf(t, withKeys({ ingest: { broker: { maxPayload: 0, maxClients: 0, connectTimeout: 0, maxConnectRate: -1, connectBurst: 0, maxQueuedBytes: '1GB' } } })).sort(), [
    'ingest.broker.connectBurst: expected at least 1, got 0',
    'ingest.broker.connectTimeout: must be more than 0',
    'ingest.broker.maxClients: expected at least 1, got 0',
    'ingest.broker.maxConnectRate: expected at least 0, got -1',
    'ingest.broker.maxPayload: must be from 1 byte to 255MiB',
    'ingest.broker.maxQueuedBytes: expected a size like "512MiB", got "1GB" (units: B, KiB, MiB, GiB, TiB)'
  ])
})

t.test('wrong types are reported with what was expected', async (t) => {
  const errors = errorsOf(t, {
    gateway: { id: 42 },
    ingest: { broker: { enabled: 'yes' }, topics: '#' },
    buffer: { path: ['a'], sync: 'sometimes' },
    upstream: { url: 'mqtt://localhost', inflight: '64', format: 'xml', username: 7 },
    admin: [],
    log: { level: 'verbose' }
  })
  t.strictSame(errors, [
    'gateway.id: expected a string, got 42',
    'ingest.broker.enabled: expected true or false, got "yes"',
    'ingest.topics: expected a list, got "#"',
    'buffer.path: expected a string, got a list',
    'buffer.sync: expected one of "always", "interval", got "sometimes"',
    'upstream.username: expected a string, got 7',
    'upstream.format: expected one of "cloudevents-json", "cloudevents-binary", "cbor-batch", got "xml"',
    'upstream.inflight: expected a number, got "64"',
    'admin: expected a mapping, got a list',
    'log.level: expected one of "fatal", "error", "warn", "info", "debug", "trace", "silent", got "verbose"'
  ])
  t.strictSame(errorsOf(t, withKeys({ upstream: { inflight: 0 } })), ['upstream.inflight: expected at least 1, got 0'])
  t.strictSame(errorsOf(t, withKeys({ upstream: { inflight: 65536 } })), ['upstream.inflight: expected at most 65535, got 65536'])
  t.strictSame(errorsOf(t, withKeys({ gateway: { id: 'gw 01/x' } })), [
    'gateway.id: expected letters, digits, ".", "_" or "-" (the id goes into MQTT topics and event ids), got "gw 01/x"'
  ])
  t.strictSame(errorsOf(t, withKeys({ gateway: { id: '' } })), [
    'gateway.id: expected letters, digits, ".", "_" or "-" (the id goes into MQTT topics and event ids), got ""'
  ])
  t.strictSame(errorsOf(t, withKeys({ gateway: { id: null } })), ['gateway.id: expected a string, got an empty value'])
})

t.test('required keys', async (t) => {
  t.strictSame(errorsOf(t, { gateway: {}, upstream: {} }), ['gateway.id: required', 'upstream.url: required'])
  t.strictSame(errorsOf(t, {}), ['gateway: required', 'upstream: required'])
  t.strictSame(errorsOf(t, [minimal]), ['(root): expected a mapping, got a list'])
  t.strictSame(errorsOf(t, 'gateway'), ['(root): expected a mapping, got "gateway"'])
})

// Every documented config key (docs/config.md) that is not built yet, with a value of the right type.
t.test('wrong types and unknown keys are reported as such', async (t) => {
  // The schema still knows their types: a wrong one is reported as such.
  t.strictSame(errorsOf(t, withKeys({ buffer: { overflow: 'sometimes' } })), [
    'buffer.overflow: expected one of "block", "drop-oldest", "drop-newest", got "sometimes"'
  ])
  t.strictSame(errorsOf(t, withKeys({ health: { intervall: '60s' } })), [
    'health.intervall: unknown key (did you mean "interval"?)'
  ])
})

t.test('password and passwordFile are mutually exclusive', async (t) => {
  t.strictSame(errorsOf(t, withKeys({ upstream: { password: 'a', passwordFile: '/b' } })), [
    'upstream.password: give either password or passwordFile, not both'
  ])
})

t.test('the upstream password comes from the file, a password file, or the environment', async (t) => {
  const dir = t.testdir({
    'pw-lf': 's3cret\n',
    'pw-crlf': 's3cret\r\n',
    'pw-two-lines': 's3cret\n\n',
    'pw-bare': ' s3cret ',
    'pw-empty': '\n'
  })
  const env = { SLUICE_UPSTREAM_PASSWORD: 'from-env' }
  const viaFile = async (name: string): Promise<string | undefined> =>
    (await parseConfig(withKeys({ upstream: { passwordFile: join(dir, name) } }), env)).upstream.password

  t.equal(await viaFile('pw-lf'), 's3cret', 'trailing newline trimmed; the file beats the environment')
  t.equal(await viaFile('pw-crlf'), 's3cret')
  t.equal(await viaFile('pw-two-lines'), 's3cret\n', 'only one trailing newline is trimmed')
  t.equal(await viaFile('pw-bare'), ' s3cret ', 'spaces are part of the password')
  await t.rejects(viaFile('pw-empty'), { code: 'SLUICE_CONFIG_INVALID', errors: [{ path: 'upstream.passwordFile', message: /is empty/ }] })
  await t.rejects(viaFile('missing'), {
    code: 'SLUICE_CONFIG_INVALID',
    errors: [{ path: 'upstream.passwordFile', message: /^cannot read the password file: ENOENT/ }]
  })

  t.equal((await parseConfig(withKeys({ upstream: { password: 'in-yaml' } }), env)).upstream.password, 'in-yaml', 'the file\'s password beats the environment')
  t.equal((await parseConfig(minimal, env)).upstream.password, 'from-env')
  t.equal((await parseConfig(minimal, {})).upstream.password, undefined)
  t.equal((await parseConfig(minimal, { SLUICE_UPSTREAM_PASSWORD: '' })).upstream.password, undefined, 'an empty variable is no password')
  t.equal((await resolveSecrets(validateConfig(minimal), env)).upstream.password, 'from-env')

  const file = join(dir, 'sluice.yaml')
  await writeFile(file, `gateway: { id: gw-01 }\nupstream:\n  url: mqtt://localhost\n  passwordFile: ${join(dir, 'pw-lf')}\n`)
  const loaded = await loadConfig(file, {})
  t.equal(loaded.upstream.password, 's3cret', 'loadConfig resolves it too')
  t.equal(loaded.upstream.passwordFile, join(dir, 'pw-lf'))
})

t.test('the config is deeply frozen', async (t) => {
  const configs = [validateConfig(minimal), await parseConfig(withKeys({ upstream: { password: 'x' } }), {})]
  for (const config of configs) {
    for (const part of [config, config.upstream, config.upstream.backoff, config.ingest.broker.listen, config.ingest.topics, config.admin.listen]) {
      t.ok(Object.isFrozen(part))
    }
    t.throws(() => { (config.upstream as { url: string }).url = 'mqtt://evil' }, TypeError)
    t.throws(() => { config.ingest.topics.push('more') }, TypeError)
  }
})

t.test('redactConfig hides the password and leaves the config alone', async (t) => {
  const config = await parseConfig(withKeys({ upstream: { username: 'gw', password: 'hunter2' } }), {})
  const redacted = redactConfig(config)
  t.equal(redacted.upstream.password, '[redacted]')
  t.equal(redacted.upstream.username, 'gw')
  t.equal(config.upstream.password, 'hunter2', 'the original keeps it')
  t.notMatch(JSON.stringify(redacted), /hunter2/)
  t.strictSame({ ...redacted, upstream: { ...redacted.upstream, password: 'hunter2' } }, config, 'nothing else changes')
  const none = redactConfig(validateConfig(minimal))
  t.notOk('password' in none.upstream, 'no password: nothing to redact')
})

t.test('ConfigError', async (t) => {
  let error: ConfigError | undefined
  try {
    validateConfig({ gateway: { id: 'gw-01', x: 1 }, upstream: { url: 'mqtt://localhost' }, buffer: { sync: 'never' } })
  } catch (err) {
    error = err as ConfigError
  }
  t.ok(error instanceof ConfigError)
  t.ok(error instanceof Error)
  t.equal(error?.code, 'SLUICE_CONFIG_INVALID')
  t.equal(error?.name, 'ConfigError')
  t.strictSame(error?.errors, [
    { path: 'gateway.x', message: 'unknown key' },
    { path: 'buffer.sync', message: 'expected one of "always", "interval", got "never"' }
  ])
  t.equal(error?.format(), 'gateway.x: unknown key\nbuffer.sync: expected one of "always", "interval", got "never"')
  t.match(error?.message, /^invalid config \(2 errors\):\ngateway\.x: unknown key\n/)
})

t.test('loadConfig reads YAML', async (t) => {
  const dir = t.testdir({
    'ok.yaml': 'gateway:\n  id: gw-01\nupstream:\n  url: mqtts://broker.example.com:8883\nbuffer:\n  syncInterval: 20ms\n',
    'syntax.yaml': 'gateway:\n  id: gw-01\nupstream:\n  url: mqtt://localhost\n   inflight: 5\n',
    'dup.yaml': 'gateway: { id: a }\nupstream: { url: mqtt://localhost }\ngateway: { id: b }\n',
    'ipv6.yaml': 'gateway: { id: a }\nupstream: { url: mqtt://localhost }\nadmin:\n  listen: [::1]:9464\n',
    'empty.yaml': '',
    'comments.yaml': '# nothing here yet\n',
    'list.yaml': '- gateway\n- upstream\n',
    'bad.yaml': 'gateway:\n  id: gw-01\nupstream:\n  url: mqtt://localhost\nbuffer:\n  maxBytes: lots\n'
  })
  const config = await loadConfig(join(dir, 'ok.yaml'), {})
  t.equal(config.buffer.syncInterval, 20)
  t.equal(config.upstream.url, 'mqtts://broker.example.com:8883')
  t.ok(Object.isFrozen(config))

  const fails = async (name: string, errors: Array<{ path: string, message: RegExp | string }>): Promise<void> => {
    const file = join(dir, name)
    await t.rejects(loadConfig(file, {}), { name: 'ConfigError', code: 'SLUICE_CONFIG_INVALID', file, errors }, name)
  }
  await fails('syntax.yaml', [
    { path: '(root)', message: 'YAML syntax error at line 4, column 8: Nested mappings are not allowed in compact mappings' },
    { path: '(root)', message: 'YAML syntax error at line 4, column 8: Implicit keys need to be on a single line' }
  ])
  await fails('dup.yaml', [{ path: '(root)', message: /^YAML syntax error at line 3, column 1: Map keys must be unique/ }])
  await fails('ipv6.yaml', [{ path: '(root)', message: /^YAML syntax error at line 4, column \d+: .*\(quote an IPv6 address: "\[::1\]:1883"\)$/ }])
  await fails('empty.yaml', [{ path: '(root)', message: 'the config is empty; it needs at least gateway.id and upstream.url' }])
  await fails('comments.yaml', [{ path: '(root)', message: 'the config is empty; it needs at least gateway.id and upstream.url' }])
  await fails('list.yaml', [{ path: '(root)', message: 'expected a mapping, got a list' }])
  await fails('bad.yaml', [
    { path: 'buffer.maxBytes', message: 'expected a size like "512MiB", got "lots"' }
  ])
  await fails('missing.yaml', [{ path: '(root)', message: /^cannot read the config file: ENOENT/ }])
})

t.test('config/example.yaml validates, and shows the defaults', async (t) => {
  const config = await loadConfig(join(root, 'config', 'example.yaml'), {})
  t.strictSame(config, defaults, 'every value in the example is the default')
})

t.test('config/example.yaml shows every key of the schema', async (t) => {
  const text = await readFile(join(root, 'config', 'example.yaml'), 'utf8')
  const keys = new Set<string>()
  const walk = (schema: Record<string, unknown>): void => {
    const properties = schema.properties as Record<string, Record<string, unknown>> | undefined
    for (const [key, child] of Object.entries(properties ?? {})) {
      keys.add(key)
      walk(child)
      if (child.type === 'array' && typeof child.items === 'object') walk(child.items as Record<string, unknown>)
    }
  }
  walk(configJsonSchema())
  t.ok(keys.size > 40, 'walked the whole schema')
  for (const key of keys) t.match(text, new RegExp(`\\b${key}:`), key)
})

t.test('docs/config.md, the config reference, is up to date and names every key', async (t) => {
  const shipped = await readFile(join(root, 'docs', 'config.md'), 'utf8')
  t.equal(shipped, configReferenceText(), 'regenerate it: node --import=@isaacs/ts-node-temp-fork-for-pr-2009/import scripts/gen-schema.ts')
  for (const key of ['gateway.id', 'ingest.broker.listen', 'buffer.maxBytes', 'upstream.batch.maxDelay', 'log.level']) {
    t.match(shipped, `| \`${key}\` |`, key)
  }
  t.match(shipped, /\| `gateway\.id` \| string \| required \|/, 'a required key says so')
  t.ok(shipped.includes('| `buffer.overflow` | "block" \\| "drop-oldest" \\| "drop-newest" | `"block"` |'), 'choices and defaults are shown')
})

t.test('config/sluice.schema.json is up to date', async (t) => {
  const shipped = await readFile(join(root, 'config', 'sluice.schema.json'), 'utf8')
  t.equal(shipped, configJsonSchemaText(), 'regenerate it: node --import=@isaacs/ts-node-temp-fork-for-pr-2009/import scripts/gen-schema.ts')
  const schema = JSON.parse(shipped) as Record<string, unknown>
  t.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema')
  t.strictSame(schema.required, ['gateway', 'upstream'])
  t.equal(schema.additionalProperties, false)

  // Every key carries a description (units included), for editors.
  const undocumented: string[] = []
  const walk = (node: Record<string, unknown>, path: string): void => {
    const properties = node.properties as Record<string, Record<string, unknown>> | undefined
    for (const [key, child] of Object.entries(properties ?? {})) {
      const childPath = path === '' ? key : `${path}.${key}`
      if (typeof child.description !== 'string' || child.description === '') undocumented.push(childPath)
      walk(child, childPath)
      if (typeof child.items === 'object') walk(child.items as Record<string, unknown>, `${childPath}[]`)
    }
  }
  walk(schema, '')
  t.strictSame(undocumented, [])

  // The input form: sizes, durations and addresses as a person writes them, with their defaults.
  const buffer = (schema.properties as Record<string, { properties: Record<string, Record<string, unknown>> }>).buffer
  t.equal(buffer.properties.syncInterval.default, '1s')
  t.match(buffer.properties.syncInterval.description, /milliseconds/)
  t.equal(buffer.properties.maxBytes.default, '1GiB')
  t.match(buffer.properties.maxBytes.description, /bytes/)
  t.equal(buffer.properties.ttl.default, '7d')
})

// ---- upstream: formats, protocol, TLS, batching, rate cap, refusals
t.test('upstream: format, protocol, TLS keys, batch bounds, rate cap and refusals', async (t) => {
  const up = (keys: Record<string, unknown>): SluiceConfig['upstream'] => validateConfig(withKeys({ upstream: keys })).upstream
  t.equal(up({ format: 'cloudevents-binary' }).protocol, '5', 'cloudevents-binary speaks MQTT 5 by default')
  t.equal(up({ format: 'cbor-batch' }).protocol, '3.1.1')
  t.equal(up({ protocol: 5 }).protocol, '5', 'a YAML number')
  t.equal(up({ protocol: '5' }).protocol, '5')
  t.equal(up({ format: 'cbor-batch', protocol: 5 }).protocol, '5')
  t.strictSame(errorsOf(t, withKeys({ upstream: { format: 'cloudevents-binary', protocol: '3.1.1' } })), [
    'upstream.protocol: format cloudevents-binary needs MQTT 5 (its attributes travel as user properties): set protocol to 5, or use format cloudevents-json'
  ])
  t.strictSame(errorsOf(t, withKeys({ upstream: { protocol: 4 } })), ['upstream.protocol: expected "3.1.1" or 5, got 4'])

  const tls = up({ ca: '/etc/sluice/tls/ca.pem', cert: '/c.pem', key: '/k.pem', servername: 'a.iot.example', alpn: ['x-amzn-mqtt-ca'] })
  t.match(tls, { ca: '/etc/sluice/tls/ca.pem', cert: '/c.pem', key: '/k.pem', servername: 'a.iot.example', alpn: ['x-amzn-mqtt-ca'] })
  t.strictSame(errorsOf(t, withKeys({ upstream: { cert: '/c.pem' } })), ['upstream.key: give both cert and key (mutual TLS), or neither'])
  t.strictSame(errorsOf(t, withKeys({ upstream: { url: 'mqtt://broker:1883', ca: '/ca.pem', alpn: ['x'] } })), [
    'upstream.ca: applies to TLS only: use an mqtts:// or ssl:// url',
    'upstream.alpn: applies to TLS only: use an mqtts:// or ssl:// url'
  ])

  t.strictSame(up({ batch: { maxRecords: 50, maxBytes: '16KiB', maxDelay: '1s' } }).batch, { maxRecords: 50, maxBytes: 16384, maxDelay: 1000 })
  t.strictSame(up({ batch: { maxDelay: 0 } }).batch, { maxRecords: 200, maxBytes: 65536, maxDelay: 0 }, 'the other bounds keep their defaults')
  t.strictSame(errorsOf(t, withKeys({ upstream: { batch: { maxRecords: 0, maxBytes: 10, maxDelayMs: 5 } } })).sort(), [
    'upstream.batch.maxBytes: must be at least 64 bytes',
    'upstream.batch.maxDelayMs: unknown key (did you mean "maxDelay"?)',
    'upstream.batch.maxRecords: expected at least 1, got 0'
  ])
  t.equal(up({ maxMessagesPerSecond: 100 }).maxMessagesPerSecond, 100)
  t.equal(up({ maxMessagesPerSecond: 0.5 }).maxMessagesPerSecond, 0.5, 'one every two seconds')
  t.match(errorsOf(t, withKeys({ upstream: { maxMessagesPerSecond: -1 } })), [/^upstream\.maxMessagesPerSecond: /])
  t.equal(up({ rejectRetries: 0 }).rejectRetries, 0, '0: set aside at the first refusal')
  t.match(errorsOf(t, withKeys({ upstream: { rejectRetries: 1.5 } })), ['upstream.rejectRetries: expected an integer, got 1.5'])
})
// ---- end upstream
