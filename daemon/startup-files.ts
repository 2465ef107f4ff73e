import type { Logger } from 'pino'
import { ConfigError, formatListen, type SluiceConfig } from '../config/index.js'
import type { AccessPolicyInput } from '../adapters/broker-auth.js'
import type { BrokerTlsOptions, TlsMaterial } from '../adapters/broker-tls.js'
import type { UpstreamTls } from '../adapters/upstream/connection.js'
import { loadBrokerTls } from './broker-tls.js'
import { loadBrokerUsers } from './broker-users.js'
import { loadUpstreamTls } from './upstream-tls.js'

/** What the gateway reads from disk besides the buffer: TLS material, the broker's users. */
export interface StartupFiles {
  upstreamTls: UpstreamTls | undefined
  brokerTls: { options: BrokerTlsOptions, material: TlsMaterial } | undefined
  brokerAccess: AccessPolicyInput
}

/**
 * Reads them before the buffer opens: a bad certificate path is a config error, nothing to clean
 * up. Both sets of TLS files are checked, so that every bad one is reported at once.
 */
export async function readStartupFiles (config: SluiceConfig, logger: Logger): Promise<StartupFiles> {
  const [upstreamFiles, brokerFiles] = await Promise.allSettled([loadUpstreamTls(config.upstream), loadBrokerTls(config.ingest.broker)])
  if (upstreamFiles.status === 'rejected' || brokerFiles.status === 'rejected') throw oneError([upstreamFiles, brokerFiles])
  const brokerAccess = await loadBrokerUsers(config.ingest.broker)
  if (config.ingest.broker.enabled) warnAboutAccess(logger, config.ingest.broker, brokerAccess)
  return { upstreamTls: upstreamFiles.value, brokerTls: brokerFiles.value, brokerAccess }
}

/** Says what an operator may not expect of the broker's access rules. */
export function warnAboutAccess (logger: Logger, broker: SluiceConfig['ingest']['broker'], access: AccessPolicyInput): void {
  if (broker.allowAnonymous) {
    const listeners = [broker.listen, broker.tls?.listen].flatMap((address) => address == null ? [] : [formatListen(address)])
    logger.warn({ listen: listeners }, 'ingest.broker.allowAnonymous is true: clients without a user name are accepted from any address')
  }
  const noHash = access.users.filter((user) => user.passwordHash === undefined).map((user) => user.username)
  if (noHash.length > 0) {
    logger.warn({ users: noHash }, 'broker users without a password hash (neither passwordHash nor a passwordFile line) can only connect with a client certificate')
  }
}

/** The failures of settled promises as one error: config errors merged into one, else the first. */
function oneError (results: ReadonlyArray<PromiseSettledResult<unknown>>): unknown {
  const failures = results.flatMap((r) => r.status === 'rejected' ? [r.reason as unknown] : [])
  if (failures.every((e) => e instanceof ConfigError)) return new ConfigError(failures.flatMap((e) => e.errors))
  return failures[0]
}
