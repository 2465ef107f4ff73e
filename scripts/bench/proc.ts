/**
 * What the kernel counts for a process (Linux /proc): CPU time, resident memory and its peak,
 * bytes written to storage. Steadier than wall-clock figures on a shared machine: CPU-seconds per
 * reading do not change when a neighbour takes a core away, throughput does.
 */
import { readFile } from 'node:fs/promises'

/** USER_HZ: the unit of utime/stime in /proc/PID/stat; 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS = 100

export interface ProcCounters {
  /** user + system CPU time so far, seconds */
  cpuS: number
  /** VmRSS, bytes */
  rss: number
  /** VmHWM: the highest RSS since the process started, bytes */
  peakRss: number
  /** bytes this process caused to be written to storage (write_bytes of /proc/PID/io) */
  writeBytes: number
}

export async function procCounters (pid: number): Promise<ProcCounters> {
  const [stat, status, io] = await Promise.all([
    readFile(`/proc/${pid}/stat`, 'utf8'),
    readFile(`/proc/${pid}/status`, 'utf8'),
    readFile(`/proc/${pid}/io`, 'utf8')
  ])
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  const kb = (field: string): number => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)
    if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`)
    return Number(match[1]) * 1024
  }
  const written = /^write_bytes:\s+(\d+)$/m.exec(io)
  if (written === null) throw new Error(`no write_bytes in /proc/${pid}/io`)
  return { cpuS: (utime + stime) / CLOCK_TICKS, rss: kb('VmRSS'), peakRss: kb('VmHWM'), writeBytes: Number(written[1]) }
}
