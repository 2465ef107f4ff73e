/**
 * A stand-in for systemd's notification socket: a Unix datagram socket (what NOTIFY_SOCKET
 * names) that records every message a daemon sends through sd_notify.
 *
 * Node cannot bind a Unix datagram socket, so a small python3 program listens (python3 is on
 * every machine the tests run on; socat is not). Like systemd, it closes the file descriptor that
 * `systemd-notify` passes with BARRIER=1, which is what lets that helper return; without it each
 * notification would hang for the helper's 5 s barrier timeout.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestLike } from './mosquitto.js'

export interface Notification {
  /** the assignments, e.g. { READY: '1', STATUS: 'ready' } */
  fields: Record<string, string>
  /** Date.now() when the test process read it */
  at: number
  /** the sender's pid from SCM_CREDENTIALS (systemd-notify's, or its parent's when root) */
  pid: number | null
}

export interface NotifySocket {
  /** the socket's path: put it in NOTIFY_SOCKET */
  readonly path: string
  /** every message so far, barriers left out */
  readonly messages: Notification[]
  /** runs for every message as it arrives */
  onMessage: (listener: (n: Notification) => void) => void
  /** waits (bounded) until pred holds over the messages so far */
  waitFor: (pred: (messages: Notification[]) => boolean, timeoutMs: number, what: string) => Promise<void>
}

const LISTENER = `
import array, json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print(json.dumps({"listening": True}), flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(16 * 4) + socket.CMSG_SPACE(12))
    fds, pid = [], None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[:len(data) - len(data) % 4])
            fds.extend(a)
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = int.from_bytes(data[0:4], sys.byteorder)
    for fd in fds:
        os.close(fd)
    print(json.dumps({"msg": msg.decode("utf-8", "replace"), "pid": pid}), flush=True)
`

/**
 * Listens until the test ends. The socket lives in a short temp dir of its own: a Unix socket's
 * path must fit in 108 bytes, which a tap fixture dir may not.
 */
export async function startNotifySocket (t: TestLike): Promise<NotifySocket> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-notify-'))
  const path = join(dir, 'notify.sock')
  const child = spawn('python3', ['-c', LISTENER, path], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = once(child, 'exit')
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
    rmSync(dir, { recursive: true, force: true })
  })
  const messages: Notification[] = []
  const listeners: Array<(n: Notification) => void> = []
  const waiters = new Set<() => void>()
  let stderr = ''
  let partial = ''
  let listening: () => void = () => {}
  const up = new Promise<void>((resolve) => { listening = resolve })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  child.stdout.on('data', (d: Buffer) => {
    partial += d.toString()
    const lines = partial.split('\n')
    partial = lines.pop() ?? ''
    for (const line of lines) {
      const parsed = JSON.parse(line) as { listening?: true, msg?: string, pid?: number | null }
      if (parsed.listening === true) { listening(); continue }
      const fields: Record<string, string> = {}
      for (const assignment of (parsed.msg ?? '').split('\n')) {
        const eq = assignment.indexOf('=')
        if (eq > 0) fields[assignment.slice(0, eq)] = assignment.slice(eq + 1)
      }
      if (fields.BARRIER === '1') continue
      const n: Notification = { fields, at: Date.now(), pid: parsed.pid ?? null }
      messages.push(n)
      for (const l of listeners) l(n)
    }
    for (const w of waiters) w()
  })
  await Promise.race([
    up,
    exited.then(() => { throw new Error(`the notify socket stand-in exited: ${stderr}`) })
  ])

  const waitFor = async (pred: (messages: Notification[]) => boolean, timeoutMs: number, what: string): Promise<void> => {
    if (pred(messages)) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${JSON.stringify(messages.map((m) => m.fields))}`))
      }, timeoutMs)
      const check = (): void => {
        if (!pred(messages)) return
        clearTimeout(timer)
        waiters.delete(check)
        resolve()
      }
      waiters.add(check)
    })
  }
  return { path, messages, onMessage: (l) => { listeners.push(l) }, waitFor }
}
