import type { Logger, LevelWithSilent } from 'pino'
import { ConfigError, formatListen, loadConfig, type SluiceConfig } from '../config/index.js'

/** What a running gateway can change without a restart. */
export interface LiveTarget {
  setHealth: (health: SluiceConfig['health']) => Promise<void>
  setAdmin: (admin: SluiceConfig['admin']) => Promise<void>
  /** the embedded broker's users, ACLs and password file */
  setBrokerUsers: (broker: SluiceConfig['ingest']['broker']) => Promise<void>
  /** where the admin endpoint listens; null when it does not */
  adminAddress: () => { host: string, port: number } | null
  /** reads the broker's TLS files again and serves them: what changed, or null (nothing, or no TLS listener) */
  reloadBrokerTls: (tls: SluiceConfig['ingest']['broker']['tls']) => Promise<string | null>
}

type LiveAction = (c: SluiceConfig, target: LiveTarget) => Promise<void>
const health: LiveAction = async (c, target) => { await target.setHealth(c.health) }
const admin: LiveAction = async (c, target) => { await target.setAdmin(c.admin) }
const brokerUsers: LiveAction = async (c, target) => { await target.setBrokerUsers(c.ingest.broker) }
const brokerTls: LiveAction = async (c, target) => { await target.reloadBrokerTls(c.ingest.broker.tls) }
const BROKER_TLS_FILES = ['ingest.broker.tls.cert', 'ingest.broker.tls.key', 'ingest.broker.tls.ca']

/**
 * The keys SIGHUP applies live, and how. Everything else (the buffer, the upstream connection,
 * the sensors' listener, gateway.id) is named in the reload's log line as needing a restart:
 * changing those under a running data path would drop connections or reinterpret the buffer.
 */
const LIVE: Record<string, LiveAction> = {
  // Set after the reload's line is logged (see reloadOnce), so that line obeys the old level.
  'log.level': async () => {},
  // Keys that share an action run it once per reload.
  'health.enabled': health,
  'health.interval': health,
  'admin.enabled': admin,
  'admin.listen': admin,
  // Users and ACLs: connected sensors stay connected (see Gateway.setBrokerUsers).
  'ingest.broker.users': brokerUsers,
  'ingest.broker.passwordFile': brokerUsers,
  'ingest.broker.allowAnonymous': brokerUsers,
  'ingest.broker.anonymous.publish': brokerUsers,
  'ingest.broker.anonymous.subscribe': brokerUsers,
  ...Object.fromEntries(BROKER_TLS_FILES.map((key) => [key, brokerTls]))
}

/** Keys whose values never go into a log line, not even in a diff. */
const SECRET = /password/i

export interface ReloadOutcome {
  /** every key whose value differs from the running config */
  changed: string[]
  /** keys now in effect, with `from -> to` */
  applied: string[]
  /** keys that take effect only after a restart */
  needsRestart: string[]
  /** live keys that could not be applied (e.g. an admin port in use), with why */
  failed: string[]
}

export interface ReloaderOptions {
  configPath: string
  env: NodeJS.ProcessEnv
  /** the process's root logger: its level is log.level */
  logger: Logger
  target: LiveTarget
  /** the config the daemon started with */
  initial: SluiceConfig
}

/**
 * SIGHUP: re-reads the config file and applies what can change live, logging in one line what
 * changed, what applied and what needs a restart. An invalid file changes nothing (and says so).
 * Reloads run one at a time; a signal during a reload is handled after it.
 */
export class Reloader {
  private readonly options: ReloaderOptions
  /** what is in effect: the start config with every live change applied */
  private running: SluiceConfig
  private queue: Promise<unknown> = Promise.resolve()

  constructor (options: ReloaderOptions) {
    this.options = options
    this.running = options.initial
  }

  /** Reloads after any reload in progress; never rejects (failures are logged). */
  async reload (): Promise<ReloadOutcome | null> {
    const next = this.queue.then(async () => await this.reloadOnce())
    this.queue = next.catch(() => {})
    return await next
  }

  private async reloadOnce (): Promise<ReloadOutcome | null> {
    const { configPath, env, logger, target } = this.options
    let next: SluiceConfig
    try {
      next = await loadConfig(configPath, env)
    } catch (err) {
      const errors = err instanceof ConfigError
        ? err.errors.map((e) => SECRET.test(e.path) ? `${e.path}: invalid (value not shown)` : `${e.path}: ${e.message}`)
        : [(err as Error).message]
      logger.error({ code: 'SLUICE_CONFIG_INVALID', config: configPath, errors }, 'config reload failed: the file is invalid; nothing changed')
      return null
    }
    const running = this.running
    const changed = changedKeys(running, next)
    const outcome: ReloadOutcome = { changed, applied: [], needsRestart: [], failed: [] }
    const done = new Set<LiveAction>()
    let effective = running
    for (const key of changed) {
      const apply = LIVE[key]
      if (apply === undefined) {
        outcome.needsRestart.push(key)
        continue
      }
      try {
        if (!done.has(apply)) await apply(next, target)
        done.add(apply)
        outcome.applied.push(`${key} ${show(key, valueAt(running, key))} -> ${show(key, valueAt(next, key))}`)
        effective = withValue(effective, key, valueAt(next, key))
      } catch (err) {
        outcome.failed.push(`${key}: ${errorText(err)}`)
      }
    }
    // An admin endpoint that could not listen (port taken at start) is retried on every SIGHUP.
    const adminKeys = ['admin.enabled', 'admin.listen']
    if (next.admin.enabled && target.adminAddress() === null && !changed.some((k) => adminKeys.includes(k))) {
      try {
        await target.setAdmin(next.admin)
        outcome.applied.push(`admin.listen ${formatListen(next.admin.listen)} (listening now)`)
      } catch (err) {
        outcome.failed.push(`admin.listen: ${(err as Error).message}`)
      }
    }
    // The password file's lines can change while its path does not: it is re-read on every SIGHUP.
    if (next.ingest.broker.passwordFile !== undefined && !done.has(brokerUsers)) {
      try {
        await brokerUsers(next, target)
        outcome.applied.push(`ingest.broker.passwordFile ${next.ingest.broker.passwordFile} (re-read)`)
      } catch (err) {
        outcome.failed.push(`ingest.broker.passwordFile: ${errorText(err)}`)
      }
    }
    // The broker's TLS files are read again on every SIGHUP, whether their paths changed or not:
    // a renewed certificate usually keeps its path (certbot, step-ca and cert-manager renew in place).
    if (!changed.some((k) => BROKER_TLS_FILES.includes(k))) {
      try {
        const what = await target.reloadBrokerTls(next.ingest.broker.tls)
        if (what !== null) outcome.applied.push(what)
      } catch (err) {
        outcome.failed.push(`ingest.broker.tls: ${(err as Error).message}`)
      }
    }
    this.running = effective
    // What did not apply is worth a warning: the operator expected it to.
    const level = outcome.needsRestart.length > 0 || outcome.failed.length > 0 ? 'warn' : 'info'
    logger[level](outcome, oneLine(outcome))
    if (changed.includes('log.level')) logger.level = next.log.level as LevelWithSilent
    return outcome
  }
}

/** A ConfigError (a bad password file) says what is wrong in its issues, not its message. */
function errorText (err: unknown): string {
  return err instanceof ConfigError ? err.errors.map((e) => e.message).join('; ') : (err as Error).message
}

function oneLine (o: ReloadOutcome): string {
  if (o.changed.length === 0 && o.applied.length === 0 && o.failed.length === 0) return 'config reloaded: nothing changed'
  const parts: string[] = []
  if (o.applied.length > 0) parts.push(`applied ${o.applied.join(', ')}`)
  if (o.failed.length > 0) parts.push(`could not apply ${o.failed.join(', ')}`)
  if (o.needsRestart.length > 0) parts.push(`needs a restart to apply: ${o.needsRestart.join(', ')}`)
  return `config reloaded: ${parts.join('; ')}`
}

/**
 * Dotted paths of the leaves that differ. Lists and listen addresses are leaves (a changed list
 * is one change); objects are walked.
 */
export function changedKeys (a: unknown, b: unknown, path = ''): string[] {
  if (isWalkable(a) && isWalkable(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])]
    return keys.flatMap((k) => changedKeys(a[k], b[k], path === '' ? k : `${path}.${k}`))
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [path]
}

function isWalkable (v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false
  const keys = Object.keys(v)
  return !(keys.length === 2 && keys.includes('host') && keys.includes('port'))
}

function valueAt (config: unknown, path: string): unknown {
  return path.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], config)
}

/** A copy of `config` with one path set (the config itself is frozen). */
function withValue (config: SluiceConfig, path: string, value: unknown): SluiceConfig {
  const copy = structuredClone(config) as unknown as Record<string, unknown>
  const keys = path.split('.')
  let node = copy
  for (const k of keys.slice(0, -1)) node = node[k] as Record<string, unknown>
  node[keys[keys.length - 1]] = value
  return copy as unknown as SluiceConfig
}

function show (key: string, value: unknown): string {
  if (SECRET.test(key)) return '[redacted]'
  if (value === undefined) return '(unset)'
  // Users by name only: their password hashes stay out of the log.
  if (key.endsWith('.users') && Array.isArray(value)) return `[${value.map((u) => String((u as { username?: unknown }).username)).join(', ')}]`
  if (typeof value === 'object' && value !== null && 'host' in value && 'port' in value) {
    return formatListen(value as { host: string, port: number })
  }
  if (/interval$|Interval$/i.test(key) && typeof value === 'number') return value % 1000 === 0 ? `${value / 1000}s` : `${value}ms`
  return typeof value === 'string' ? value : JSON.stringify(value)
}
