// zod issues -> the config errors a person reads: one per problem, each with its key path, in the
// words of the config file (a "mapping", a "list", "unknown key"), never zod's internals.
import type { z } from 'zod'
import { type ConfigIssue, formatPath } from './errors.js'
import { show } from './values.js'

const NOUNS: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list'
}

/** The message of a zod issue that the schema did not word itself. Passed to every parse. */
export function errorMessage (iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case 'invalid_type':
      if (iss.input === undefined || iss.expected === 'nonoptional') return 'required'
      return `expected ${NOUNS[iss.expected] ?? iss.expected}, got ${show(iss.input)}`
    case 'invalid_value': {
      const values = iss.values.map((v) => JSON.stringify(v))
      return `expected ${values.length === 1 ? values[0] : `one of ${values.join(', ')}`}, got ${show(iss.input)}`
    }
    case 'too_small':
      return `${bound(iss.origin, 'at least', 'more than', iss.minimum, iss.inclusive)}, got ${measure(iss.origin, iss.input)}`
    case 'too_big':
      return `${bound(iss.origin, 'at most', 'less than', iss.maximum, iss.inclusive)}, got ${measure(iss.origin, iss.input)}`
    case 'invalid_union':
      return `got ${show(iss.input)}, which is none of the accepted forms`
    case 'unrecognized_keys':
      return 'unknown key'
    default:
      return undefined
  }
}

function bound (origin: string, inclusiveWord: string, exclusiveWord: string, limit: number | bigint, inclusive = true): string {
  const word = inclusive ? inclusiveWord : exclusiveWord
  switch (origin) {
    case 'string':
      return `expected ${word} ${limit} character${limit === 1 ? '' : 's'}`
    case 'array':
    case 'set':
      return `expected ${word} ${limit} item${limit === 1 ? '' : 's'}`
    default:
      return `expected ${word} ${limit}`
  }
}

function measure (origin: string, input: unknown): string {
  if (origin === 'string' && typeof input === 'string') return input === '' ? 'an empty string' : show(input)
  if ((origin === 'array' || origin === 'set') && Array.isArray(input)) {
    return input.length === 0 ? 'an empty list' : `${input.length} item${input.length === 1 ? '' : 's'}`
  }
  return show(input)
}

/** Every issue of a failed parse, one entry per problem (an unknown key is one entry per key). */
export function toConfigIssues (error: z.ZodError, schema: z.ZodType): ConfigIssue[] {
  const out: ConfigIssue[] = []
  const seen = new Set<string>()
  const add = (path: readonly PropertyKey[], message: string): void => {
    const entry = { path: formatPath(path), message }
    const id = `${entry.path}\u0000${entry.message}`
    if (seen.has(id)) return
    seen.add(id)
    out.push(entry)
  }
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(schema, issue.path)
      for (const key of issue.keys) {
        const guess = closest(key, known)
        add([...issue.path, key], guess === undefined ? 'unknown key' : `unknown key (did you mean "${guess}"?)`)
      }
    } else {
      add(issue.path, issue.message)
    }
  }
  return out
}

interface WalkDef {
  type: string
  innerType?: z.core.$ZodType
  in?: z.core.$ZodType
  element?: z.core.$ZodType
  shape?: Record<string, z.core.$ZodType>
}

/** The keys the schema knows for the object at `path`, to suggest the one a typo meant. */
function knownKeys (schema: z.core.$ZodType, path: readonly PropertyKey[]): string[] {
  let node: z.core.$ZodType | undefined = schema
  let i = 0
  while (node !== undefined) {
    const def = node._zod.def as unknown as WalkDef
    if (def.innerType !== undefined) {
      node = def.innerType // optional, default, prefault, nullable, readonly
    } else if (def.type === 'pipe') {
      node = def.in
    } else if (def.type === 'array' && typeof path[i] === 'number') {
      node = def.element
      i++
    } else if (def.type === 'object' && def.shape !== undefined) {
      if (i === path.length) return Object.keys(def.shape)
      node = def.shape[String(path[i])]
      i++
    } else {
      return []
    }
  }
  return []
}

function closest (key: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of known) {
    const d = candidate.toLowerCase() === key.toLowerCase() ? 0 : distance(key, candidate)
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  // Two edits catch the usual typos ("sizee", "syncInteval") without suggesting unrelated keys.
  return bestDistance <= Math.min(2, Math.floor(key.length / 3)) ? best : undefined
}

/** Levenshtein distance. */
function distance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = row
  }
  return prev[b.length]
}
