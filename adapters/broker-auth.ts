/**
 * Who may connect to the embedded broker, and with which ACL.
 *
 * A client that gives a user name must be a configured user with the right password (scrypt,
 * checked in constant time); one that gives none is anonymous, accepted on loopback always and
 * from other addresses only with `allowAnonymous: true`, like mosquitto 2.0. When no users are
 * configured at all, a user name is ignored and every client is anonymous (mosquitto without a
 * password file does the same).
 *
 * The policy can be replaced while clients are connected (SIGHUP): a client's ACL is looked up
 * again against the policy in force, so a removed user's next publish is refused.
 */
import { isIP } from 'node:net'
import { ALLOW_ALL, compileAcl, DENY_ALL, mayPublish, resolveAcl, type AclInput, type ClientAcl, type CompiledAcl } from './broker-acl.js'
import { verifyPassword } from './password-hash.js'

export interface BrokerUser extends AclInput {
  readonly username: string
  /** `scrypt$...` from `sluice hash-password`; undefined: the user can only connect with a certificate */
  readonly passwordHash?: string
}

export interface AccessPolicyInput {
  readonly users: readonly BrokerUser[]
  readonly allowAnonymous: boolean
  /** the ACL of clients without a user name */
  readonly anonymous: AclInput
}

/** What a CONNECT presents. */
export interface Credentials {
  readonly username: string | null
  readonly password: Buffer | null
  /**
   * The user name a verified client certificate stands for (its subject CN, like mosquitto's
   * `use_identity_as_username`), or null. When set, that user must exist; no password is needed.
   */
  readonly certifiedUsername: string | null
  /** the client's IP address as the socket reports it; undefined when not known */
  readonly remoteAddress: string | undefined
}

/** CONNACK return codes of a refusal (MQTT 3.1.1 section 3.2.2.3). */
export const BAD_USERNAME_OR_PASSWORD = 4
export const NOT_AUTHORIZED = 5

export type AuthOutcome =
  | { readonly ok: true, readonly username: string | null }
  | { readonly ok: false, readonly returnCode: typeof BAD_USERNAME_OR_PASSWORD | typeof NOT_AUTHORIZED, readonly why: string }

interface CompiledUser {
  readonly passwordHash: string | undefined
  readonly acl: CompiledAcl
}

interface Policy {
  readonly users: ReadonlyMap<string, CompiledUser>
  readonly allowAnonymous: boolean
  readonly anonymous: CompiledAcl
}

// An unknown user's password is checked against this (a hash of nothing anyone knows, at the
// default cost) so that a refusal takes as long for an unknown user as for a wrong password:
// the time of an answer does not tell which user names exist.
const DECOY_HASH = 'scrypt$16384$8$1$c2x1aWNlLWRlY295LXNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'

export class BrokerAccess {
  private policy: Policy
  /** bumped on every policy change, so cached per-client ACLs are resolved again */
  private generation = 0

  constructor (input: AccessPolicyInput) {
    this.policy = compilePolicy(input)
  }

  /** Replaces the users and ACLs (SIGHUP); connected clients are checked against it from now on. */
  update (input: AccessPolicyInput): void {
    this.policy = compilePolicy(input)
    this.generation++
  }

  /** Whether any user is configured (when none, user names are ignored). */
  get hasUsers (): boolean {
    return this.policy.users.size > 0
  }

  async authenticate (credentials: Credentials): Promise<AuthOutcome> {
    const { users, allowAnonymous } = this.policy
    const { certifiedUsername, username, password } = credentials
    if (certifiedUsername !== null) {
      if (users.has(certifiedUsername)) return { ok: true, username: certifiedUsername }
      return { ok: false, returnCode: NOT_AUTHORIZED, why: `the client certificate's name "${certifiedUsername}" is not a broker user` }
    }
    if (username === null || users.size === 0) {
      if (allowAnonymous || isLoopbackAddress(credentials.remoteAddress)) return { ok: true, username: null }
      return { ok: false, returnCode: NOT_AUTHORIZED, why: 'anonymous clients are accepted on loopback only (allowAnonymous is false)' }
    }
    const user = users.get(username)
    const hash = user?.passwordHash ?? DECOY_HASH
    const matches = password !== null && await verifyPassword(password.toString('utf8'), hash)
    if (user !== undefined && user.passwordHash !== undefined && matches) return { ok: true, username }
    return { ok: false, returnCode: BAD_USERNAME_OR_PASSWORD, why: user === undefined ? 'unknown user' : password === null ? 'no password' : 'wrong password' }
  }

  /**
   * The ACL in force for a client admitted as `username` (null: anonymous). Cached on `session`
   * until the policy changes. A user removed since the client connected gets nothing.
   */
  aclFor (session: Session): ClientAcl {
    if (session.acl !== null && session.generation === this.generation) return session.acl
    const { users, anonymous } = this.policy
    let acl: ClientAcl
    if (session.username === null) acl = resolveAcl(anonymous, { username: null, clientid: session.clientId })
    else {
      const user = users.get(session.username)
      acl = user === undefined ? DENY_ALL : resolveAcl(user.acl, { username: session.username, clientid: session.clientId })
    }
    session.acl = acl
    session.generation = this.generation
    session.lastTopic = null
    return acl
  }

  /**
   * Whether the client may publish to `topic`. A sensor publishes to the same few topics over and
   * over: the answer for its last topic is kept, so most publishes cost one string comparison.
   */
  mayPublish (session: Session, topic: string): boolean {
    const acl = this.aclFor(session)
    if (session.lastTopic === topic) return session.lastAllowed
    const allowed = mayPublish(acl, topic)
    session.lastTopic = topic
    session.lastAllowed = allowed
    return allowed
  }
}

/** What the broker keeps per connected client. */
export interface Session {
  readonly username: string | null
  readonly clientId: string
  acl: ClientAcl | null
  generation: number
  /** the last topic published and whether it was allowed (under `generation`) */
  lastTopic: string | null
  lastAllowed: boolean
}

export function newSession (username: string | null, clientId: string): Session {
  return { username, clientId, acl: null, generation: -1, lastTopic: null, lastAllowed: false }
}

function compilePolicy (input: AccessPolicyInput): Policy {
  const users = new Map<string, CompiledUser>()
  for (const user of input.users) users.set(user.username, { passwordHash: user.passwordHash, acl: compileAcl(user) })
  const anonymous = input.anonymous.publish === undefined && input.anonymous.subscribe === undefined ? ALLOW_ALL : compileAcl(input.anonymous)
  return { users, allowAnonymous: input.allowAnonymous, anonymous }
}

/** 127.0.0.0/8, ::1, and IPv4 loopback seen through a dual-stack socket (::ffff:127.x.x.x). */
export function isLoopbackAddress (address: string | undefined): boolean {
  if (address === undefined) return false
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address
  if (isIP(v4) === 4) return v4.startsWith('127.')
  return address === '::1'
}

/**
 * Lets one log line through per key (a client address) per window: a sensor with a wrong password
 * that reconnects every second would otherwise fill the journal. Counting is the caller's.
 */
export class PerKeyLogLimit {
  private readonly last = new Map<string, number>()
  private readonly windowMs: number
  private readonly clock: () => number

  constructor (windowMs: number, clock: () => number) {
    this.windowMs = windowMs
    this.clock = clock
  }

  /** true when a line for `key` may be logged now */
  take (key: string): boolean {
    const now = this.clock()
    const at = this.last.get(key)
    if (at !== undefined && now - at < this.windowMs) return false
    // A flood from many addresses cannot grow the map without bound: the oldest entry goes (a Map
    // keeps insertion order, and an entry is re-inserted whenever it logs).
    this.last.delete(key)
    if (this.last.size >= 10_000) {
      const oldest = this.last.keys().next().value
      if (oldest !== undefined) this.last.delete(oldest)
    }
    this.last.set(key, now)
    return true
  }
}
