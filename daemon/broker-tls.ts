import { ConfigError, type SluiceConfig } from '../config/index.js'
import { readTlsFiles, TlsFilesError, type BrokerTlsOptions, type TlsMaterial } from '../adapters/broker-tls.js'

type BrokerConfig = SluiceConfig['ingest']['broker']

/**
 * Reads the broker's TLS files (`ingest.broker.tls.cert`, `key`, `ca`) at start and checks they
 * make a TLS context: a missing file, a file that is not PEM or a key that does not belong to its
 * certificate is a config error (exit 2) naming the key, before the buffer is opened. Undefined
 * when the broker has no TLS listener.
 */
export async function loadBrokerTls (broker: BrokerConfig): Promise<{ options: BrokerTlsOptions, material: TlsMaterial } | undefined> {
  const { tls } = broker
  if (!broker.enabled || tls === undefined) return undefined
  try {
    return { options: { ...tls }, material: await readTlsFiles(tls) }
  } catch (err) {
    if (!(err instanceof TlsFilesError)) throw err
    throw new ConfigError(err.problems.map((p) => ({ path: `ingest.broker.tls.${p.key}`, message: p.message })), { cause: err })
  }
}
