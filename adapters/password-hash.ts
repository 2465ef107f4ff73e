import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/**
 * `sluice hash-password` and the check a broker user's password gets: scrypt (RFC 7914, memory-hard),
 * stored self-describing as `scrypt$N$r$p$salt$key` with salt and key in base64url, so the cost
 * can be raised later without invalidating hashes already in configs. Compared in constant time.
 *
 * N = 2^14, r = 8 takes 16 MiB and a few tens of milliseconds per check on a Raspberry Pi 4:
 * paid once per sensor CONNECT, not per reading.
 */
const N = 16384
const R = 8
const P = 1
const KEY_BYTES = 32
const SALT_BYTES = 16

async function scrypt (password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    scryptCallback(password, salt, keylen, options, (err, key) => { err === null ? resolve(key) : reject(err) })
  })
}

export async function hashPassword (password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const key = await scrypt(password, salt, KEY_BYTES, { N, r: R, p: P, maxmem: 64 * 1024 * 1024 })
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`
}

/** Whether `password` matches a `scrypt$...` hash; false for anything malformed. */
export async function verifyPassword (password: string, hash: string): Promise<boolean> {
  const parts = hash.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false
  const [n, r, p] = parts.slice(1, 4).map(Number)
  const salt = Buffer.from(parts[4], 'base64url')
  const expected = Buffer.from(parts[5], 'base64url')
  // Bounds keep a hostile config from asking for gigabytes of memory.
  if (![n, r, p].every(Number.isSafeInteger) || n < 2 || n > 2 ** 20 || (n & (n - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return false
  if (salt.length === 0 || expected.length < 16) return false
  const key = await scrypt(password, salt, expected.length, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 })
  return timingSafeEqual(key, expected)
}

/**
 * Reads the password from `input` (its first line; a trailing CR/LF is not part of it). On a
 * terminal the password is not echoed: the terminal goes to raw mode while it is typed, and a
 * prompt goes to `prompt` (stderr, so the hash alone is on stdout).
 */
export async function readPassword (input: NodeJS.ReadableStream, prompt?: NodeJS.WritableStream): Promise<string> {
  const tty = input as NodeJS.ReadableStream & { isTTY?: boolean, setRawMode?: (raw: boolean) => unknown }
  if (tty.isTTY === true && typeof tty.setRawMode === 'function') return await readHidden(tty as NodeJS.ReadStream, prompt)
  let text = ''
  for await (const chunk of input) {
    text += String(chunk)
    if (text.includes('\n')) break
  }
  return text.split(/\r?\n/)[0]
}

async function readHidden (input: NodeJS.ReadStream, prompt: NodeJS.WritableStream | undefined): Promise<string> {
  // Echo off before the prompt: whoever sees the prompt may type at once.
  input.setRawMode(true)
  prompt?.write('Password: ')
  input.setEncoding('utf8')
  try {
    return await new Promise<string>((resolve, reject) => {
      let text = ''
      const onData = (chunk: string): void => {
        for (const ch of chunk) {
          if (ch === '\r' || ch === '\n' || ch === '\u0004') return done(null)
          if (ch === '\u0003') return done(new Error('cancelled'))
          if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1)
          else text += ch
        }
      }
      const done = (err: Error | null): void => {
        input.off('data', onData)
        input.pause()
        if (err === null) resolve(text)
        else reject(err)
      }
      input.on('data', onData)
      input.resume()
    })
  } finally {
    input.setRawMode(false)
    prompt?.write('\n')
  }
}
