// The value types of the config file (sizes, durations, listen addresses, MQTT topics and URLs):
// each a zod schema whose input form is what a person writes in YAML and whose output is what the
// daemon uses (bytes, milliseconds, { host, port }).
import { BlockList, isIP, isIPv4, isIPv6 } from 'node:net'
import { z } from 'zod'

/** How a value the user wrote is shown in a message: strings quoted, containers named. */
export function show (value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'an empty value'
  if (typeof value === 'string') {
    const text = value.length > 60 ? `${value.slice(0, 57)}...` : value
    return JSON.stringify(text)
  }
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a mapping'
  return String(value)
}

type Issue = { readonly input?: unknown }

// No check here aborts (`abort: true`, or `z.int()` outside a union, whose issue for 1.5 aborts):
// zod would then skip the cross-field rules and "not supported yet" checks of every enclosing
// section, and every error is to be reported at once. (A union reports a failure of its own.)

/** An integer from `min` to `max` (not `z.int()`, see above). */
export function integer (min: number, max = Number.MAX_SAFE_INTEGER) {
  return z
    .number()
    .refine(Number.isInteger, { error: (iss: Issue) => `expected an integer, got ${show(iss.input)}` })
    .min(min)
    .max(max)
    .meta({ type: 'integer' })
}

// ---------------------------------------------------------------- sizes

/** Binary units only: "MB" is ambiguous (10^6 or 2^20), so it is refused rather than guessed. */
const SIZE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 } as const
const SIZE_RE = /^(\d+(?:\.\d+)?) ?(B|KiB|MiB|GiB|TiB)?$/

function sizeMessage (input: unknown): string {
  const hint = typeof input === 'string' && /^\d+(\.\d+)? ?[A-Za-z]+$/.test(input) ? ' (units: B, KiB, MiB, GiB, TiB)' : ''
  return `expected a size like "512MiB", got ${show(input)}${hint}`
}

/** "512MiB" -> 536870912; a string without a unit is bytes. Undefined if it is not a size. */
export function parseSize (text: string): number | undefined {
  const m = SIZE_RE.exec(text)
  if (m === null) return undefined
  const unit = (m[2] ?? 'B') as keyof typeof SIZE_UNITS
  const bytes = Math.round(Number(m[1]) * SIZE_UNITS[unit])
  return Number.isSafeInteger(bytes) ? bytes : undefined
}

/** A size in bytes: a non-negative integer, or a string like "64KiB" / "512MiB" / "1GiB". */
export function size () {
  const error = (iss: Issue) => sizeMessage(iss.input)
  return z
    .union([
      z.int({ error }).min(0, { error }),
      z.string({ error }).regex(SIZE_RE, { error })
    ], { error })
    .meta({ examples: ['64KiB', '512MiB', '1GiB'] })
    .transform((value, ctx) => {
      if (typeof value === 'number') return value
      const bytes = parseSize(value)
      if (bytes === undefined) {
        ctx.issues.push({ code: 'custom', input: value, message: `${show(value)} is too large a size` })
        return z.NEVER
      }
      return bytes
    })
}

// ---------------------------------------------------------------- durations

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
const DURATION_RE = /^(\d+(?:\.\d+)?) ?(ms|s|m|h|d)?$/

function durationMessage (input: unknown): string {
  const hint = typeof input === 'string' && /^\d+(\.\d+)? ?[A-Za-z]+$/.test(input) ? ' (units: ms, s, m, h, d)' : ''
  return `expected a duration like "1s" or "500ms", got ${show(input)}${hint}`
}

/** "1.5s" -> 1500; a string without a unit is milliseconds. Undefined if it is not a duration. */
export function parseDuration (text: string): number | undefined {
  const m = DURATION_RE.exec(text)
  if (m === null) return undefined
  const unit = (m[2] ?? 'ms') as keyof typeof DURATION_UNITS
  const ms = Math.round(Number(m[1]) * DURATION_UNITS[unit])
  return Number.isSafeInteger(ms) ? ms : undefined
}

/** A duration in milliseconds: a non-negative integer (ms), or a string like "20ms" / "1s" / "7d". */
export function duration () {
  const error = (iss: Issue) => durationMessage(iss.input)
  return z
    .union([
      z.int({ error }).min(0, { error }),
      z.string({ error }).regex(DURATION_RE, { error })
    ], { error })
    .meta({ examples: ['20ms', '1s', '60s', '7d'] })
    .transform((value, ctx) => {
      if (typeof value === 'number') return value
      const ms = parseDuration(value)
      if (ms === undefined) {
        ctx.issues.push({ code: 'custom', input: value, message: `${show(value)} is too long a duration` })
        return z.NEVER
      }
      return ms
    })
}

/** A duration that must be more than zero (an interval of 0 would spin). */
export function positiveDuration () {
  return duration().refine((ms) => ms > 0, { error: 'must be more than 0' })
}

// ---------------------------------------------------------------- listen addresses

export interface ListenAddress {
  /** Host name or IP address, IPv6 without brackets (`::1`). */
  readonly host: string
  /** TCP port; 0 lets the OS pick a free one (tests). */
  readonly port: number
}

const LISTEN_RE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/
const HOSTNAME_RE = /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/

function listenMessage (input: unknown): string {
  let hint = ''
  if (typeof input === 'string') {
    if (!input.startsWith('[') && input.split(':').length > 2) hint = ' (an IPv6 address goes in brackets)'
    else if (input.startsWith(':')) hint = ' (to listen on every interface, write "0.0.0.0:PORT")'
  } else if (typeof input === 'number') {
    hint = ' (a port alone is not enough: write the address to listen on too)'
  }
  return `expected host:port like "127.0.0.1:1883" or "[::1]:1883", got ${show(input)}${hint}`
}

/** `127.0.0.1:1883` / `[::1]:1883` / `localhost:0`; a message saying what is wrong otherwise. */
export function parseListen (text: string): ListenAddress | string {
  const m = LISTEN_RE.exec(text)
  if (m === null) return listenMessage(text)
  const rawHost = m[1]
  const port = Number(m[2])
  if (port > 65535) return `port must be from 0 to 65535, got ${port}`
  if (rawHost.startsWith('[')) {
    const host = rawHost.slice(1, -1)
    return isIPv6(host) ? { host, port } : `${JSON.stringify(rawHost)} is not an IPv6 address`
  }
  if (/^[\d.]+$/.test(rawHost)) {
    return isIPv4(rawHost) ? { host: rawHost, port } : `${JSON.stringify(rawHost)} is not an IPv4 address`
  }
  return HOSTNAME_RE.test(rawHost) ? { host: rawHost, port } : `${JSON.stringify(rawHost)} is not a host name`
}

/** A listen address `host:port`, parsed to `{ host, port }`. */
export function listen () {
  const error = (iss: Issue) => listenMessage(iss.input)
  return z
    .string({ error })
    .regex(LISTEN_RE, { error })
    .transform((text, ctx) => {
      const parsed = parseListen(text)
      if (typeof parsed === 'string') {
        ctx.issues.push({ code: 'custom', input: text, message: parsed })
        return z.NEVER
      }
      return parsed
    })
}

/** `{ host: '::1', port: 1883 }` -> `[::1]:1883`, for logs and printed configs. */
export function formatListen (address: ListenAddress): string {
  return isIPv6(address.host) ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`
}

const loopback = new BlockList()
loopback.addSubnet('127.0.0.0', 8, 'ipv4')
loopback.addAddress('::1', 'ipv6')
loopback.addSubnet('::ffff:127.0.0.0', 104, 'ipv6')

/** 127.0.0.0/8, ::1 or localhost: reachable from this machine only. */
export function isLoopback (host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true
  const family = isIP(host)
  if (family === 4) return loopback.check(host, 'ipv4')
  if (family === 6) return loopback.check(host, 'ipv6')
  return false
}

export function isListenAddress (value: unknown): value is ListenAddress {
  return typeof value === 'object' && value !== null
    && typeof (value as ListenAddress).host === 'string' && typeof (value as ListenAddress).port === 'number'
}

// ---------------------------------------------------------------- MQTT topics

/** What is wrong with an MQTT topic filter, or undefined if it is a valid one. */
export function topicFilterProblem (filter: string): string | undefined {
  if (filter === '') return 'a topic filter must not be empty' // [MQTT-4.7.3-1]
  if (filter.includes('\u0000')) return 'a topic filter must not contain U+0000' // [MQTT-4.7.3-2]
  if (Buffer.byteLength(filter, 'utf8') > 65535) return 'a topic filter must be at most 65535 bytes' // [MQTT-4.7.3-3]
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return '"#" must be a whole level and the last one' // [MQTT-4.7.1-2]
    }
    if (level.includes('+') && level !== '+') return '"+" must be a whole level' // [MQTT-4.7.1-3]
  }
  return undefined
}

/** An MQTT topic filter (`sensors/+/temperature`, `#`). */
export function topicFilter () {
  return z.string().superRefine((filter, ctx) => {
    const problem = topicFilterProblem(filter)
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `${problem}, got ${show(filter)}` })
  })
}

/**
 * A topic template: literal MQTT topic levels with `{name}` placeholders. It names the topic a
 * message is published to, so it may not hold wildcards; `required` keeps messages apart.
 */
export function topicTemplate (required: string, allowed: readonly string[]) {
  return z.string().superRefine((template, ctx) => {
    const problems: string[] = []
    const names = [...template.matchAll(/\{([^{}]*)\}/g)].map((m) => m[1])
    const unknown = names.filter((n) => !allowed.includes(n))
    if (unknown.length > 0) {
      problems.push(`unknown placeholder ${unknown.map((n) => `{${n}}`).join(', ')} (allowed: ${allowed.map((n) => `{${n}}`).join(', ')})`)
    }
    if (!names.includes(required)) problems.push(`must contain {${required}}`)
    const literal = template.replace(/\{[^{}]*\}/g, '')
    if (/[+#]/.test(literal)) problems.push('must not contain the wildcards "+" or "#" (it names the topic to publish to)')
    if (literal.includes('\u0000')) problems.push('must not contain U+0000')
    for (const message of problems) ctx.addIssue({ code: 'custom', message: `${message}, got ${show(template)}` })
  })
}

// ---------------------------------------------------------------- MQTT URLs

const MQTT_PROTOCOLS = ['mqtt:', 'mqtts:', 'tcp:', 'ssl:']

/** What is wrong with an upstream broker URL, or undefined if it is a usable one. */
export function mqttUrlProblem (text: string): string | undefined {
  const expected = `expected an MQTT URL like "mqtts://broker.example.com:8883" (mqtt, mqtts, tcp or ssl), got ${show(text)}`
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return expected
  }
  if (!MQTT_PROTOCOLS.includes(url.protocol) || url.hostname === '') return expected
  // One place for secrets: a password in the URL would be printed by `sluice check` and logged.
  if (url.username !== '' || url.password !== '') {
    return 'credentials do not go in the URL: use upstream.username and upstream.passwordFile'
  }
  return undefined
}

/** An MQTT broker URL: mqtt://, mqtts://, tcp:// or ssl://, with a host. Kept as written. */
export function mqttUrl () {
  return z.string().superRefine((text, ctx) => {
    const problem = mqttUrlProblem(text)
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem })
  })
}
