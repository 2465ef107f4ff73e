import type { UpstreamMessage } from '../contract.js'

export type MqttProtocol = '3.1.1' | '5'

/** Bytes of an MQTT Variable Byte Integer [MQTT-1.5.5]. */
function varintSize (n: number): number {
  if (n < 0x80) return 1
  if (n < 0x4000) return 2
  if (n < 0x200000) return 3
  return 4
}

/** Bytes of an MQTT UTF-8 string: a two-byte length, then the bytes [MQTT-1.5.4]. */
function stringSize (text: string): number {
  return 2 + Buffer.byteLength(text)
}

/** Bytes of the MQTT 5 properties sluice sets on a PUBLISH, without their length prefix. */
function propertiesSize (message: UpstreamMessage): number {
  const p = message.properties
  if (p === undefined) return 0
  let size = 0
  if (p.contentType !== undefined) size += 1 + stringSize(p.contentType)
  for (const [key, value] of Object.entries(p.userProperties ?? {})) size += 1 + stringSize(key) + stringSize(value)
  return size
}

/**
 * The size of the QoS 1 PUBLISH packet a message makes, fixed header included: what an upstream's
 * Maximum Packet Size (MQTT 5 CONNACK) bounds [MQTT-3.1.2-24]. Properties count on MQTT 5 only
 * (MQTT 3.1.1 has none, and the adapter leaves them out).
 */
export function publishPacketSize (message: UpstreamMessage, protocol: MqttProtocol): number {
  let remaining = stringSize(message.topic) + 2 /* packet identifier */ + message.payload.length
  if (protocol === '5') {
    const props = propertiesSize(message)
    remaining += varintSize(props) + props
  }
  return 1 + varintSize(remaining) + remaining
}
