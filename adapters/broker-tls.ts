// The TLS listener of the embedded broker: a `tls.Server` in front of aedes, with optional client
// certificates, whose certificate, key and CA are read again on demand (SIGHUP) and swapped in
// with `setSecureContext`, which changes what new handshakes see and leaves every established
// connection as it is: a sensor stays connected through a certificate renewal.
import { X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { AddressInfo, Server as NetServer, Socket } from 'node:net'
import { createSecureContext, createServer, TLSSocket, type Server } from 'node:tls'

/** Paths of the PEM files of a TLS listener. */
export interface TlsFiles {
  cert: string
  key: string
  ca?: string | undefined
}

export interface BrokerTlsOptions extends TlsFiles {
  listen: { host: string, port: number }
  /** refuse, during the handshake, clients without a certificate signed by `ca` */
  requireClientCert: boolean
  /** the verified client certificate's subject CN stands for the user name (certificateUsername) */
  useIdentityAsUsername: boolean
}

/** What a listener's certificate is, for logs and `sluice status`. */
export interface CertificateInfo {
  subject: string
  /** RFC 3339 */
  validFrom: string
  validTo: string
  /** SHA-256 of the DER certificate, colon-separated hex (what openssl x509 -fingerprint -sha256 prints) */
  fingerprint256: string
}

/** The files' contents, read and checked to make a TLS context. */
export interface TlsMaterial {
  cert: Buffer
  key: Buffer
  ca?: Buffer
  certificate: CertificateInfo
}

export type TlsFileKey = keyof TlsFiles

/** The TLS files cannot be used: one problem per file, each naming its key. */
export class TlsFilesError extends Error {
  readonly problems: ReadonlyArray<{ key: TlsFileKey, message: string }>

  constructor (problems: Array<{ key: TlsFileKey, message: string }>) {
    super(problems.map((p) => `${p.key}: ${p.message}`).join('; '))
    this.name = 'TlsFilesError'
    this.problems = problems
  }
}

const WHAT: Record<TlsFileKey, string> = { cert: 'certificate', key: 'private key', ca: 'CA certificate' }

/**
 * Reads the certificate, key and CA, and checks they make a TLS context: a missing file, a file
 * that is not PEM, or a key that does not belong to the certificate is a TlsFilesError.
 */
export async function readTlsFiles (files: TlsFiles): Promise<TlsMaterial> {
  const problems: Array<{ key: TlsFileKey, message: string }> = []
  const read = async (key: TlsFileKey): Promise<Buffer | undefined> => {
    const file = files[key]
    if (file === undefined) return undefined
    try {
      return await readFile(file)
    } catch (err) {
      problems.push({ key, message: `cannot read the ${WHAT[key]} ${JSON.stringify(file)}: ${(err as Error).message}` })
      return undefined
    }
  }
  const [cert, key, ca] = [await read('cert'), await read('key'), await read('ca')]
  if (problems.length > 0 || cert === undefined || key === undefined) throw new TlsFilesError(problems)
  let certificate: CertificateInfo | undefined
  try {
    certificate = describeCertificate(new X509Certificate(cert))
  } catch {
    problems.push({ key: 'cert', message: `${JSON.stringify(files.cert)} holds no PEM certificate` })
  }
  if (ca !== undefined && !ca.includes('-----BEGIN CERTIFICATE-----')) {
    problems.push({ key: 'ca', message: `${JSON.stringify(files.ca)} holds no PEM certificate` })
  }
  if (problems.length === 0) {
    try {
      createSecureContext({ cert, key, ca })
    } catch (err) {
      const message = (err as Error).message
      if (/key values mismatch/i.test(message)) {
        problems.push({ key: 'key', message: `the private key ${JSON.stringify(files.key)} does not belong to the certificate ${JSON.stringify(files.cert)}` })
      } else {
        problems.push({ key: /key/i.test(message) ? 'key' : 'cert', message: `the TLS files do not make a TLS context (${message})` })
      }
    }
  }
  if (problems.length > 0 || certificate === undefined) throw new TlsFilesError(problems)
  return ca === undefined ? { cert, key, certificate } : { cert, key, ca, certificate }
}

function describeCertificate (x509: X509Certificate): CertificateInfo {
  return {
    subject: x509.subject.replace(/\n/g, ', '),
    validFrom: new Date(x509.validFrom).toISOString(),
    validTo: new Date(x509.validTo).toISOString(),
    fingerprint256: x509.fingerprint256
  }
}

// Node's default handshake timeout is 120 s: a client that opens a socket and never finishes the
// handshake would hold it that long. A microcontroller's handshake takes seconds, not tens.
const HANDSHAKE_TIMEOUT_MS = 20_000

/** Put on a socket by a listener with useIdentityAsUsername: how certificateUsername knows. */
const IDENTITY_AS_USERNAME = Symbol('sluice.identityAsUsername')

type Marked = TLSSocket & { [IDENTITY_AS_USERNAME]?: true }

/**
 * The user name a sensor's connection proves by its client certificate: the subject CN of the
 * verified certificate, when it came through a TLS listener with useIdentityAsUsername (which
 * implies requireClientCert) and the peer is authorised. Null otherwise, and for a certificate
 * with no CN or several (no single name to take).
 */
export function certificateUsername (socket: unknown): string | null {
  if (!(socket instanceof TLSSocket)) return null
  if ((socket as Marked)[IDENTITY_AS_USERNAME] !== true || !socket.authorized) return null
  const cn: unknown = socket.getPeerCertificate().subject?.CN
  return typeof cn === 'string' && cn !== '' ? cn : null
}

export interface BrokerTlsEvents {
  /** a verified connection, to hand to the broker */
  connection: (socket: TLSSocket) => void
  /** a handshake that failed (no certificate, an unknown CA, not TLS at all) */
  handshakeError: (err: Error, remoteAddress: string | undefined) => void
  /** called once with the server before it listens: the broker's connection bound (maxClients) */
  protect?: (server: NetServer) => void
}

/**
 * A TLS listener. `reload` reads the files again and swaps them in for new handshakes; a
 * material that does not make a TLS context is refused and the current one stays.
 */
export class BrokerTlsListener {
  private readonly options: BrokerTlsOptions
  private readonly server: Server
  /** every raw socket, closed by close() whether its handshake finished or not */
  private readonly sockets = new Set<Socket>()
  private material: TlsMaterial

  private constructor (options: BrokerTlsOptions, material: TlsMaterial, events: BrokerTlsEvents) {
    this.options = options
    this.material = material
    this.server = createServer({
      cert: material.cert,
      key: material.key,
      ca: material.ca,
      requestCert: options.requireClientCert,
      rejectUnauthorized: options.requireClientCert,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS
    }, (socket) => {
      if (options.useIdentityAsUsername) (socket as Marked)[IDENTITY_AS_USERNAME] = true
      events.connection(socket)
    })
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket)
      socket.once('close', () => { this.sockets.delete(socket) })
    })
    this.server.on('tlsClientError', (err, socket) => { events.handshakeError(err, socket.remoteAddress) })
    events.protect?.(this.server)
  }

  /** Listens with `material` (read by readTlsFiles from the options' files). */
  static async listen (options: BrokerTlsOptions, material: TlsMaterial, events: BrokerTlsEvents): Promise<BrokerTlsListener> {
    const listener = new BrokerTlsListener(options, material, events)
    const { server } = listener
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(options.listen.port, options.listen.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    return listener
  }

  /** The address it listens on (the real port when the config says 0). */
  address (): { host: string, port: number } {
    const address = this.server.address() as AddressInfo | null
    return { host: address?.address ?? this.options.listen.host, port: address?.port ?? this.options.listen.port }
  }

  get certificate (): CertificateInfo { return this.material.certificate }

  /**
   * Reads `files` again (the same paths, or new ones) and serves them to new handshakes.
   * Resolves with what changed (null when the files hold what is served already); rejects with
   * a TlsFilesError, keeping the current certificate, when they cannot be used.
   */
  async reload (files: TlsFiles): Promise<{ changed: TlsFileKey[], certificate: CertificateInfo } | null> {
    const next = await readTlsFiles(files)
    const current = this.material
    const changed = (['cert', 'key', 'ca'] as const).filter((k) => !sameBytes(current[k], next[k]))
    if (changed.length === 0) return null
    this.server.setSecureContext({ cert: next.cert, key: next.key, ca: next.ca })
    this.material = next
    return { changed, certificate: next.certificate }
  }

  /** Stops listening and closes every connection, handshaking or established. Safe to call twice. */
  async close (): Promise<void> {
    const closed = new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
    for (const socket of this.sockets) socket.destroy()
    await closed
  }
}

function sameBytes (a: Buffer | undefined, b: Buffer | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.equals(b)
}
