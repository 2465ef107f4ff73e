/**
 * A tiny request/response protocol between the bench and its child processes (the host of the
 * system under test, the load generator). The parent calls `worker.call(method, params)`; the
 * child answers through `serve({ method: handler })`; every child also answers `cpuUsage`. Every call has a timeout, so a stuck child
 * can never hang the bench: it is killed and the call rejects.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

interface Request { id: number, method: string, params: unknown }
type Response = { id: number, result: unknown } | { id: number, error: string }
const READY = 'bench-worker-ready'

export type Handlers = Record<string, (params: any) => unknown>

export interface SpawnOptions {
  /** extra node flags, e.g. --expose-gc */
  execArgv?: string[]
  /** how long to wait for the child to load its modules, in ms */
  readyTimeoutMs?: number
}

export class Worker {
  private nextId = 1
  private readonly waiting = new Map<number, { resolve: (value: any) => void, reject: (err: Error) => void }>()
  private exited = false
  private readonly exit: Promise<void>

  private constructor (readonly name: string, private readonly child: ChildProcess) {
    child.on('message', (message: Response) => {
      const waiter = this.waiting.get(message.id)
      if (waiter === undefined) return
      this.waiting.delete(message.id)
      if ('error' in message) waiter.reject(new Error(`${name}: ${message.error}`))
      else waiter.resolve(message.result)
    })
    this.exit = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exited = true
        for (const waiter of this.waiting.values()) {
          waiter.reject(new Error(`${name} exited (code ${code ?? '-'}, signal ${signal ?? '-'})`))
        }
        this.waiting.clear()
        resolve()
      })
    })
  }

  /** Forks `file` (a compiled worker script) and waits until it is ready for calls. */
  static async spawn (name: string, file: URL, options: SpawnOptions = {}): Promise<Worker> {
    const child = fork(fileURLToPath(file), [], {
      execArgv: options.execArgv ?? [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })
    const worker = new Worker(name, child)
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`${name} did not start`))
      }, options.readyTimeoutMs ?? 20_000)
      const onMessage = (message: unknown): void => {
        if (message !== READY) return
        clearTimeout(timer)
        child.off('message', onMessage)
        resolve()
      }
      child.on('message', onMessage)
      child.once('exit', () => { clearTimeout(timer); reject(new Error(`${name} exited while starting`)) })
    })
    return worker
  }

  get pid (): number { return this.child.pid ?? -1 }

  async call<T> (method: string, params: unknown = {}, timeoutMs = 120_000): Promise<T> {
    if (this.exited) throw new Error(`${this.name} has exited`)
    const id = this.nextId++
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        this.child.kill('SIGKILL')
        reject(new Error(`${this.name}.${method} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiting.set(id, {
        resolve: (value) => { clearTimeout(timer); resolve(value as T) },
        reject: (err) => { clearTimeout(timer); reject(err) }
      })
      this.child.send({ id, method, params } satisfies Request)
    })
  }

  /** Asks the child to exit; kills it if it has not within `graceMs`. */
  async close (graceMs = 10_000): Promise<void> {
    if (this.exited) return
    this.child.send({ id: 0, method: '__exit', params: {} } satisfies Request)
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, graceMs)
    await this.exit
    clearTimeout(timer)
  }
}

/**
 * The child side: runs each request's handler and sends back its result. `__exit` runs the
 * `close` handler (when there is one) and ends the process.
 */
export function serve (handlers: Handlers): void {
  const send = (message: Response | string): void => { process.send?.(message) }
  process.on('message', (request: Request) => {
    if (request.method === '__exit') {
      Promise.resolve(handlers.close?.({})).catch(() => {}).finally(() => { process.exit(0) })
      return
    }
    const handler = request.method === 'cpuUsage' ? cpuUsage : handlers[request.method]
    if (handler === undefined) {
      send({ id: request.id, error: `no method ${request.method}` })
      return
    }
    Promise.resolve().then(() => handler(request.params)).then(
      (result) => { send({ id: request.id, result: result ?? null }) },
      (err: unknown) => { send({ id: request.id, error: err instanceof Error ? err.stack ?? err.message : String(err) }) }
    )
  })
  // The parent going away must not leave an orphan holding ports and temp dirs.
  process.on('disconnect', () => { process.exit(0) })
  send(READY)
}

/** CPU time this process has used so far (user + system), in microseconds: every worker answers `cpuUsage`. */
export function cpuUsage (): number {
  const { user, system } = process.cpuUsage()
  return user + system
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export function wallNow (): number {
  return performance.timeOrigin + performance.now()
}
