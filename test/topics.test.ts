/**
 * The per-reading topic checks of the broker (adapters/topics.ts): which topics are refused as
 * poison (an upstream broker would refuse them and wedge the forwarder) and which are forwarded.
 * Both are written for speed; here they are held to the plain definitions on seeded random topics:
 * every code point's verdict by the rules of MQTT-1.5.3, and each filter by topicMatches.
 */
import t from 'tap'
import { badTopicReason, forwardedTopics, topicMatches } from '../adapters/topics.js'
import { mulberry32 } from '../scripts/random.js'

const random = mulberry32(1553)
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]

/** The rule, code point by code point. */
function refused (topic: string): boolean {
  for (const char of topic) {
    const c = char.codePointAt(0) as number
    if (c <= 0x1f || (c >= 0x7f && c <= 0x9f) || c === 0xfffd) return true
    if ((c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) === 0xfffe) return true
  }
  return false
}

const PIECES = ['a', 'site', '/', '/', '+', '#', '$', '$SYS', 'é', '水', '😀', '\u0000', '\u001f', '\u007f', '\u009f', '\u00a0',
  '\ufffd', '\ufdd0', '\ufdef', '\ufffe', '\uffff', '\u{1fffe}', '\u{10ffff}', '\u{1f600}', '\ud800', '\udfff', ' ']

function randomTopic (): string {
  return Array.from({ length: 1 + Math.floor(random() * 6) }, () => pick(PIECES)).join('')
}

t.test('a topic is refused exactly when one of its code points breaks the rules', async (t) => {
  let agreed = 0
  let refusedCount = 0
  for (let i = 0; i < 20_000; i++) {
    const topic = randomTopic()
    const expected = refused(topic)
    if ((badTopicReason(topic) !== null) !== expected) {
      t.fail(`${JSON.stringify(topic)}: expected ${expected ? 'refused' : 'accepted'}, got ${String(badTopicReason(topic))}`)
      return
    }
    agreed++
    if (expected) refusedCount++
  }
  t.equal(agreed, 20_000)
  t.ok(refusedCount > 2000 && refusedCount < 18_000, `both verdicts well represented (${refusedCount} refused)`)
  t.equal(badTopicReason('a/\u{1fffe}'), 'non-character U+1FFFE', 'a code point past the BMP is named whole')
  t.equal(badTopicReason('a\u0007'), 'control character U+0007')
})

t.test('a topic is forwarded exactly when a filter matches it, never a $SYS topic', async (t) => {
  const filterSets = [['#'], ['site/#'], ['+/a', '#'], ['$share/#', 'site/+/x'], ['#', '$foo/#'], ['a', '+', '+/+']]
  let agreed = 0
  for (const filters of filterSets) {
    const forwarded = forwardedTopics(filters)
    for (let i = 0; i < 3000; i++) {
      const topic = random() < 0.2 ? pick(['$SYS/x', '$foo/a', '$', 'site/a/x', 'a', 'a/']) : randomTopic()
      const expected = !topic.startsWith('$SYS') && filters.some((f) => topicMatches(f, topic))
      if (forwarded(topic) !== expected) {
        t.fail(`filters ${JSON.stringify(filters)}, topic ${JSON.stringify(topic)}: expected ${expected}`)
        return
      }
      agreed++
    }
  }
  t.equal(agreed, 3000 * filterSets.length)
})
