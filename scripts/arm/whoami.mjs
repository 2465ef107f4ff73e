// Preloaded (node --import) into a sluice process under emulation: records, from inside that
// process, the CPU architecture Node.js reports, so a check cannot be passed by an x86-64 Node.js.
// The file named by SLUICE_ARM_WHOAMI gets one JSON line per process start.
import { appendFileSync } from 'node:fs'

const out = process.env.SLUICE_ARM_WHOAMI
if (out !== undefined && out !== '') {
  appendFileSync(out, JSON.stringify({ pid: process.pid, arch: process.arch, platform: process.platform, node: process.version }) + '\n')
}
