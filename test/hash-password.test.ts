/**
 * `sluice hash-password`: a password on stdin, a `scrypt$...` hash on stdout that verifies.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { hashPassword, verifyPassword } from '../adapters/password-hash.js'
import { BIN } from './helpers/daemon.js'

async function hashCli (input: string): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, [BIN, 'hash-password'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  child.stdin.end(input)
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  return { code, stdout, stderr }
}

t.test('hashes verify, salted, and wrong passwords or malformed hashes do not', async (t) => {
  const a = await hashPassword('s3nsor-one')
  const b = await hashPassword('s3nsor-one')
  t.match(a, /^scrypt\$16384\$8\$1\$[\w-]{22}\$[\w-]{43}$/)
  t.not(a, b, 'a fresh salt each time')
  t.equal(await verifyPassword('s3nsor-one', a), true)
  t.equal(await verifyPassword('s3nsor-one', b), true)
  t.equal(await verifyPassword('s3nsor-two', a), false)
  t.equal(await verifyPassword('s3nsor-one', a.replace('scrypt', 'bcrypt')), false)
  t.equal(await verifyPassword('s3nsor-one', 'scrypt$1073741824$8$1$c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5'), false, 'a cost past the bounds is refused, not computed')
  t.equal(await verifyPassword('s3nsor-one', 'scrypt$x'), false)
})

t.test('sluice hash-password reads stdin and prints the hash', async (t) => {
  const { code, stdout } = await hashCli('correct horse\n')
  t.equal(code, 0)
  const hash = stdout.trim()
  t.equal(await verifyPassword('correct horse', hash), true, 'the trailing newline is not part of the password')
  t.notMatch(stdout, /correct horse/)
  const empty = await hashCli('')
  t.equal(empty.code, 2)
  t.match(empty.stderr, /no password on stdin/)
})

t.test('on a terminal the password is not echoed', async (t) => {
  // script(1) runs the command on a pseudo-terminal: what the terminal would echo shows in its output.
  const child = spawn('script', ['-qfc', `${process.execPath} ${BIN} hash-password`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  const prompted = new Promise<void>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('Password: ')) resolve()
    })
  })
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve))
  t.teardown(() => { child.kill('SIGKILL') })
  await prompted
  child.stdin.write('typed secret\r')
  child.stdin.end()
  t.equal(await closed, 0)
  t.notMatch(out, /typed secret/, 'the password never appears on the terminal')
  const hash = /scrypt\$\S+/.exec(out)?.[0] ?? ''
  t.equal(await verifyPassword('typed secret', hash), true, 'the hash on the terminal verifies')
})
