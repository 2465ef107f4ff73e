/**
 * Splits the bytes an MQTT server sends into whole packets by their fixed header [MQTT-2.2]: a
 * type byte, then the Remaining Length in one to four bytes. The connection reads PUBACKs (all but
 * a handful of the packets an upstream sends) straight from the frame, and hands any other packet
 * to mqtt-packet's parser whole.
 */
export class PacketFrames {
  private pending: Buffer | null = null

  /** @param maxLength the largest Remaining Length accepted: a server sends sluice nothing large */
  constructor (private readonly maxLength: number) {}

  /**
   * Calls `onFrame` with each whole packet in the bytes received so far (the packet, and where its
   * variable header starts), keeping a partial one for the next chunk. Returns an error message for
   * a Remaining Length that is malformed or over the bound; nothing more should be pushed then.
   */
  push (chunk: Buffer, onFrame: (packet: Buffer, bodyStart: number) => void): string | null {
    const data = this.pending === null ? chunk : Buffer.concat([this.pending, chunk])
    this.pending = null
    let offset = 0
    while (offset < data.length) {
      let length = 0
      let multiplier = 1
      let i = offset + 1
      let complete = false
      while (i < data.length && i - offset <= 4) {
        const byte = data[i++]
        length += (byte & 0x7f) * multiplier
        multiplier *= 128
        if ((byte & 0x80) === 0) {
          complete = true
          break
        }
      }
      if (!complete) {
        if (i - offset > 4) return 'a Remaining Length longer than four bytes'
        break // the rest of the header is still on its way
      }
      if (length > this.maxLength) return `a ${length}-byte packet, more than the ${this.maxLength} expected`
      const end = i + length
      if (end > data.length) break
      onFrame(data.subarray(offset, end), i - offset)
      offset = end
    }
    if (offset < data.length) this.pending = data.subarray(offset)
    return null
  }
}
