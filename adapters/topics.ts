/**
 * Topic checks shared by the ingest adapters.
 */

/**
 * Why an upstream broker would refuse this topic, or null when it is fine. A topic name must be
 * valid UTF-8 without U+0000 [MQTT-1.5.3-2]; brokers also refuse control characters and
 * non-characters [MQTT-1.5.3-1 ... the "SHOULD NOT include"], and mosquitto disconnects a client
 * that publishes one. mqtt-packet decodes invalid UTF-8 to U+FFFD, so that stands for it. A
 * forwarder that kept resending such a reading would wedge the whole pipeline (docs/guarantees.md §8).
 */
export function badTopicReason (topic: string): string | null {
  // By index, not `for...of`: a string per character was most of this check's cost.
  for (let i = 0; i < topic.length; i++) {
    const c = topic.codePointAt(i) as number
    if (c > 0xffff) i++
    if (c > 0x1f && c < 0x7f) continue
    if (c <= 0x1f || (c >= 0x7f && c <= 0x9f)) return `control character U+${hex(c)}`
    if (c === 0xfffd) return 'invalid UTF-8 (U+FFFD)'
    if ((c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) === 0xfffe) return `non-character U+${hex(c)}`
  }
  return null
}

function hex (c: number): string {
  return c.toString(16).toUpperCase().padStart(4, '0')
}

/** Whether an MQTT topic filter matches a topic name [MQTT-4.7]. */
export function topicMatches (filter: string, topic: string): boolean {
  return levelsMatch(filter.split('/'), topic, topic.split('/'))
}

function levelsMatch (f: readonly string[], topic: string, t: readonly string[]): boolean {
  // [MQTT-4.7.2-1] wildcards at the first level do not match topics beginning with '$'
  if (topic.startsWith('$') && (f[0].startsWith('#') || f[0].startsWith('+'))) return false
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}

/**
 * A predicate for "is this topic forwarded": matches one of the filters, never `$SYS`. The
 * filters are split once and the topic once per call: it runs for every reading.
 */
export function forwardedTopics (filters: readonly string[]): (topic: string) => boolean {
  const split = filters.map((filter) => filter.split('/'))
  // "#" (the default) matches every topic not beginning with '$' [MQTT-4.7.2-1] without splitting it.
  const everything = filters.includes('#')
  return (topic) => {
    if (topic.startsWith('$SYS')) return false
    if (everything && !topic.startsWith('$')) return true
    const t = topic.split('/')
    return split.some((f) => levelsMatch(f, topic, t))
  }
}
