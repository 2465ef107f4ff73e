/**
 * Access control lists of the embedded broker: which topics a client may publish to and which
 * topic filters it may subscribe to.
 *
 * A list is a sequence of rules, each an allow or a deny of one topic pattern; the first rule that
 * applies decides, and a topic no rule applies to is refused. Patterns are MQTT topic filters
 * ("+" one level, "#" the rest) with two placeholders: `{username}` and `{clientid}`, so one rule
 * serves a fleet ("sensors/{username}/#").
 *
 * The cost is paid at config time and once per connection, never per publish: a rule is split
 * into levels when the config is read, its placeholders are filled in once per client (and again
 * after a reload), and a publish then compares its topic's levels with each rule's, with no
 * regular expression and no string built.
 */

/** A rule as written in the config: a bare pattern allows, `{ deny }` refuses. */
export type AclRuleInput = string | { readonly allow: string } | { readonly deny: string }

export interface AclInput {
  /** omitted: everything */
  readonly publish?: readonly AclRuleInput[]
  /** omitted: everything */
  readonly subscribe?: readonly AclRuleInput[]
}

export const PLACEHOLDERS = ['username', 'clientid'] as const
type Placeholder = typeof PLACEHOLDERS[number]

/** One level of a compiled pattern: literal text, or text with placeholders to fill in. */
type LevelTemplate = string | ReadonlyArray<string | { readonly name: Placeholder }>

interface CompiledRule {
  readonly allow: boolean
  readonly levels: readonly LevelTemplate[]
  readonly hasPlaceholders: boolean
}

/** A list compiled at config time; null means everything is allowed. */
export type CompiledList = readonly CompiledRule[] | null

export interface CompiledAcl {
  readonly publish: CompiledList
  readonly subscribe: CompiledList
}

/** A rule with its placeholders filled in for one client. `levels` null: it can never match. */
interface ResolvedRule {
  readonly allow: boolean
  readonly levels: readonly string[] | null
}

/** One client's lists; null means everything is allowed. */
export interface ClientAcl {
  readonly publish: readonly ResolvedRule[] | null
  readonly subscribe: readonly ResolvedRule[] | null
}

export const ALLOW_ALL: CompiledAcl = Object.freeze({ publish: null, subscribe: null })
export const DENY_ALL: ClientAcl = Object.freeze({ publish: [], subscribe: [] })

/** The pattern of a rule and whether it allows, whichever way it was written. */
export function ruleParts (rule: AclRuleInput): { allow: boolean, pattern: string } {
  if (typeof rule === 'string') return { allow: true, pattern: rule }
  if ('deny' in rule) return { allow: false, pattern: rule.deny }
  return { allow: true, pattern: rule.allow }
}

/** Placeholder names in a pattern that are not `{username}` or `{clientid}` (config validation). */
export function unknownPlaceholders (pattern: string): string[] {
  return [...pattern.matchAll(/\{([^{}]*)\}/g)].map((m) => m[1]).filter((name) => !(PLACEHOLDERS as readonly string[]).includes(name))
}

export function compileAcl (input: AclInput): CompiledAcl {
  return { publish: compileList(input.publish), subscribe: compileList(input.subscribe) }
}

function compileList (rules: readonly AclRuleInput[] | undefined): CompiledList {
  if (rules === undefined) return null
  return rules.map((rule) => {
    const { allow, pattern } = ruleParts(rule)
    let hasPlaceholders = false
    const levels = pattern.split('/').map((level): LevelTemplate => {
      const parts = level.split(/(\{(?:username|clientid)\})/).filter((p) => p !== '')
      if (parts.length === 1 && !/^\{(username|clientid)\}$/.test(parts[0])) return parts[0]
      if (parts.length === 0) return ''
      hasPlaceholders = true
      return parts.map((p) => {
        const m = /^\{(username|clientid)\}$/.exec(p)
        return m === null ? p : { name: m[1] as Placeholder }
      })
    })
    return { allow, levels, hasPlaceholders }
  })
}

/**
 * Fills in the placeholders for one client. A user name or client id holding "/", "+" or "#"
 * would widen a pattern ("sensors/{username}/#" for user "#"): such a rule matches nothing when
 * it allows, and everything when it denies, so it can only ever refuse more.
 */
export function resolveAcl (acl: CompiledAcl, values: { username: string | null, clientid: string }): ClientAcl {
  return { publish: resolveList(acl.publish, values), subscribe: resolveList(acl.subscribe, values) }
}

function resolveList (list: CompiledList, values: { username: string | null, clientid: string }): ResolvedRule[] | null {
  if (list === null) return null
  return list.map((rule) => {
    if (!rule.hasPlaceholders) return { allow: rule.allow, levels: rule.levels as string[] }
    const levels: string[] = []
    for (const level of rule.levels) {
      if (typeof level === 'string') {
        levels.push(level)
        continue
      }
      let text = ''
      for (const part of level) {
        if (typeof part === 'string') {
          text += part
          continue
        }
        const value = values[part.name]
        if (value === null || value === '' || /[/+#]/.test(value)) return rule.allow ? { allow: true, levels: null } : { allow: false, levels: ['#'] }
        text += value
      }
      levels.push(text)
    }
    return { allow: rule.allow, levels }
  })
}

/** Whether a client may publish to `topic` (a topic name: no wildcards). */
export function mayPublish (acl: ClientAcl, topic: string): boolean {
  const rules = acl.publish
  if (rules === null) return true
  const levels = topic.split('/')
  for (const rule of rules) {
    if (rule.levels !== null && topicMatches(rule.levels, levels)) return rule.allow
  }
  return false
}

/**
 * Whether a client may subscribe to `filter`. An allow rule applies when it covers every topic the
 * filter can match; a deny rule applies when the two share any topic (subscribing to "#" past a
 * deny of "secret/#" would receive the secrets).
 */
export function maySubscribe (acl: ClientAcl, filter: string): boolean {
  const rules = acl.subscribe
  if (rules === null) return true
  const levels = filter.split('/')
  for (const rule of rules) {
    if (rule.levels === null) continue
    if (rule.allow ? covers(rule.levels, levels) : overlaps(rule.levels, levels)) return rule.allow
  }
  return false
}

/** MQTT filter matching [MQTT-4.7.1]; wildcards in the first level never match "$" topics [MQTT-4.7.2-1]. */
function topicMatches (pattern: readonly string[], topic: readonly string[]): boolean {
  if ((pattern[0] === '#' || pattern[0] === '+') && topic[0].startsWith('$')) return false
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]
    if (p === '#') return true // also matches the parent level [MQTT-4.7.1-2]
    if (i >= topic.length) return false
    if (p !== '+' && p !== topic[i]) return false
  }
  return pattern.length === topic.length
}

/** Whether every topic `filter` matches is matched by `pattern`. */
function covers (pattern: readonly string[], filter: readonly string[]): boolean {
  if ((pattern[0] === '#' || pattern[0] === '+') && filter[0].startsWith('$')) return false
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]
    if (p === '#') return true
    if (i >= filter.length) return false
    const f = filter[i]
    if (f === '#') return false
    if (p === '+') continue
    if (f === '+' || f !== p) return false
  }
  return pattern.length === filter.length
}

/** Whether some topic is matched by both filters. */
function overlaps (a: readonly string[], b: readonly string[]): boolean {
  const n = Math.max(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a[i]
    const y = b[i]
    if (x === '#' || y === '#') return true
    if (x === undefined || y === undefined) return false
    if (x === '+' || y === '+') continue
    if (x !== y) return false
  }
  return true
}
