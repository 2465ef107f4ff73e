/**
 * mosquitto for the bench: the upstream that sluice and the bridge both forward to, and the
 * baseline itself, an edge mosquitto with persistence bridged QoS 1 to that upstream (the usual
 * answer to what sluice does). Each in its own temp dir, on a free 127.0.0.1 port (mosquitto
 * cannot listen on port 0), killed when the run ends.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { sleep } from './common.js'
import { freePort } from '../ports.js'

export function mosquittoInstalled (): boolean {
  return spawnSync('mosquitto', ['-h'], { stdio: 'ignore' }).error === undefined
}

export interface BridgeTo {
  /** the upstream's port on 127.0.0.1 (nothing need listen there yet) */
  port: number
  /** sensor topics `sensors/...` arrive upstream as `${remotePrefix}sensors/...` */
  remotePrefix: string
  /** QoS 1 publishes the bridge keeps awaiting PUBACK (max_inflight_messages) */
  inflight: number
}

export class Mosquitto {
  private constructor (
    readonly port: number,
    private readonly child: ChildProcess,
    private readonly exited: Promise<void>,
    private readonly logPath: string
  ) {}

  /**
   * `bridge` makes it an edge broker: persistence on (the default autosave), queues unbounded
   * (mosquitto's default of 1000 queued messages would drop the rest of a backlog silently), and
   * a QoS 1 bridge of `sensors/#` to the upstream that retries every second or two.
   */
  static async start (dir: string, options: { port?: number, bridge?: BridgeTo } = {}): Promise<Mosquitto> {
    const port = options.port ?? await freePort()
    const logPath = join(dir, 'mosquitto.log')
    const lines = [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'max_queued_messages 0',
      'max_queued_bytes 0',
      `log_dest file ${logPath}`,
      'log_type error',
      'log_type warning'
    ]
    // Run as root, mosquitto would drop to the `mosquitto` user and could not write this dir.
    if (process.getuid?.() === 0) lines.push('user root')
    const bridge = options.bridge
    if (bridge === undefined) {
      lines.push('persistence false')
    } else {
      lines.push(
        'persistence true', `persistence_location ${dir}/`,
        `max_inflight_messages ${bridge.inflight}`,
        'connection bench-bridge', `address 127.0.0.1:${bridge.port}`, 'bridge_protocol_version mqttv311',
        'cleansession false', 'try_private false',
        // mosquitto 2.0.11 backs off 5-30 s with a single value; two values make it 1 s to 2 s.
        'restart_timeout 1 2',
        `topic # out 1 sensors/ ${bridge.remotePrefix}sensors/`
      )
    }
    const conf = join(dir, 'mosquitto.conf')
    await writeFile(conf, lines.join('\n') + '\n')
    const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    const exited = new Promise<void>((resolve) => { child.once('exit', () => { resolve() }) })
    const broker = new Mosquitto(port, child, exited, logPath)
    const deadline = Date.now() + 10_000
    while (!await accepts(port)) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await broker.kill()
        throw new Error(`mosquitto did not start on port ${port}: ${stderr}`)
      }
      await sleep(20)
    }
    return broker
  }

  get pid (): number { return this.child.pid ?? -1 }
  get url (): string { return `mqtt://127.0.0.1:${this.port}` }

  /** Fails if mosquitto dropped messages for a client that fell behind: the harness, not sluice. */
  async checkNothingDropped (): Promise<void> {
    const log = await readFile(this.logPath, 'utf8').catch(() => '')
    if (/dropped/i.test(log)) throw new Error(`mosquitto on port ${this.port} dropped messages: ${log.slice(0, 500)}`)
  }

  async kill (): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
    await this.exited
  }
}

async function accepts (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { resolve(false) })
  })
}
