/**
 * A real mosquitto broker for tests, on a free 127.0.0.1 port, in its own temp dir.
 *
 * Each instance is a child process killed at the end of the test (t.teardown). Two safety nets keep
 * a failed or timed-out test file from leaking brokers: the child is started through
 * `setpriv --pdeathsig SIGKILL` when available (the kernel kills it when this test process dies, by
 * signal too), and every broker still running is SIGKILLed on process 'exit'.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './ports.js'

/** The part of a tap Test these helpers use. */
export interface TestLike {
  teardown(fn: () => unknown): void
}

export interface MosquittoOptions {
  /** Port to listen on (127.0.0.1). Default: a free port. */
  port?: number
  /** Keep sessions and queued messages on disk across restart() (autosave every second). Default false. */
  persistence?: boolean
  /** Directory for config, log and persistence. Default: a fresh temp dir removed at teardown. */
  dir?: string
  /** Extra mosquitto.conf lines appended after the defaults (later lines win for global options). */
  extraConfig?: string
  /** max_inflight_messages (outgoing QoS 1/2 window per client). Default: mosquitto's (20). 0 = unlimited. */
  maxInflightMessages?: number
  /** How long start/restart may take before failing. Default 15000 ms. */
  startTimeoutMs?: number
}

export interface Mosquitto {
  readonly port: number
  /** mqtt://127.0.0.1:PORT */
  readonly url: string
  /** pid of the current process (changes on restart) */
  readonly pid: number
  /** true while the current process has not exited */
  readonly running: boolean
  /** directory holding mosquitto.conf, mosquitto.log and (with persistence) mosquitto.db */
  readonly dir: string
  readonly confPath: string
  readonly logPath: string
  /** Sends `signal` (default SIGKILL); resolves once the process has exited. No-op if it already has. */
  kill(signal?: NodeJS.Signals): Promise<void>
  /**
   * Starts a new mosquitto on the same port with the same config, once it accepts MQTT connections.
   * If the current one is still running, it is stopped first with SIGTERM (a graceful stop, which
   * also saves persistence); kill() it first for a crash.
   */
  restart(): Promise<void>
  /** The broker's log file so far (all starts), plus anything it printed on stderr. */
  logText(): string
}

const running = new Set<ChildProcess>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const child of running) {
      try {
        child.kill('SIGKILL')
      } catch {
        // already gone
      }
    }
  })
}

let binCache: string | undefined
export function mosquittoBin(): string {
  if (binCache !== undefined) return binCache
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/local/sbin'])) {
    if (dir === '') continue
    const p = join(dir, 'mosquitto')
    try {
      if (statSync(p).isFile()) return (binCache = p)
    } catch {
      // not here
    }
  }
  throw new Error('mosquitto is not installed: run `bash scripts/ensure-mosquitto.sh` (or `sudo apt-get install -y mosquitto`)')
}

let setprivCache: string | null | undefined
function setprivBin(): string | null {
  if (setprivCache !== undefined) return setprivCache
  setprivCache = null
  for (const p of ['/usr/bin/setpriv', '/bin/setpriv']) {
    if (existsSync(p) && spawnSync(p, ['--pdeathsig', 'SIGKILL', '--', 'true']).status === 0) {
      setprivCache = p
      break
    }
  }
  return setprivCache
}

function buildConfig(port: number, dir: string, logPath: string, opts: MosquittoOptions): string {
  const lines = [
    `# written by test/helpers/mosquitto.ts`,
    `listener ${port} 127.0.0.1`,
    `allow_anonymous true`,
    // unlimited queue per client (mosquitto's default 1000 silently drops the rest)
    `max_queued_messages 0`,
    `max_queued_bytes 0`,
    `log_dest file ${logPath}`,
    `log_type error`,
    `log_type warning`,
    `log_type notice`,
    `log_type information`,
    `connection_messages true`,
    `log_timestamp true`,
  ]
  // Run as root, mosquitto would drop to the `mosquitto` user and could not write this dir.
  if (typeof process.getuid === 'function' && process.getuid() === 0) lines.push('user root')
  if (opts.maxInflightMessages !== undefined) lines.push(`max_inflight_messages ${opts.maxInflightMessages}`)
  if (opts.persistence === true) {
    lines.push('persistence true', `persistence_location ${dir}/`, 'persistence_file mosquitto.db', 'autosave_interval 1')
  } else {
    lines.push('persistence false')
  }
  if (opts.extraConfig) lines.push(opts.extraConfig)
  return lines.join('\n') + '\n'
}

/** Resolves true when a raw MQTT 3.1.1 CONNECT gets CONNACK return code 0. */
function probeMqtt(port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise(resolve => {
    const id = Buffer.from(`probe-${process.pid}-${Math.random().toString(16).slice(2, 10)}`)
    const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x0a])
    const body = Buffer.concat([variable, Buffer.from([id.length >> 8, id.length & 0xff]), id])
    const packet = Buffer.concat([Buffer.from([0x10, body.length]), body])
    let got = Buffer.alloc(0)
    let done = false
    const sock = connect({ host: '127.0.0.1', port })
    const finish = (ok: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (ok) sock.end(Buffer.from([0xe0, 0x00]))
      sock.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    sock.on('connect', () => sock.write(packet))
    sock.on('data', d => {
      got = Buffer.concat([got, d])
      if (got.length >= 4) finish(got[0] === 0x20 && got[1] === 0x02 && got[3] === 0x00)
    })
    sock.on('error', () => finish(false))
    sock.on('close', () => finish(false))
  })
}

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

class MosquittoInstance implements Mosquitto {
  readonly dir: string
  readonly confPath: string
  readonly logPath: string
  port: number
  private child: ChildProcess | undefined
  private exited: Promise<void> = Promise.resolve()
  private stderr = ''
  private readonly opts: MosquittoOptions
  private readonly ownsDir: boolean

  constructor(port: number, opts: MosquittoOptions) {
    this.port = port
    this.opts = opts
    this.ownsDir = opts.dir === undefined
    this.dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'sluice-mosquitto-'))
    this.confPath = join(this.dir, 'mosquitto.conf')
    this.logPath = join(this.dir, 'mosquitto.log')
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`
  }

  get pid(): number {
    return this.child?.pid ?? -1
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null
  }

  logText(): string {
    let log = ''
    try {
      log = readFileSync(this.logPath, 'utf8')
    } catch {
      // not written yet
    }
    return this.stderr ? `${log}\n[stderr]\n${this.stderr}` : log
  }

  private logSize(): number {
    try {
      return statSync(this.logPath).size
    } catch {
      return 0
    }
  }

  private logSince(offset: number): string {
    try {
      return readFileSync(this.logPath).subarray(offset).toString('utf8')
    } catch {
      return ''
    }
  }

  private writeConfig(): void {
    writeFileSync(this.confPath, buildConfig(this.port, this.dir, this.logPath, this.opts))
  }

  /** One attempt: spawn and wait until it accepts MQTT, or exits, or the deadline passes. */
  private async spawnOnce(deadline: number, logOffset: number): Promise<'ok' | 'exited'> {
    const bin = mosquittoBin()
    const setpriv = setprivBin()
    const [cmd, args] = setpriv
      ? [setpriv, ['--pdeathsig', 'SIGKILL', '--', bin, '-c', this.confPath]]
      : [bin, ['-c', this.confPath]]
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    this.child = child
    running.add(child)
    installExitHook()
    let hasExited = false
    this.exited = new Promise(resolve => {
      child.once('exit', () => {
        hasExited = true
        running.delete(child)
        resolve()
      })
      child.once('error', err => {
        this.stderr += `spawn error: ${err.message}\n`
        hasExited = true
        running.delete(child)
        resolve()
      })
    })
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (d: string) => {
      this.stderr += d
    })
    while (Date.now() < deadline) {
      if (hasExited) return 'exited'
      // "mosquitto version X running" is logged once its listeners are bound; checking it (and that
      // the process is alive) keeps a probe that reached another server on a recycled port from counting.
      if (this.logSince(logOffset).includes(' running') && (await probeMqtt(this.port, 500)) && !hasExited) {
        return 'ok'
      }
      await sleep(20)
    }
    await this.kill('SIGKILL')
    throw new Error(`mosquitto did not accept connections on port ${this.port} in time\n${this.logText()}`)
  }

  /** Starts on this.port; if the port is taken, retries (same port when fixed, else a new free one). */
  async start(portFixed: boolean): Promise<void> {
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 15000)
    for (;;) {
      this.writeConfig()
      const logBefore = this.logSize()
      const stderrBefore = this.stderr.length
      if ((await this.spawnOnce(deadline, logBefore)) === 'ok') return
      const err = this.stderr.slice(stderrBefore)
      const tail = `${this.logSince(logBefore)}${err ? `\n[stderr]\n${err}` : ''}`
      const inUse = /address already in use/i.test(tail)
      if (!inUse || Date.now() >= deadline) {
        throw new Error(`mosquitto exited during start (port ${this.port}, code ${this.child?.exitCode}, signal ${this.child?.signalCode})\n${tail}`)
      }
      if (portFixed) await sleep(100)
      else this.port = await freePort()
    }
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child
    if (child === undefined) return
    if (this.running) {
      try {
        child.kill(signal)
      } catch {
        // raced with exit
      }
    }
    await this.exited
  }

  async restart(): Promise<void> {
    if (this.running) {
      await this.kill('SIGTERM')
    }
    await this.start(true)
  }

  async teardown(): Promise<void> {
    try {
      await this.kill('SIGKILL')
    } catch {
      // nothing left to do
    }
    if (this.ownsDir) {
      try {
        rmSync(this.dir, { recursive: true, force: true })
      } catch {
        // best effort
      }
    }
  }
}

/**
 * Starts mosquitto (listener on 127.0.0.1, anonymous, unlimited queues, persistence off unless
 * asked), resolves once it answers an MQTT CONNECT. Killed and its temp dir removed at teardown.
 */
export async function startMosquitto(t: TestLike, opts: MosquittoOptions = {}): Promise<Mosquitto> {
  const port = opts.port ?? (await freePort())
  const m = new MosquittoInstance(port, opts)
  t.teardown(() => m.teardown())
  await m.start(opts.port !== undefined)
  return m
}
