import type { OutgoingEntry, UpstreamFormat, UpstreamMessage } from '../contract.js'
import { type TopicTemplates, eventTopic, readingTopicOf } from './topics.js'
import { isJsonDocument } from './json-document.js'
import { isoTime } from './iso-time.js'

type Reading = Extract<OutgoingEntry, { kind: 'reading' }>
type SluiceEvent = Exclude<OutgoingEntry, { kind: 'reading' }>

/**
 * CloudEvents 1.0 in structured mode over MQTT (docs/receiving.md): one JSON event per message, on
 * MQTT 3.1.1 and 5 alike.
 */
export function cloudEventsJson (templates: TopicTemplates): UpstreamFormat {
  const encodeReading = structuredReadings(templates)
  return {
    name: 'cloudevents-json',
    lingerMs: 0,
    maxEntries: 1,
    take: () => ({ count: 1, open: false }),
    encode: (entries) => {
      const entry = entries[0]
      return entry.kind === 'reading' ? encodeReading(entry) : structuredEvent(entry, templates)
    }
  }
}

/** The CloudEvents MQTT binding's content type of a structured-mode message (used on MQTT 5). */
const STRUCTURED = { contentType: 'application/cloudevents+json' }

/** A reading's context attributes (docs/receiving.md), shared by the structured and the binary mode. */
export function readingAttributes (entry: Reading, gateway: string): Record<string, string> {
  return {
    specversion: '1.0',
    id: `${gateway}-${entry.epoch}-${entry.seq}`,
    source: `sluice://${gateway}`,
    type: 'io.sluice.reading',
    time: isoTime(entry.time),
    subject: entry.topic,
    sequence: sequence(entry.seq),
    sluiceepoch: entry.epoch
  }
}

/**
 * A reading as a structured-mode event, written straight into the message's buffer in the
 * attribute order of readingAttributes. What is the same for every reading (the gateway's parts,
 * the attribute names) is encoded once, a topic's escaped text once per topic (a bounded cache),
 * an epoch's once per epoch; only the numbers and the time are written per reading, digit by
 * digit. A JSON payload is copied in as the bytes the sensor sent, never decoded to text. Built
 * as a string of ~20 parts instead, an event cost about 1 KB of garbage: a tenth of what the
 * gateway allocates per reading (docs/benchmarks.md).
 */
function structuredReadings (templates: TopicTemplates): (entry: Reading) => UpstreamMessage {
  const gateway = escaped(templates.gateway)
  const topicOf = readingTopicOf(templates)
  const idHead = Buffer.from(`{"specversion":"1.0","id":"${gateway}-`)
  const source = Buffer.from(`","source":"sluice://${gateway}","type":"io.sluice.reading","time":"`)
  const subjects = new Map<string, Buffer>()
  let epoch: string | null = null
  let epochBytes = Buffer.alloc(0)
  return (entry) => {
    if (entry.epoch !== epoch) {
      epoch = entry.epoch
      epochBytes = Buffer.from(escaped(epoch))
    }
    let subject = subjects.get(entry.topic)
    if (subject === undefined) {
      if (subjects.size >= SUBJECTS_KEPT) subjects.clear()
      subject = Buffer.from(JSON.stringify(entry.topic))
      subjects.set(entry.topic, subject)
    }
    const time = isoTime(entry.time)
    const seq = entry.seq
    const digits = decimalDigits(seq)
    const padded = Math.max(digits, SEQUENCE_WIDTH)
    const json = isJsonDocument(entry.payload)
    const base64 = json ? '' : Buffer.from(entry.payload.buffer, entry.payload.byteOffset, entry.payload.byteLength).toString('base64')
    const size = idHead.length + epochBytes.length + 1 + digits + source.length + time.length +
      SUBJECT.length + subject.length + SEQUENCE.length + padded + EPOCH.length + epochBytes.length +
      (json ? JSON_DATA.length + entry.payload.length : BASE64_DATA.length + base64.length + 1) + 1
    const out = Buffer.allocUnsafe(size)
    let o = put(out, 0, idHead)
    o = put(out, o, epochBytes)
    out[o++] = DASH
    o = writeDecimal(out, o, seq, digits)
    o = put(out, o, source)
    o = writeAscii(out, o, time)
    o = put(out, o, SUBJECT)
    o = put(out, o, subject)
    o = put(out, o, SEQUENCE)
    o = writeDecimal(out, o, seq, padded)
    o = put(out, o, EPOCH)
    o = put(out, o, epochBytes)
    if (json) {
      o = put(out, o, JSON_DATA)
      o = put(out, o, entry.payload)
    } else {
      o = put(out, o, BASE64_DATA)
      o = writeAscii(out, o, base64)
      out[o++] = QUOTE
    }
    out[o] = CLOSE
    return { topic: topicOf(entry.topic), payload: out, properties: STRUCTURED }
  }
}

/** topics whose escaped text is kept; a gateway's sensors publish on fewer, and past it the cache starts over */
const SUBJECTS_KEPT = 4096
const SUBJECT = Buffer.from('","subject":')
const SEQUENCE = Buffer.from(',"sequence":"')
const EPOCH = Buffer.from('","sluiceepoch":"')
const JSON_DATA = Buffer.from('","datacontenttype":"application/json","data":')
const BASE64_DATA = Buffer.from('","datacontenttype":"application/octet-stream","data_base64":"')
const DASH = 0x2d
const QUOTE = 0x22
const CLOSE = 0x7d
const ZERO = 0x30
/** the CloudEvents sequence extension compares as strings: zero-padded to 20 digits (2^64 fits) */
const SEQUENCE_WIDTH = 20

function put (out: Buffer, offset: number, bytes: Uint8Array): number {
  out.set(bytes, offset)
  return offset + bytes.length
}

/** Text known to be ASCII (an ISO time, base64), one byte per character. */
function writeAscii (out: Buffer, offset: number, text: string): number {
  for (let i = 0; i < text.length; i++) out[offset + i] = text.charCodeAt(i)
  return offset + text.length
}

/** The digits of `String(n)` (n a sequence number: an integer >= 0 below 2^53). */
function decimalDigits (n: number): number {
  let digits = 1
  for (let rest = Math.floor(n / 10); rest > 0; rest = Math.floor(rest / 10)) digits++
  return digits
}

/** Writes n in `length` digits, zero-padded: `length` is at least decimalDigits(n). */
function writeDecimal (out: Buffer, offset: number, n: number, length: number): number {
  const end = offset + length
  let rest = n
  for (let i = end - 1; i >= offset; i--) {
    out[i] = ZERO + rest % 10
    rest = Math.floor(rest / 10)
  }
  return end
}

/** A string as it stands between the quotes of a JSON string. */
function escaped (text: string): string {
  return JSON.stringify(text).slice(1, -1)
}

/**
 * sluice's own events (epoch, gap) as JSON CloudEvents on the events topic: the same in every
 * format, so a receiver handles them one way whatever carries its readings.
 */
export function structuredEvent (entry: SluiceEvent, templates: TopicTemplates): UpstreamMessage {
  const { gateway } = templates
  const common = {
    specversion: '1.0',
    source: `sluice://${gateway}`,
    time: isoTime(entry.time),
    sluiceepoch: entry.epoch,
    datacontenttype: 'application/json'
  }
  switch (entry.kind) {
    case 'epoch': {
      const event = { ...common, id: `${gateway}-${entry.epoch}-epoch`, type: 'io.sluice.epoch', data: entry.data }
      return { topic: eventTopic(templates, 'epoch'), payload: Buffer.from(JSON.stringify(event)), properties: STRUCTURED }
    }
    case 'gap': {
      const event = { ...common, id: `${gateway}-${entry.epoch}-gap-${entry.data.from}`, type: 'io.sluice.gap', data: entry.data }
      return { topic: eventTopic(templates, 'gap'), payload: Buffer.from(JSON.stringify(event)), properties: STRUCTURED }
    }
  }
}

/** A sequence number as the CloudEvents sequence extension carries it (SEQUENCE_WIDTH). */
export function sequence (seq: number): string {
  return String(seq).padStart(SEQUENCE_WIDTH, '0')
}
