import type { Readiness } from './admin.js'
import type { GatewayView } from './view.js'

/** Below this much free space on the buffer's volume LevelDB cannot be trusted to write: not ready. */
const DISK_FULL_BYTES = 1024 * 1024

/**
 * Whether the gateway accepts readings, and why not (/readyz, `/status`, `sluice status`): the one
 * place readiness is decided.
 */
export async function readiness (view: GatewayView): Promise<Readiness> {
  const reasons: string[] = []
  if (view.status !== 'open') reasons.push(`the gateway is ${view.status}`)
  const { buffer } = view.stats()
  if (buffer.status !== 'open') reasons.push(`the buffer is ${buffer.status}`)
  // The buffer holds readings back: full under overflow "block", low disk, failing writes, a repair.
  if (!buffer.accepting) reasons.push(buffer.detail ?? `the buffer does not accept readings (${String(buffer.reason)})`)
  // An adapter may say it is not listening (a subscription whose broker is gone); one that is no
  // way in for sensors (the health readings) has no say.
  if (!view.ingest().some((adapter) => adapter.listening === true)) reasons.push('no ingest adapter is listening')
  const disk = await view.diskSpace().catch(() => null)
  if (disk !== null && disk.freeBytes < DISK_FULL_BYTES) {
    reasons.push(`the disk is full: ${disk.freeBytes} bytes free on the volume of ${view.config.buffer.path}`)
  }
  return { ready: reasons.length === 0, reasons }
}
