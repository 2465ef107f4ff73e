// Reading a config: YAML text -> validated, defaulted, secrets resolved, frozen. Every problem is
// reported at once as a ConfigError; nothing here logs or exits, the daemon decides that.
import { readFile } from 'node:fs/promises'
import { LineCounter, parseDocument } from 'yaml'
import { ConfigError, type ConfigIssue, ROOT_PATH } from './errors.js'
import { errorMessage, toConfigIssues } from './issues.js'
import { configSchema, type SluiceConfig } from './schema.js'

/** The environment variable the upstream password is taken from when the file names none. */
export const PASSWORD_ENV = 'SLUICE_UPSTREAM_PASSWORD'

const REDACTED = '[redacted]'

/** Reads, validates and resolves a config file. Throws a ConfigError listing every problem. */
export async function loadConfig (file: string, env: NodeJS.ProcessEnv = process.env): Promise<SluiceConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError([{ path: ROOT_PATH, message: `cannot read the config file: ${(err as Error).message}` }], { file, cause: err })
  }
  try {
    return await parseConfig(parseYaml(text), env)
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(err.errors, { file, cause: err.cause })
    throw err
  }
}

/** Validates an in-memory config (what the YAML file would hold) and resolves its secrets. */
export async function parseConfig (raw: unknown, env: NodeJS.ProcessEnv = process.env): Promise<SluiceConfig> {
  return await resolveSecrets(validateConfig(raw), env)
}

/**
 * Validates and applies the defaults, without reading any file: the upstream password is not
 * resolved yet (see resolveSecrets). Returns a deep-frozen config; throws a ConfigError.
 */
export function validateConfig (raw: unknown): SluiceConfig {
  const result = configSchema.safeParse(raw, { error: errorMessage })
  if (!result.success) throw new ConfigError(toConfigIssues(result.error, configSchema), { cause: result.error })
  return deepFreeze(result.data)
}

/**
 * Resolves the upstream password: `password` in the file, else the contents of `passwordFile`
 * (one trailing newline dropped, as `echo secret > file` writes one), else the environment
 * variable SLUICE_UPSTREAM_PASSWORD. Returns a new deep-frozen config.
 */
export async function resolveSecrets (config: SluiceConfig, env: NodeJS.ProcessEnv = process.env): Promise<SluiceConfig> {
  const { upstream } = config
  let password = upstream.password
  if (password === undefined && upstream.passwordFile !== undefined) {
    password = await readPasswordFile(upstream.passwordFile)
  }
  if (password === undefined) {
    const fromEnv = env[PASSWORD_ENV]
    if (fromEnv !== undefined && fromEnv !== '') password = fromEnv
  }
  if (password === upstream.password) return deepFreeze(structuredClone(config))
  return deepFreeze(structuredClone({ ...config, upstream: { ...upstream, password } }))
}

/**
 * Reads a secret from a file (one trailing newline trimmed). An unreadable or empty file is a
 * config error at `keyPath`.
 */
export async function readPasswordFile (file: string, keyPath = 'upstream.passwordFile'): Promise<string> {
  const fail = (message: string, cause?: unknown): ConfigError =>
    new ConfigError([{ path: keyPath, message }], { cause })
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw fail(`cannot read the password file: ${(err as Error).message}`, err)
  }
  const password = text.replace(/\r?\n$/, '')
  if (password === '') throw fail(`the password file ${JSON.stringify(file)} is empty`)
  return password
}

/** A copy that is safe to print or log: passwords and password hashes replaced by "[redacted]". */
export function redactConfig (config: SluiceConfig): SluiceConfig {
  const copy = structuredClone(config)
  if (copy.upstream.password !== undefined) copy.upstream.password = REDACTED
  for (const subscription of copy.ingest.subscribe) {
    if (subscription.password !== undefined) subscription.password = REDACTED
  }
  for (const user of copy.ingest.broker.users) {
    if (user.passwordHash !== undefined) user.passwordHash = REDACTED
  }
  return deepFreeze(copy)
}

/** YAML text -> plain data. Syntax errors become config errors with their line and column. */
export function parseYaml (text: string): unknown {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false })
  if (doc.errors.length > 0) {
    const lines = text.split('\n')
    throw new ConfigError(doc.errors.map((error): ConfigIssue => {
      const { line, col } = lineCounter.linePos(error.pos[0])
      return { path: ROOT_PATH, message: `YAML syntax error at line ${line}, column ${col}: ${yamlMessage(error.code, error.message, lines[line - 1] ?? '')}` }
    }))
  }
  if (doc.contents === null) {
    throw new ConfigError([{ path: ROOT_PATH, message: 'the config is empty; it needs at least gateway.id and upstream.url' }])
  }
  try {
    return doc.toJS()
  } catch (err) {
    // e.g. an alias expanding past yaml's maxAliasCount (a "billion laughs" document)
    throw new ConfigError([{ path: ROOT_PATH, message: `YAML error: ${(err as Error).message}` }], { cause: err })
  }
}

function yamlMessage (code: string, message: string, line: string): string {
  if (code === 'MULTIPLE_DOCS') return 'the file holds more than one YAML document'
  // `listen: [::1]:1883` reads as a YAML list: the most likely way to get here with an address
  if (/\[[0-9A-Fa-f:.]*\]:\d/.test(line)) return `${message} (quote an IPv6 address: "[::1]:1883")`
  return message
}

function deepFreeze<T> (value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}
