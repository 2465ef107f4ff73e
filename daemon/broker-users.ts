import { readFile } from 'node:fs/promises'
import { ConfigError, type ConfigIssue, type SluiceConfig } from '../config/index.js'
import type { AccessPolicyInput, BrokerUser } from '../adapters/broker-auth.js'

type BrokerConfig = SluiceConfig['ingest']['broker']

const PASSWORD_HASH = /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/

/**
 * The embedded broker's users and ACLs from the config, with the hashes of `passwordFile` read in:
 * at start (a bad file is a config error, exit 2) and on every SIGHUP (a bad file then changes
 * nothing). The file holds `username:hash` lines like mosquitto's password file; blank lines and
 * lines starting with "#" are skipped.
 */
export async function loadBrokerUsers (broker: BrokerConfig): Promise<AccessPolicyInput> {
  const users = new Map<string, BrokerUser>(broker.users.map((user) => [user.username, user]))
  if (broker.passwordFile !== undefined) {
    const path = 'ingest.broker.passwordFile'
    let text: string
    try {
      text = await readFile(broker.passwordFile, 'utf8')
    } catch (err) {
      throw new ConfigError([{ path, message: `cannot read the password file: ${(err as Error).message}` }], { cause: err })
    }
    const errors: ConfigIssue[] = []
    const inFile = new Set<string>()
    text.split(/\r?\n/).forEach((raw, i) => {
      const line = raw.trim()
      if (line === '' || line.startsWith('#')) return
      const where = `${JSON.stringify(broker.passwordFile)} line ${i + 1}`
      const colon = line.indexOf(':')
      const username = line.slice(0, colon)
      const passwordHash = line.slice(colon + 1)
      if (colon < 1 || !PASSWORD_HASH.test(passwordHash)) {
        errors.push({ path, message: `${where}: expected "username:hash" with a hash printed by \`sluice hash-password\`` })
        return
      }
      if (inFile.has(username)) {
        errors.push({ path, message: `${where}: user "${username}" is listed twice` })
        return
      }
      inFile.add(username)
      const entry = users.get(username)
      if (entry?.passwordHash !== undefined) {
        errors.push({ path, message: `${where}: user "${username}" also has a passwordHash in ingest.broker.users; give it in one place` })
        return
      }
      users.set(username, { ...entry, username, passwordHash })
    })
    if (errors.length > 0) throw new ConfigError(errors)
  }
  return { users: [...users.values()], allowAnonymous: broker.allowAnonymous, anonymous: broker.anonymous }
}
