import mqttPacket from 'mqtt-packet'

/**
 * mqtt-packet (under aedes and MQTT.js) builds, on its first write, a table of 65,536 two-byte
 * Buffers for packet identifiers: 6.3 MB of heap held for the life of the process, measured in a
 * heap snapshot of the idle daemon (a sixth of its old generation). Without the table it makes
 * the two bytes when it writes them, which costs nothing a profile shows. It is one setting of the
 * one mqtt-packet in the process (under the broker, the subscription and the upstream connection
 * alike): the gateway makes it at start, before any of them writes a packet.
 */
export function skipPacketNumberTable (): void {
  mqttPacket.writeToStream.cacheNumbers = false
}
