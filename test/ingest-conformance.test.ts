/**
 * The ingest conformance suite (test/conformance/ingest.ts) run once per IngestAdapter: the
 * embedded aedes broker (its sensors on the plain listener, and on the TLS one), the subscription to a local broker (a real mosquitto), and the gateway's
 * own health readings.
 */
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import { connect, type IClientOptions, type MqttClient } from 'mqtt'
import type { ReadingSink } from '../adapters/contract.js'
import { BrokerAdapter } from '../adapters/broker.js'
import { readTlsFiles } from '../adapters/broker-tls.js'
import { makeCerts } from './helpers/certs.js'
import { SubscribeAdapter } from '../adapters/subscribe.js'
import { deliveryFileName, fileDeliveryStore } from '../adapters/subscribe-deliveries.js'
import { HEALTH_TOPIC, SystemAdapter } from '../adapters/system.js'
import { createLogger } from '../daemon/logger.js'
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.js'
import { waitUntil } from './helpers/wait.js'
import { type Acknowledgement, type IngestHarness, ingestConformance } from './conformance/ingest.js'

const logger = createLogger('silent')

/** A real MQTT.js client on `url`, ended at teardown; rejects when it cannot connect. */
async function connectClient (t: Test, url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = connect(url, { clientId: `sensor-${Math.random().toString(16).slice(2, 10)}`, reconnectPeriod: 0, connectTimeout: 5000, ...options })
  client.on('error', () => {}) // a refused sensor's connection is closed by the broker: expected here
  t.teardown(async () => { await client.endAsync(true) })
  await new Promise<void>((resolve, reject) => {
    const onConnect = (): void => { client.off('close', onClose); resolve() }
    const onClose = (): void => { client.off('connect', onConnect); reject(new Error(`cannot connect to ${url}`)) }
    client.once('connect', onConnect)
    client.once('close', onClose)
  })
  return client
}

/**
 * A QoS 1 round trip of `client` through its broker: what other clients sent before it has been
 * routed. Nothing to wait for once the broker has closed the connection.
 */
async function roundTrip (client: MqttClient, topic: string): Promise<void> {
  if (!client.connected) return
  await new Promise<void>((resolve, reject) => {
    const onClose = (): void => { resolve() }
    client.once('close', onClose)
    client.publishAsync(topic, 'settle', { qos: 1 }).then(() => { client.off('close', onClose); resolve() }, (err: Error) => {
      client.off('close', onClose)
      reject(err)
    })
  })
}

/** The sensor's own PUBACK: the embedded broker is what acknowledges it. */
function pubackOf (publish: Promise<unknown>): Acknowledgement {
  let acked = false
  // A refused publish gets no PUBACK: its connection is closed, and MQTT.js rejects it at teardown.
  publish.then(() => { acked = true }, () => {})
  return {
    acknowledged: () => acked,
    untilAcknowledged: async (ms) => { await waitUntil(() => acked, ms, 'the PUBACK') }
  }
}

/** The embedded broker, its sensors on the plain listener or (tls) on the TLS listener alone. */
const brokerHarness = (tls: boolean): IngestHarness => ({
  name: 'broker',
  source: 'sensors',
  build: async (t, sink) => {
    const limits = { maxPayload: 1_048_576, maxClients: 1000, connectTimeoutMs: 10_000, connectRate: 10, connectBurst: 100, maxQueuedBytes: 1_048_576 }
    const listen = { host: '127.0.0.1', port: 0 }
    let adapter: BrokerAdapter
    let url: () => string
    let options: IClientOptions = {}
    if (tls) {
      const certs = await makeCerts(t.testdir())
      const files = { cert: certs.serverCert, key: certs.serverKey }
      const tlsOptions = { ...files, listen, requireClientCert: false, useIdentityAsUsername: false }
      adapter = new BrokerAdapter({ listen: null, tls: { options: tlsOptions, material: await readTlsFiles(files) }, topics: ['sensors/#'], sink, logger, limits })
      url = () => `mqtts://localhost:${adapter.tlsAddress()?.port ?? 0}`
      options = { ca: readFileSync(certs.ca) }
    } else {
      adapter = new BrokerAdapter({ listen, topics: ['sensors/#'], sink, logger, limits })
      url = () => `mqtt://127.0.0.1:${adapter.address().port}`
    }
    let witness: MqttClient | null = null
    return {
      adapter,
      source: {
        kind: 'sensors',
        connect: async (t) => {
          const client = await connectClient(t, url(), options)
          return {
            client,
            refusedAs: client.options.clientId ?? null,
            publishQos1: (topic, payload) => pubackOf(client.publishAsync(topic, payload, { qos: 1 }))
          }
        },
        // Another client's round trip through aedes, on a topic it does not forward.
        settle: async () => {
          witness ??= await connectClient(t, url(), options).catch(() => null)
          if (witness !== null) await roundTrip(witness, 'conformance/settle')
        }
      }
    }
  }
})

function escape (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * The adapter's PUBACK to the local broker, as mosquitto logs it (`log_type all`): the mid it
 * sent the reading with, then a PUBACK from the adapter's client id for that mid.
 */
function pubackInLog (local: Mosquitto, clientId: string, topic: string): Acknowledgement {
  const sent = new RegExp(`Sending PUBLISH to ${escape(clientId)} \\(d[01], q1, r0, m(\\d+), '${escape(topic)}'`)
  const acknowledged = (): boolean => {
    const log = local.logText()
    const publish = sent.exec(log)
    if (publish === null) return false
    return new RegExp(`Received PUBACK from ${escape(clientId)} \\(Mid: ${publish[1]},`).test(log.slice(publish.index))
  }
  return {
    acknowledged,
    untilAcknowledged: async (ms) => { await waitUntil(acknowledged, ms, `the PUBACK of ${topic} in mosquitto's log`) }
  }
}

const subscribeHarness: IngestHarness = {
  name: 'subscribe',
  source: 'sensors',
  build: async (t, sink) => {
    const local = await startMosquitto(t, { extraConfig: 'log_type all' })
    const clientId = 'sluice-conformance'
    const adapter = new SubscribeAdapter({
      url: local.url,
      clientId,
      topics: ['sensors/#'],
      qos: 1,
      configPath: 'ingest.subscribe[0]',
      forward: ['sensors/#'],
      sink,
      deliveries: {
        store: fileDeliveryStore(join(t.testdir(), deliveryFileName(local.url, clientId))),
        epoch: '0123456789abcdef0123456789abcdef',
        recoveredSeq: 0
      },
      logger,
      backoff: { min: 20, max: 200 }
    })
    let witness: MqttClient | null = null
    let marks = 0
    return {
      adapter,
      source: {
        kind: 'sensors',
        connect: async (t) => {
          const client = await connectClient(t, local.url)
          return {
            client,
            refusedAs: null, // the local broker stands between: the adapter does not see sensors
            publishQos1: (topic, payload) => {
              // Acknowledged by mosquitto at once; what counts is the adapter's PUBACK to mosquitto.
              client.publishAsync(topic, payload, { qos: 1 }).catch(() => {})
              return pubackInLog(local, clientId, topic)
            }
          }
        },
        // A marker through mosquitto and back to a subscriber of its own: mosquitto has routed
        // what came before it (to the adapter's socket, or its session's queue).
        settle: async () => {
          if (witness === null) {
            witness = await connectClient(t, local.url)
            await witness.subscribeAsync('conformance/settle/#', { qos: 1 })
          }
          const w = witness
          const topic = `conformance/settle/${++marks}`
          const back = new Promise<void>((resolve) => {
            const onMessage = (received: string): void => {
              if (received !== topic) return
              w.off('message', onMessage)
              resolve()
            }
            w.on('message', onMessage)
          })
          await roundTrip(w, topic)
          await back
        }
      }
    }
  }
}

const noBacklog = async (): Promise<{ readings: number, bytes: null, oldestUnsentAgeSeconds: null }> =>
  ({ readings: 0, bytes: null, oldestUnsentAgeSeconds: null })

const systemHarness: IngestHarness = {
  name: 'system',
  source: 'own',
  build: async (t, sink) => {
    const diskPath = t.testdir()
    const options = (s: ReadingSink): ConstructorParameters<typeof SystemAdapter>[0] =>
      ({ sink: s, intervalMs: 50, diskPath, backlog: noBacklog, logger })
    const adapter = new SystemAdapter(options(sink))
    // A second adapter on the same interval is the clock settle() waits on: two of its readings
    // mean the adapter under test had two chances too.
    let ticks = 0
    const witness = new SystemAdapter(options({ append: () => ({ seq: ++ticks, durable: Promise.resolve() }) }))
    await witness.start()
    t.teardown(async () => { await witness.close() })
    return {
      adapter,
      source: {
        kind: 'own',
        topic: HEALTH_TOPIC,
        settle: async () => {
          const from = ticks
          await waitUntil(() => ticks >= from + 2, 20_000, 'two readings of the witness adapter')
        }
      }
    }
  }
}

const harnesses: Array<[string, IngestHarness]> = [
  ['broker', brokerHarness(false)],
  ['broker over TLS', brokerHarness(true)],
  ['subscribe', subscribeHarness],
  ['system', systemHarness]
]
for (const [title, harness] of harnesses) {
  t.test(`ingest adapter: ${title}`, async (t) => { ingestConformance(t, harness) })
}
