// The `ingest` section of the config schema (docs/config.md): the embedded broker (users, ACLs,
// TLS, limits) and subscriptions to an existing local broker.
import { z } from 'zod'
import { section, isRecord } from './section.js'
import {
  formatListen,
  integer,
  isListenAddress,
  isLoopback,
  listen,
  mqttUrl,
  positiveDuration,
  show,
  size,
  topicFilter
} from './values.js'

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
export function subscribeClientId (gatewayId: string, index: number): string {
  return index === 0 ? `${gatewayId}-ingest` : `${gatewayId}-ingest-${index + 1}`
}
// -- end subscribe adapter

const forwardedTopic = topicFilter().refine((filter) => !/^\$SYS(\/|$)/.test(filter), {
  error: (iss) => `$SYS topics are never forwarded, got ${show(iss.input)}`
})

export const ingest = section(
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
