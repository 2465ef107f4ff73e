/**
 * Certificates made at test time with the `openssl` CLI: a CA, a server certificate for
 * localhost / 127.0.0.1 / broker.test signed by it, a client certificate signed by it (mutual
 * TLS), and an unrelated CA that signed nothing here. EC P-256 keys: quick to make.
 */
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface TestCerts {
  dir: string
  /** PEM paths */
  ca: string
  serverCert: string
  serverKey: string
  clientCert: string
  clientKey: string
  /** a CA that signed neither certificate */
  otherCa: string
}

async function openssl (dir: string, args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir })
}

async function selfSigned (dir: string, name: string, subject: string): Promise<void> {
  await openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', subject,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
}

async function signed (dir: string, name: string, subject: string, extensions: string, ca = 'ca'): Promise<void> {
  await openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject])
  writeFileSync(join(dir, `${name}.ext`), extensions)
  await openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`])
}

export async function makeCerts (dir: string): Promise<TestCerts> {
  await selfSigned(dir, 'ca', '/CN=sluice test CA')
  await selfSigned(dir, 'other-ca', '/CN=some other CA')
  await signed(dir, 'server', '/CN=localhost',
    'subjectAltName=DNS:localhost,DNS:broker.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
  await signed(dir, 'client', '/CN=gw-test', 'extendedKeyUsage=clientAuth\n')
  return {
    dir,
    ca: join(dir, 'ca.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
    otherCa: join(dir, 'other-ca.pem')
  }
}

/**
 * One more certificate with a fresh key, in a directory `makeCerts` filled: a renewed server
 * certificate (signed by `ca`, the same names), or a client certificate with subject `cn` signed
 * by `ca` or by `other-ca` (a CA the server does not trust). Returns the PEM paths.
 */
export async function extraCert (dir: string, name: string, kind: { server: true } | { client: string }, ca: 'ca' | 'other-ca' = 'ca'): Promise<{ cert: string, key: string }> {
  if ('server' in kind) {
    await signed(dir, name, '/CN=localhost', 'subjectAltName=DNS:localhost,DNS:broker.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n', ca)
  } else {
    await signed(dir, name, `/CN=${kind.client}`, 'extendedKeyUsage=clientAuth\n', ca)
  }
  return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) }
}
