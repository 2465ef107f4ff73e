/**
 * The built daemon (`dist/daemon/bin.js`) as a child process: black-box tests start it with a
 * config file, wait for its ready log line, and stop it with real signals.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { readyPorts, type ReadyPorts } from '../../scripts/ready-ports.js'
import type { TestLike } from './mosquitto.js'

export const BIN = fileURLToPath(new URL('../../dist/daemon/bin.js', import.meta.url))

export interface DaemonRun {
  readonly child: ChildProcess
  /** every JSON log line so far, parsed */
  readonly lines: any[]
  readonly stderr: () => string
  /** resolves with the exit code and signal once the process has exited */
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** the first log line whose msg is `msg`, waiting for it (bounded) */
  waitForLine: (msg: string, timeoutMs?: number) => Promise<any>
  kill: (signal: NodeJS.Signals) => Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /**
   * The ports it listens on, read from its `sluice ready` line: tests give the daemon port 0 and
   * read the real port back (nothing can take it between a check and the bind).
   */
  readonly ports: ReadyPorts
}

/** Writes `config` (JSON is YAML) into `dir` and returns the file's path. */
export function writeConfig (dir: string, config: unknown, name = 'sluice.yaml'): string {
  const file = join(dir, name)
  writeFileSync(file, JSON.stringify(config, null, 2))
  return file
}

/** Runs `sluice <args>` to completion (for check, bad configs...). */
export async function runCli (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await runNode([BIN, ...args], env)
}

/** Runs this Node.js with `args` to completion; its exit code and what it printed. */
export async function runNode (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  return { code, stdout, stderr }
}

/** How to start the daemon when not this Node.js on this tree's dist/ (e.g. an emulated ARM Node.js). */
export interface DaemonCommand {
  /** the program and its leading arguments, before `run -c FILE` (default: this node, BIN) */
  readonly command?: readonly string[]
  /** how long to wait for `sluice ready` (default 15 s) */
  readonly readyTimeoutMs?: number
}

/** Starts `sluice run -c configFile`; resolves once it logged `sluice ready` (or rejects if it exits). */
export async function startDaemon (t: TestLike, configFile: string, env: NodeJS.ProcessEnv = {}, how: DaemonCommand = {}): Promise<DaemonRun> {
  const [program, ...leading] = how.command ?? [process.execPath, BIN]
  if (program === undefined) throw new TypeError('startDaemon: an empty command')
  const child = spawn(program, [...leading, 'run', '-c', configFile], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: any[] = []
  const waiters = new Set<() => void>()
  let stderr = ''
  let partial = ''
  child.stdout?.on('data', (d: Buffer) => {
    partial += d.toString()
    const parts = partial.split('\n')
    partial = parts.pop() ?? ''
    for (const line of parts) {
      if (line.trim() === '') continue
      try { lines.push(JSON.parse(line)) } catch { lines.push({ msg: line }) }
    }
    for (const w of waiters) w()
  })
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
  let hasExited = false
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    // 'close', not 'exit': by then every line the daemon printed has been read.
    child.on('close', (code, signal) => {
      hasExited = true
      for (const w of waiters) w()
      resolve({ code, signal })
    })
  })
  t.teardown(async () => {
    if (!hasExited) child.kill('SIGKILL')
    await exited
  })

  const waitForLine = async (msg: string, timeoutMs = 15_000): Promise<any> => {
    const find = (): any => lines.find((l) => l.msg === msg)
    if (find() !== undefined) return find()
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`no "${msg}" log line within ${timeoutMs} ms; stderr: ${stderr}`)) }, timeoutMs)
      const check = (): void => {
        const line = find()
        if (line !== undefined || hasExited) {
          clearTimeout(timer)
          waiters.delete(check)
          if (line !== undefined) resolve(line)
          else reject(new Error(`the daemon exited before "${msg}"; stderr: ${stderr}; stdout: ${JSON.stringify(lines)}`))
        }
      }
      waiters.add(check)
      check()
    })
  }
  const ready = await waitForLine('sluice ready', how.readyTimeoutMs)
  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    waitForLine,
    ports: readyPorts(ready),
    kill: async (signal) => {
      child.kill(signal)
      return await exited
    }
  }
}

/**
 * Writes the ports a daemon got from port 0 into its config file (written by writeConfig), so a
 * restart listens where the sensors already connect, as a gateway's fixed port does.
 */
export function pinPorts (configFile: string, run: Pick<DaemonRun, 'ports'>): void {
  const config = JSON.parse(readFileSync(configFile, 'utf8'))
  const { broker, admin } = run.ports
  if (broker !== null) config.ingest.broker.listen = `127.0.0.1:${broker}`
  if (admin !== null) config.admin = { ...config.admin, listen: `127.0.0.1:${admin}` }
  writeFileSync(configFile, JSON.stringify(config, null, 2))
}

/** `mqtt://127.0.0.1:PORT` of a daemon's embedded broker (its plain listener), read from its ready line. */
export function brokerUrl (run: Pick<DaemonRun, 'ports'>): string {
  if (run.ports.broker === null) throw new Error('the daemon has no plain broker listener')
  return `mqtt://127.0.0.1:${run.ports.broker}`
}

/** `http://127.0.0.1:PORT` of a daemon's admin endpoint, read from its ready line. */
export function adminUrl (run: Pick<DaemonRun, 'ports'>): string {
  if (run.ports.admin === null) throw new Error('the daemon has no admin endpoint')
  return `http://127.0.0.1:${run.ports.admin}`
}
