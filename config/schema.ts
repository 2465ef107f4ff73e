// The config file (SPEC section 4) as one zod schema: the single source of the TypeScript type
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

const brokerUser = z.strictObject({
  username: z.string().min(1).describe('The user name a sensor connects with.'),
  passwordHash: z.string().min(1).describe('The password hash printed by `sluice hash-password` ("scrypt$...").'),
  publish: z.array(topicFilter()).optional().describe('Topic filters this user may publish to, e.g. "sensors/sensor1/#".')
})

const broker = section(
  {
    enabled: z.boolean().default(true).describe('Run the embedded MQTT broker that sensors connect to.'),
    listen: listen()
      .prefault('127.0.0.1:1883')
      .describe('Address and TCP port the embedded broker listens on, "host:port" ("[::1]:1883" for IPv6; port 0 picks a free port). Without broker users only a loopback address is allowed.')
  },
  {
    tls: later(
      z.strictObject({
        listen: listen().describe('Address and TCP port of the TLS listener, "host:port".'),
        cert: z.string().min(1).describe('Path of the PEM certificate (chain).'),
        key: z.string().min(1).describe('Path of the PEM private key.')
      }),
      'broker TLS',
      'A TLS listener for sensors, next to the plain one.'
    ),
    allowAnonymous: later(z.boolean(), 'broker authentication', 'Accept sensors without a user name on non-loopback listeners too. Anonymous clients are always accepted on loopback.'),
    users: later(z.array(brokerUser), 'broker authentication', 'The sensors allowed to connect, each with a password hash and the topics it may publish to.'),
    maxPayload: later(size(), 'broker limits', 'Largest payload a sensor may publish, in bytes or with a unit ("64KiB").'),
    maxClients: later(integer(1), 'broker limits', 'Most sensors connected at once.')
  },
  (value, ctx) => {
    // The broker has no authentication yet: on any other interface, anyone on the network could
    // publish readings that get forwarded upstream under this gateway's name.
    const hasUsers = Array.isArray(value.users) && value.users.length > 0
    if (hasUsers || value.allowAnonymous === true) return
    if (isListenAddress(value.listen) && !isLoopback(value.listen.host)) {
      ctx.addIssue({
        code: 'custom',
        path: ['listen'],
        message: `without broker users the embedded broker may only listen on a loopback address (127.0.0.0/8, ::1, localhost), or anyone on the network could publish; got "${formatListen(value.listen)}" (broker users are not supported yet)`
      })
    }
  }
)

const subscription = z.strictObject({
  url: mqttUrl().describe('URL of the local broker, e.g. "mqtt://127.0.0.1:1884".'),
  topics: z.array(topicFilter()).min(1).describe('Topic filters to subscribe to.'),
  clientId: z.string().min(1).optional().describe('Client id of a persistent session, so the local broker queues readings while sluice restarts.')
})

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
      .describe('MQTT topic filters of the readings to forward upstream ($SYS topics never are). Publishes to other topics still reach local subscribers, they are just not forwarded.')
  },
  {
    subscribe: later(z.array(subscription), 'subscribe adapter', 'Subscriptions to an existing local broker (e.g. mosquitto) to pull readings from.')
  },
  (value, ctx) => {
    const brokerValue = value.broker
    if (isRecord(brokerValue) && brokerValue.enabled === false) {
      ctx.addIssue({
        code: 'custom',
        path: ['broker', 'enabled'],
        message: 'at least one ingest must be enabled; ingest.subscribe is not supported yet'
      })
    }
  }
)

// ------------------------------------------------------------------ buffer

const buffer = section(
  {
    path: z.string().min(1).default('/var/lib/sluice').describe('Directory of the durable buffer (LevelDB). One sluice per directory.'),
    sync: z
      .enum(['always', 'interval'])
      .default('interval')
      .describe('When writes are fsynced: "always" before each PUBACK (no reading lost to a power cut), or "interval" every syncInterval (a power cut can lose the last syncInterval of readings; a process crash loses none).'),
    syncInterval: positiveDuration()
      .prefault('1s')
      .describe('With sync "interval": how often the buffer is fsynced, in milliseconds or with a unit ("1s").')
  },
  {
    maxBytes: later(size(), 'buffer bounds', 'Most disk space the buffer may use, in bytes or with a unit ("1GiB").'),
    minFreeDisk: later(size(), 'buffer bounds', 'Disk space to leave free, in bytes or with a unit ("256MiB").'),
    overflow: later(z.enum(['block', 'drop-oldest', 'drop-newest']), 'buffer bounds', 'What a full buffer does: "block" withholds PUBACKs (backpressure), "drop-oldest" or "drop-newest" drop readings (announced by gap events).'),
    ttl: later(positiveDuration(), 'buffer TTL', 'Readings older than this are dropped (and announced by gap events), in milliseconds or with a unit ("7d").')
  }
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
const BUILT_FORMATS: readonly string[] = ['cloudevents-json']

const upstream = section(
  {
    url: mqttUrl().describe('URL of the upstream MQTT broker: mqtt://, mqtts:// (TLS), tcp:// or ssl://, e.g. "mqtts://broker.example.com:8883".'),
    clientId: z.string().min(1).optional().describe('MQTT client id upstream. Default: gateway.id.'),
    username: z.string().optional().describe('MQTT user name upstream.'),
    password: z.string().optional().describe('MQTT password upstream. Better: passwordFile, or the SLUICE_UPSTREAM_PASSWORD environment variable.'),
    passwordFile: z.string().min(1).optional().describe('Path of a file holding the upstream MQTT password (a trailing newline is ignored). Not together with password.'),
    topic: topicTemplate('topic', ['gateway', 'topic'])
      .default('sluice/{gateway}/{topic}')
      .describe('Upstream topic of each reading; {gateway} is gateway.id, {topic} the topic the sensor published to.'),
    eventsTopic: topicTemplate('kind', ['gateway', 'kind'])
      .default('sluice/{gateway}/$sluice/{kind}')
      .describe('Upstream topic of sluice\'s own events; {gateway} is gateway.id, {kind} one of gap, epoch, batch, health.'),
    format: z
      .enum(FORMATS)
      .superRefine((format, ctx) => {
        if (!BUILT_FORMATS.includes(format)) ctx.addIssue({ code: 'custom', message: `not supported yet (${format} format)` })
      })
      .default('cloudevents-json')
      .describe('What goes on the wire: "cloudevents-json" (a JSON CloudEvent per reading), "cloudevents-binary" (MQTT 5; not supported yet) or "cbor-batch" (many readings per message; not supported yet).'),
    // MQTT packet identifiers are 16-bit and non-zero [MQTT-2.3.1-1], so at most 65535 QoS 1
    // publishes can await their PUBACK at once.
    inflight: integer(1, 65535).default(64).describe('Most readings published upstream and not yet acknowledged (PUBACK) at once.'),
    backoff: backoff.prefault({}).describe('Reconnect delays after the upstream connection fails: exponential with jitter, from min to max.')
  },
  {
    ca: later(z.string().min(1), 'upstream TLS certificates', 'Path of the PEM CA certificate(s) to trust for the upstream broker.'),
    cert: later(z.string().min(1), 'upstream TLS certificates', 'Path of the PEM client certificate, for mutual TLS (AWS IoT style).'),
    key: later(z.string().min(1), 'upstream TLS certificates', 'Path of the PEM client private key, for mutual TLS.'),
    batch: later(
      z.strictObject({
        maxRecords: integer(1).optional().describe('Most readings per batch message.'),
        maxBytes: size().optional().describe('Largest batch message, in bytes or with a unit ("64KiB").'),
        maxDelay: duration().optional().describe('Longest a reading waits for its batch to fill, in milliseconds or with a unit ("20ms").')
      }),
      'cbor-batch format',
      'Batching of format "cbor-batch".'
    ),
    maxMessagesPerSecond: later(z.number().min(0), 'upstream rate cap', 'Most messages published upstream per second; 0 means no cap (AWS IoT caps a connection at 100/s).'),
    rejectRetries: later(integer(0), 'upstream rejections', 'How often a message the upstream refuses is retried before it is set aside (gap event).')
  },
  (value, ctx) => {
    if (value.password !== undefined && value.passwordFile !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['password'], message: 'give either password or passwordFile, not both' })
    }
  }
)

// ------------------------------------------------------------------ health, admin, log

const health = later(
  z.strictObject({
    interval: positiveDuration().optional().describe('How often the gateway\'s own readings are taken, in milliseconds or with a unit ("60s").')
  }),
  'health readings',
  'The gateway\'s own readings: cpu, temperature, memory, disk, backlog.'
)

const admin = z
  .strictObject({
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
    admin: admin.prefault({}),
    log: log.prefault({})
  },
  { health }
)
  .transform(({ gateway, ingest, buffer, upstream, admin, log }) => {
    const { url, clientId, ...rest } = upstream
    return { gateway, ingest, buffer, upstream: { url, clientId: clientId ?? gateway.id, ...rest }, admin, log }
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
