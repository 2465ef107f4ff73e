/**
 * A QoS 0 reading that meets a buffer holding commits back is dropped at once (MQTT gives no way
 * to slow its sender): it is counted as dropped, and only as dropped. A real gateway in-process,
 * a real MQTT.js sensor; the disk's failure comes from the buffer's fault-injection seam.
 */
import t from 'tap'
import { connect } from 'mqtt'
import { startGateway } from './helpers/gateway.js'
import { waitUntil } from './helpers/wait.js'

t.test('QoS 0 readings dropped by a buffer that holds commits back are counted as dropped, not as ingested', async (t) => {
  let failing = true
  const gateway = await startGateway(t, {
    upstreamUrl: 'mqtt://127.0.0.1:1', // never reached: nothing here is forwarded
    bufferPath: t.testdir(),
    beforeCommit: async () => { if (failing) throw new Error('injected: the disk fails') }
  })
  const sensor = connect(gateway.sensorUrl, { reconnectPeriod: 0 })
  t.teardown(async () => { await sensor.endAsync(true) })
  await new Promise<void>((resolve) => sensor.once('connect', () => { resolve() }))

  // One QoS 1 reading whose commit fails: the buffer stops accepting and retries it.
  const held = sensor.publishAsync('sensors/a/temp', '{"n":0}', { qos: 1 })
  await waitUntil(() => !gateway.stats().buffer.accepting, 10_000, 'the buffer to hold commits back')
  t.equal(gateway.stats().ingested.broker, 1, 'the held QoS 1 reading is ingested')

  for (let n = 1; n <= 20; n++) sensor.publish('sensors/a/temp', JSON.stringify({ n }), { qos: 0 })
  await waitUntil(() => gateway.stats().dropped.overflow === 20, 10_000, '20 QoS 0 readings dropped')
  t.equal(gateway.stats().ingested.broker, 1, 'the dropped QoS 0 readings are not counted as ingested')
  t.equal(gateway.stats().lastSeq, 21, 'each still got its seq')

  failing = false
  await held
  t.equal(gateway.stats().ingested.broker, 1, 'the QoS 1 reading, once written, is counted once')
  sensor.publish('sensors/a/temp', '{"n":21}', { qos: 0 })
  await waitUntil(() => gateway.stats().ingested.broker === 2, 10_000, 'a QoS 0 reading the buffer takes is ingested')
  t.equal(gateway.stats().dropped.overflow, 20)
})
