// The config file (docs/config.md) as one zod schema: the single source of the TypeScript type
// (`SluiceConfig`), the defaults, the validation and the shipped JSON Schema. Every key of the
// contract is here from the start; a key whose feature is not built yet is type-checked and then
// refused with "not supported yet", never silently ignored.
import { z } from 'zod'
import {
  duration,
  formatListen,
  integer,
  isListenAddress,
  isLoopback,
  listen,
  mqttUrl,
  positiveDuration,
  show,
  size,
  topicFilter,
  topicTemplate
} from './values.js'

type Shape = z.ZodRawShape

/** The later feature that brings each key made by `later`. */
const laterFeatures = new WeakMap<z.ZodType, string>()

/**
 * A key of the contract whose feature is not built yet. Its value is still checked against its
 * type (so a typo is reported as one); the enclosing `section` refuses its presence. No default.
 */
function later<T extends z.ZodType> (schema: T, feature: string, description: string) {
  const key = schema.optional().meta({ description: `Not supported yet (${feature}). ${description}` })
  laterFeatures.set(key, feature)
  return key
}

/**
 * A strict section: `built` keys are validated and defaulted; `notYet` keys (made with `later`) are
 * known but refused, and left out of the parsed type so the daemon codes against built keys only.
 * `rules` are cross-field rules.
 *
 * The refusals and rules run even when some keys have errors, so that every error is reported at
 * once; a rule therefore looks at the value defensively (a key that failed holds what was written).
 * That holds as long as no schema inside raises an aborting issue (`abort: true`, `z.int()`):
 * zod skips such checks after one.
 */
function section<B extends Shape, L extends Shape> (
  built: B,
  notYet: L,
  rules?: (value: Readonly<Record<string, unknown>>, ctx: z.RefinementCtx) => void
) {
  const laterKeys = Object.keys(notYet)
  const features = laterKeys.map((key) => {
    const feature = laterFeatures.get(notYet[key] as z.ZodType)
    if (feature === undefined) throw new Error(`config schema: ${key} is not made with later()`)
    return [key, feature] as const
  })
  const object = z.strictObject({ ...built, ...notYet }).superRefine((value: Record<string, unknown>, ctx) => {
    for (const [key, feature] of features) {
      if (value[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `not supported yet (${feature})` })
    }
    rules?.(value, ctx)
  }, { when: (payload) => isRecord(payload.value) })
  return object.transform((value) => {
    const out: Record<string, unknown> = { ...value }
    for (const key of laterKeys) delete out[key]
    return out as z.output<z.ZodObject<B, z.core.$strict>>
  })
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

// ------------------------------------------------------------------ gateway

const gateway = z
  .strictObject({
    id: z
      .string()
      .regex(/^[A-Za-z0-9._-]+$/, {
        error: (iss) => `expected letters, digits, ".", "_" or "-" (the id goes into MQTT topics and event ids), got ${show(iss.input)}`
      })
      .describe('This gateway\'s id, unique among your gateways. It appears in every upstream event (CloudEvent id and source) and in the upstream topics. Letters, digits, ".", "_" and "-".')
  })
  .describe('This gateway.')

// ------------------------------------------------------------------ ingest

// -- broker users and ACLs
const PASSWORD_HASH = /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/
const ACL_PLACEHOLDERS = ['username', 'clientid']

/** A topic filter that may hold `{username}` and `{clientid}`. */
function aclPattern () {
  return topicFilter().superRefine((pattern, ctx) => {
    const unknown = [...pattern.matchAll(/\{([^{}]*)\}/g)].map((m) => m[1]).filter((n) => !ACL_PLACEHOLDERS.includes(n))
    if (unknown.length > 0) {
      ctx.addIssue({ code: 'custom', message: `unknown placeholder ${unknown.map((n) => `{${n}}`).join(', ')} (allowed: {username}, {clientid}), got ${show(pattern)}` })
    }
  })
}

const aclRule = z.union([
  aclPattern(),
  z.strictObject({ allow: aclPattern() }),
  z.strictObject({ deny: aclPattern() })
], { error: (iss) => `expected a topic filter (allows it) or { deny: "filter" }, got ${show(iss.input)}` })

function aclList (what: string) {
  return z.array(aclRule).optional().describe(`Topic filters this client may ${what}, checked in order; the first that applies decides, and what none applies to is refused. A filter allows; { deny: "filter" } refuses. {username} and {clientid} are filled in per client ("sensors/{username}/#"). Omitted: everything; []: nothing.`)
}

const brokerUser = z.strictObject({
  username: z.string().min(1).describe('The user name a sensor connects with.'),
  passwordHash: z
    .string()
    .regex(PASSWORD_HASH, { error: (iss) => `expected a hash printed by \`sluice hash-password\` ("scrypt$16384$8$1$..."), got ${show(iss.input)}` })
    .optional()
    .describe('The password hash printed by `sluice hash-password` ("scrypt$..."). May come from passwordFile instead.'),
  publish: aclList('publish to'),
  subscribe: aclList('subscribe to')
})
// -- end broker users and ACLs

// -- broker TLS: a second listener for sensors, TLS with optional client certificates
const brokerTls = section(
  {
    listen: listen().describe('Address and TCP port of the TLS listener, "host:port" (8883 is MQTT over TLS); port 0 picks a free port. Without broker users only a loopback address is allowed.'),
    cert: z.string().min(1).describe('Path of the PEM server certificate (chain: the certificate first, then its intermediates). Read at start and again on every SIGHUP.'),
    key: z.string().min(1).describe('Path of the PEM private key of the certificate. Read at start and again on every SIGHUP.'),
    ca: z.string().min(1).optional().describe('Path of the PEM CA certificate(s) that sign client certificates. Read at start and again on every SIGHUP. Needed by requireClientCert.'),
    requireClientCert: z.boolean().default(false).describe('Refuse, during the TLS handshake, every client without a certificate signed by ca.'),
    useIdentityAsUsername: z.boolean().default(false).describe('Take the subject CN of the client certificate as the sensor\'s user name, like mosquitto\'s use_identity_as_username. Needs requireClientCert.')
  },
  {},
  (value, ctx) => {
    if (value.requireClientCert === true && value.ca === undefined) {
      ctx.addIssue({ code: 'custom', path: ['ca'], message: 'requireClientCert needs ca: the CA certificate(s) that sign the sensors\' certificates' })
    }
    if (value.useIdentityAsUsername === true && value.requireClientCert !== true) {
      ctx.addIssue({ code: 'custom', path: ['useIdentityAsUsername'], message: 'needs requireClientCert: true (the identity comes from a verified client certificate)' })
    }
  }
)
// -- end broker TLS

const broker = section(
  {
    enabled: z.boolean().default(true).describe('Run the embedded MQTT broker that sensors connect to.'),
    listen: listen()
      .nullable()
      .prefault('127.0.0.1:1883')
      .describe('Address and TCP port of the plain (unencrypted) listener of the embedded broker, "host:port" ("[::1]:1883" for IPv6; port 0 picks a free port); null: no plain listener, sensors connect over tls only. Without broker users (or passwordFile, or allowAnonymous: true) only a loopback address is allowed.'),
    tls: brokerTls.optional().describe('A TLS listener for sensors, beside the plain one (or instead of it, with listen: null).'),
    // -- broker users and ACLs
    users: z
      .array(brokerUser)
      .default(() => [])
      .describe('The users sensors connect as, each with a password hash (from `sluice hash-password`) and the topics it may publish and subscribe to. Applied live on SIGHUP.'),
    passwordFile: z
      .string()
      .min(1)
      .optional()
      .describe('Path of a file of "username:hash" lines (like mosquitto\'s password file; "#" starts a comment), for hashes kept out of this file. A user listed only there may publish and subscribe to everything; a users entry of the same name (without passwordHash) gives it an ACL. Re-read on SIGHUP.'),
    allowAnonymous: z
      .boolean()
      .default(false)
      .describe('Accept clients without a user name from other machines too. Anonymous clients are always accepted on loopback.'),
    anonymous: z
      .strictObject({ publish: aclList('publish to'), subscribe: aclList('subscribe to') })
      .default(() => ({}))
      .describe('The ACL of clients that connect without a user name. Default: everything.'),
    // -- end broker users and ACLs
    // -- broker limits: each refusal is counted in /metrics and `sluice status`
    maxPayload: size()
      // the largest MQTT packet is 256 MiB - 1 [MQTT-2.2.3]; a PUBLISH also holds its topic
      .refine((bytes) => bytes >= 1 && bytes <= 268_435_455 - 65_539, { error: 'must be from 1 byte to 255MiB' })
      .prefault('64KiB')
      .describe('Largest payload a sensor may publish, in bytes or with a unit ("64KiB"). A bigger publish closes the sensor\'s connection (counted "too-large"); a packet declaring a length over it (plus room for the longest topic) is refused from its first bytes.'),
    maxClients: integer(1)
      .default(1000)
      .describe('Most sensors connected at once; the next CONNECT is answered CONNACK 0x03 (server unavailable) and counted "max-clients".'),
    connectTimeout: positiveDuration()
      .prefault('10s')
      .describe('A connection that has not sent its whole CONNECT packet by then is closed (counted "timeout"), in milliseconds or with a unit ("10s").'),
    maxConnectRate: z.number()
      .min(0)
      .default(10)
      .describe('New connections per second one client address may open, after connectBurst (counted "rate"); 0: no limit.'),
    connectBurst: integer(1)
      .default(100)
      .describe('New connections one client address may open at once before maxConnectRate applies (sensors behind one NAT reconnecting together after a Wi-Fi outage).'),
    maxQueuedBytes: size()
      .refine((bytes) => bytes >= 1, { error: 'must be at least 1 byte' })
      .prefault('1MiB')
      .describe('Bytes waiting to be sent to one local subscriber, in bytes or with a unit ("1MiB"): past it, messages for that subscriber are dropped (counted) so a slow subscriber cannot grow sluice\'s memory. Readings are forwarded upstream all the same.')
  },
  {
  },
  (value, ctx) => {
    const tls = isRecord(value.tls) ? value.tls : undefined
    if (value.listen === null && tls === undefined && value.enabled !== false) {
      ctx.addIssue({ code: 'custom', path: ['listen'], message: 'the embedded broker needs a listener: a listen address, a tls listener, or enabled: false' })
    }
    if (isListenAddress(value.listen) && isListenAddress(tls?.listen) && value.listen.port !== 0 &&
      value.listen.port === tls.listen.port && value.listen.host === tls.listen.host) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'listen'], message: `the plain listener already uses "${formatListen(value.listen)}"` })
    }
    const users = Array.isArray(value.users) ? value.users : []
    const seen = new Set<string>()
    users.forEach((user, i) => {
      const name = isRecord(user) ? user.username : undefined
      if (typeof name !== 'string') return
      if (seen.has(name)) ctx.addIssue({ code: 'custom', path: ['users', i, 'username'], message: `user "${name}" is listed twice` })
      seen.add(name)
    })
    // Safe by default, like mosquitto 2.0: on any other interface, anyone on the network could
    // publish readings that go upstream under this gateway's name. TLS encrypts; it does not say
    // who may publish.
    if (users.length > 0 || value.passwordFile !== undefined || value.allowAnonymous === true) return
    const listeners: Array<[string[], unknown]> = [[['listen'], value.listen], [['tls', 'listen'], tls?.listen]]
    for (const [path, address] of listeners) {
      if (!isListenAddress(address) || isLoopback(address.host)) continue
      ctx.addIssue({
        code: 'custom',
        path,
        message: `"${formatListen(address)}" is not a loopback address and the broker has no users: anyone on the network could publish readings. Add ingest.broker.users (hashes from \`sluice hash-password\`) or ingest.broker.passwordFile, or set ingest.broker.allowAnonymous: true to accept anyone`
      })
    }
  }
)

// -- subscribe adapter: one entry per subscription to an existing local broker
const subscription = section(
  {
    url: mqttUrl().describe('URL of the local broker, e.g. "mqtt://127.0.0.1:1884".'),
    topics: z.array(topicFilter()).min(1).describe('Topic filters to subscribe to, e.g. "sensors/#". Of what arrives, only readings on ingest.topics are forwarded.'),
    clientId: z.string().min(1).optional().describe('Client id of sluice\'s persistent session on the local broker, which queues readings while sluice restarts. Default: "{gateway.id}-ingest" (then "-ingest-2", "-ingest-3"... for further entries).'),
    qos: z
      .union([z.literal(0), z.literal(1)], { error: (iss) => `expected 0 or 1, got ${show(iss.input)}` })
      .default(1)
      .describe('QoS of the subscription: 1 (the local broker keeps each reading until sluice has stored it, and queues while sluice is away) or 0 (readings can be lost).'),
    username: z.string().optional().describe('MQTT user name on the local broker.'),
    password: z.string().optional().describe('MQTT password on the local broker. Better: passwordFile.'),
    passwordFile: z.string().min(1).optional().describe('Path of a file holding the local broker\'s MQTT password (a trailing newline is ignored). Not together with password.')
  },
  {},
  (value, ctx) => {
    if (value.password !== undefined && value.passwordFile !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['password'], message: 'give either password or passwordFile, not both' })
    }
  }
)

/** The default client id of the `index`th subscription (see subscription.clientId). */
function subscribeClientId (gatewayId: string, index: number): string {
  return index === 0 ? `${gatewayId}-ingest` : `${gatewayId}-ingest-${index + 1}`
}
// -- end subscribe adapter

const forwardedTopic = topicFilter().refine((filter) => !/^\$SYS(\/|$)/.test(filter), {
  error: (iss) => `$SYS topics are never forwarded, got ${show(iss.input)}`
})

const ingest = section(
  {
    broker: broker.prefault({}).describe('The embedded MQTT broker that sensors connect to.'),
    topics: z
      .array(forwardedTopic)
      .min(1, { error: 'expected at least one topic filter ("#" forwards everything)' })
      .default(() => ['#'])
      .describe('MQTT topic filters of the readings to forward upstream ($SYS topics never are). Publishes to other topics still reach local subscribers, they are just not forwarded.'),
    subscribe: z
      .array(subscription)
      .default(() => [])
      .describe('Subscriptions to an existing local broker (e.g. mosquitto) to pull readings from, besides or instead of the embedded broker. Each is a persistent QoS 1 session: a reading is acknowledged to the local broker only once it is in the buffer.')
  },
  {},
  (value, ctx) => {
    const brokerValue = value.broker
    const subscriptions = Array.isArray(value.subscribe) ? value.subscribe : []
    if (isRecord(brokerValue) && brokerValue.enabled === false && subscriptions.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['broker', 'enabled'],
        message: 'at least one ingest must be enabled: the embedded broker, or an ingest.subscribe entry'
      })
    }
    // Two sessions with one client id take each other over, in a loop [MQTT-3.1.4-2].
    const seen = new Map<string, number>()
    subscriptions.forEach((entry, i) => {
      const clientId = isRecord(entry) ? entry.clientId : undefined
      if (typeof clientId !== 'string') return
      const first = seen.get(clientId)
      if (first === undefined) seen.set(clientId, i)
      else ctx.addIssue({ code: 'custom', path: ['subscribe', i, 'clientId'], message: `the same clientId as ingest.subscribe[${first}] ("${clientId}"); each subscription needs its own session` })
    })
  }
)

// ------------------------------------------------------------------ buffer

/** The smallest buffer.maxBytes. */
const MIN_BUFFER_BYTES = 1024 * 1024

const buffer = section(
  {
    path: z.string().min(1).default('/var/lib/sluice').describe('Directory of the durable buffer (LevelDB). One sluice per directory.'),
    sync: z
      .enum(['always', 'interval'])
      .default('interval')
      .describe('When writes are fsynced: "always" before each PUBACK (no reading lost to a power cut), or "interval" every syncInterval (a power cut can lose the last syncInterval of readings; a process crash loses none).'),
    syncInterval: positiveDuration()
      .prefault('1s')
      .describe('With sync "interval": how often the buffer is fsynced, in milliseconds or with a unit ("1s").'),
    // -- buffer bounds
    maxBytes: size()
      // LevelDB's own files and the reserve its compactions need (buffer/bounds.ts) take a
      // sizable part of anything smaller.
      .refine((bytes) => bytes >= MIN_BUFFER_BYTES, { error: `must be at least 1MiB (${MIN_BUFFER_BYTES} bytes)` })
      .prefault('1GiB')
      .describe('Most disk space the buffer\'s directory may use, in bytes or with a unit ("1GiB"), as the disk counts it (LevelDB\'s own files included). Part of it stays free for LevelDB\'s compactions, which briefly hold tables twice or three times: 70% of a bound under 32MiB, 88MiB of 1GiB. What a full buffer does is buffer.overflow.'),
    minFreeDisk: size()
      .prefault('256MiB')
      .describe('Disk space the buffer leaves free on its volume, in bytes or with a unit ("256MiB"): below it the buffer counts as full, whatever else filled the disk.'),
    overflow: z
      .enum(['block', 'drop-oldest', 'drop-newest'])
      .default('block')
      .describe('What a full buffer does: "block" withholds PUBACKs until the upstream frees space (QoS 1 sensors slow down, nothing is lost; QoS 0 readings are dropped), "drop-oldest" drops the oldest readings not yet sent, "drop-newest" drops the incoming ones. Every drop is counted and announced upstream by a gap event.'),
    ttl: duration()
      .prefault('7d')
      .describe('Readings that have waited longer than this are dropped (and announced by gap events), in milliseconds or with a unit ("7d"); 0: never. Measured on a monotonic clock while the gateway is powered on, so setting the system clock (NTP at boot, no real-time clock) expires nothing; time switched off does not count.')
    // -- end buffer bounds
  },
  {}
)

// ------------------------------------------------------------------ upstream

const backoff = section(
  {
    min: positiveDuration().prefault('500ms').describe('First reconnect delay, in milliseconds or with a unit ("500ms"); doubles per failed attempt, with jitter.'),
    max: positiveDuration().prefault('60s').describe('Longest reconnect delay, in milliseconds or with a unit ("60s").')
  },
  {},
  (value, ctx) => {
    if (typeof value.min === 'number' && typeof value.max === 'number' && value.max < value.min) {
      ctx.addIssue({
        code: 'custom',
        path: ['max'],
        message: `must not be less than backoff.min (${value.min}ms), got ${value.max}ms`
      })
    }
  }
)

const FORMATS = ['cloudevents-json', 'cloudevents-binary', 'cbor-batch'] as const

// `protocol: 5` is what people write in YAML (a number); "3.1.1" can only be a string.
const protocolError = (iss: { readonly input?: unknown }) => `expected "3.1.1" or 5, got ${show(iss.input)}`
const protocol = z
  .union([z.literal('3.1.1'), z.literal('5'), z.literal(5)], { error: protocolError })
  .transform((value) => (value === '3.1.1' ? '3.1.1' : '5') as '3.1.1' | '5')

// Bounds of a cbor-batch message. 200 readings of ~100 bytes fill ~25 KiB: a few cellular
// round trips, well under the 128 KiB AWS IoT Core and the 256 KiB Azure IoT Hub take.
const batch = section(
  {
    maxRecords: integer(1, 65535).default(200).describe('Most readings per batch message.'),
    maxBytes: size()
      .refine((bytes) => bytes >= 64, { error: 'must be at least 64 bytes' })
      .prefault('64KiB')
      .describe('Largest batch message (the CBOR document), in bytes or with a unit ("64KiB"). A single reading larger than this still goes, alone.'),
    maxDelay: duration()
      .prefault('20ms')
      .describe('Longest a batch that is not full waits for more readings before it is sent, in milliseconds or with a unit ("20ms"); 0 sends at once.')
  },
  {}
)

/** URLs whose scheme makes a TLS connection: the only ones the TLS keys apply to. */
function isTlsUrl (url: unknown): boolean {
  return typeof url === 'string' && /^(mqtts|ssl|wss):/i.test(url)
}

const upstream = section(
  {
    url: mqttUrl().describe('URL of the upstream MQTT broker: mqtt://, mqtts:// (TLS), tcp:// or ssl://, e.g. "mqtts://broker.example.com:8883".'),
    clientId: z.string().min(1).optional().describe('MQTT client id upstream. Default: gateway.id.'),
    username: z.string().optional().describe('MQTT user name upstream.'),
    password: z.string().optional().describe('MQTT password upstream. Better: passwordFile, or the SLUICE_UPSTREAM_PASSWORD environment variable.'),
    passwordFile: z.string().min(1).optional().describe('Path of a file holding the upstream MQTT password (a trailing newline is ignored). Not together with password.'),
    protocol: protocol
      .optional()
      .describe('MQTT version spoken upstream: "3.1.1" or 5. MQTT 5 brings the upstream\'s limits (Receive Maximum, Maximum Packet Size) and its refusals (PUBACK reason codes); some clouds (Azure IoT Hub) speak 3.1.1 only. Default: 5 with format cloudevents-binary (which needs it), else "3.1.1".'),
    ca: z.string().min(1).optional().describe('Path of the PEM CA certificate(s) to trust for the upstream broker, instead of the usual public roots. Read at start; mqtts:// only.'),
    cert: z.string().min(1).optional().describe('Path of the PEM client certificate, for mutual TLS (AWS IoT style). Read at start; with key; mqtts:// only.'),
    key: z.string().min(1).optional().describe('Path of the PEM private key of the client certificate. Read at start; with cert; mqtts:// only.'),
    servername: z.string().min(1).optional().describe('The name sent in TLS SNI and checked against the broker\'s certificate. Default: the URL\'s host (none when it is an IP address). mqtts:// only.'),
    alpn: z.array(z.string().min(1)).min(1).optional().describe('TLS ALPN protocols to offer, e.g. ["x-amzn-mqtt-ca"] for AWS IoT Core on port 443. mqtts:// only.'),
    topic: topicTemplate('topic', ['gateway', 'topic'])
      .default('sluice/{gateway}/{topic}')
      .describe('Upstream topic of each reading; {gateway} is gateway.id, {topic} the topic the sensor published to.'),
    eventsTopic: topicTemplate('kind', ['gateway', 'kind'])
      .default('sluice/{gateway}/$sluice/{kind}')
      .describe('Upstream topic of sluice\'s own events; {gateway} is gateway.id, {kind} one of gap, epoch, batch, health.'),
    format: z
      .enum(FORMATS)
      .default('cloudevents-json')
      .describe('What goes on the wire: "cloudevents-json" (a JSON CloudEvent per reading; MQTT 3.1.1 or 5), "cloudevents-binary" (the sensor\'s bytes with the CloudEvent attributes as MQTT 5 user properties) or "cbor-batch" (many readings per message, CBOR).'),
    // MQTT packet identifiers are 16-bit and non-zero [MQTT-2.3.1-1], so at most 65535 QoS 1
    // publishes can await their PUBACK at once.
    inflight: integer(1, 65535).default(64).describe('Most messages published upstream and not yet acknowledged (PUBACK) at once; an MQTT 5 upstream\'s Receive Maximum lowers it.'),
    batch: batch.prefault({}).describe('Bounds of a message of format "cbor-batch" (other formats send one reading per message).'),
    backoff: backoff.prefault({}).describe('Reconnect delays after the upstream connection fails: exponential with jitter, from min to max. Also the delays before retrying a message the upstream refused.'),
    maxMessagesPerSecond: z.number().min(0).default(0).describe('Most messages published upstream per second, evenly spaced; 0 means no cap. Clouds cap a connection (AWS IoT Core: 100/s): with cbor-batch each message carries many readings.'),
    rejectRetries: integer(0, 1000).default(5).describe('How often a message the upstream refuses (MQTT 5 PUBACK reason >= 0x80) is retried, with backoff, before it is set aside as a dead letter and announced by a gap event (reason "rejected").')
  },
  {},
  (value, ctx) => {
    if (value.password !== undefined && value.passwordFile !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['password'], message: 'give either password or passwordFile, not both' })
    }
    if (value.format === 'cloudevents-binary' && value.protocol === '3.1.1') {
      ctx.addIssue({ code: 'custom', path: ['protocol'], message: 'format cloudevents-binary needs MQTT 5 (its attributes travel as user properties): set protocol to 5, or use format cloudevents-json' })
    }
    if ((value.cert === undefined) !== (value.key === undefined)) {
      ctx.addIssue({ code: 'custom', path: [value.cert === undefined ? 'cert' : 'key'], message: 'give both cert and key (mutual TLS), or neither' })
    }
    if (!isTlsUrl(value.url)) {
      for (const key of ['ca', 'cert', 'key', 'servername', 'alpn']) {
        if (value[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'applies to TLS only: use an mqtts:// or ssl:// url' })
      }
    }
  }
).transform(({ protocol, ...rest }) => ({
  ...rest,
  protocol: protocol ?? (rest.format === 'cloudevents-binary' ? '5' : '3.1.1') as '3.1.1' | '5'
}))

// ------------------------------------------------------------------ health, admin, log

// The gateway's own readings (adapters/system.ts). Each one costs a few milliseconds of
// systeminformation's reads (some of them synchronous shell-outs), so the interval has a floor.
const HEALTH_MIN_INTERVAL_MS = 100

const health = section(
  {
    enabled: z.boolean().default(true).describe('Take the gateway\'s own health readings and forward them upstream like any reading (topic "$sluice/health").'),
    interval: duration()
      .refine((ms) => ms >= HEALTH_MIN_INTERVAL_MS, { error: `must be at least ${HEALTH_MIN_INTERVAL_MS}ms` })
      .prefault('60s')
      .describe(`How often the gateway's own readings (cpu, temperature, memory, disk, uptime, backlog) are taken, in milliseconds or with a unit ("60s"); at least ${HEALTH_MIN_INTERVAL_MS}ms.`)
  },
  {}
)

const admin = z
  .strictObject({
    enabled: z.boolean().default(true).describe('Serve the admin HTTP endpoint. Without it, `sluice status` and Prometheus have nothing to read.'),
    listen: listen()
      .prefault('127.0.0.1:9464')
      .describe('Address and TCP port of the admin HTTP endpoint (/metrics, /healthz, /readyz, /status), "host:port"; port 0 picks a free port.')
  })
  .describe('The admin HTTP endpoint.')

const log = z
  .strictObject({
    level: z
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
      .default('info')
      .describe('Least severe level logged. Logs are JSON lines on stdout (journald), pretty when stdout is a terminal.')
  })
  .describe('Logging.')

// ------------------------------------------------------------------ the file

export const configSchema = section(
  {
    gateway,
    ingest: ingest.prefault({}).describe('Where readings come from.'),
    buffer: buffer.prefault({}).describe('The durable on-disk buffer.'),
    upstream: upstream.describe('The upstream MQTT broker readings are forwarded to.'),
    health: health.prefault({}).describe('The gateway\'s own health readings, forwarded upstream on topic "$sluice/health".'),
    admin: admin.prefault({}),
    log: log.prefault({})
  },
  {}
)
  .transform(({ gateway, ingest, buffer, upstream, health, admin, log }) => {
    const { url, clientId, ...rest } = upstream
    // -- subscribe adapter: default client ids come from the gateway id
    const subscribe = ingest.subscribe.map((entry, i) => ({ ...entry, clientId: entry.clientId ?? subscribeClientId(gateway.id, i) }))
    return { gateway, ingest: { ...ingest, subscribe }, buffer, upstream: { url, clientId: clientId ?? gateway.id, ...rest }, health, admin, log }
  })
  .meta({
    title: 'sluice config',
    description: 'Config file of sluice, the store-and-forward MQTT gateway (default path /etc/sluice/sluice.yaml). Sizes are bytes or a string with B, KiB, MiB, GiB or TiB; durations are milliseconds or a string with ms, s, m, h or d.'
  })

/** What the YAML file may hold (sizes, durations and addresses as written). */
export type SluiceConfigInput = z.input<typeof configSchema>

/**
 * The parsed config the daemon codes against: sizes in bytes, durations in milliseconds, listen
 * addresses as `{ host, port }`, every default applied, keys not built yet left out.
 */
export type SluiceConfig = z.output<typeof configSchema>
