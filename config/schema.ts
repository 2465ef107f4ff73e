// The config file (docs/config.md) as one zod schema: the single source of the TypeScript type
// (`SluiceConfig`), the defaults, the validation and the shipped JSON Schema. Every key of the
// contract is here from the start; a key whose feature is not built yet is type-checked and then
// refused with "not supported yet", never silently ignored.
import { z } from 'zod'
import { ingest, subscribeClientId } from './schema-ingest.js'
import { section } from './section.js'
import {
  duration,
  integer,
  listen,
  mqttUrl,
  positiveDuration,
  show,
  size,
  topicTemplate
} from './values.js'

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
