/**
 * What one power cut did, judged against sluice's promises: compares the readings the sensors got
 * a PUBACK for with what reached the upstream broker, and the epoch sluice announced after the
 * reboot with the readings it forwarded. Pure: the harness hands it what it recorded.
 */

export interface Acked { key: string, at: number }

export type Arrival =
  | { kind: 'reading', at: number, epoch: string, seq: number, key: string }
  | { kind: 'epoch', at: number, epoch: string, previous: string, lastDurableSeq: number, reason: string }
  | { kind: 'gap', at: number, epoch: string, from: number, to: number, reason: string }

export interface CycleInput {
  cycle: number
  sync: 'always' | 'interval'
  /** the window a power cut may lose with sync: interval, in ms: syncInterval plus the commit's own time */
  lossWindowMs: number
  /** this cycle's PUBACKed readings, with the host time each PUBACK arrived */
  acked: Acked[]
  /** host time of the SIGKILL */
  killAt: number
  /** everything the receiver got so far, in arrival order */
  arrivals: Arrival[]
  /** first seq of the epoch the readings before the kill were given */
  epochFrom: number
}

export interface CycleResult {
  acked: number
  lost: number
  duplicates: number
  /** the age at the kill (ms) of the oldest lost reading; null without loss */
  oldestLossMs: number | null
  epochsAnnounced: number
  /** the epoch event announced after the kill, if any */
  epochEvent: Extract<Arrival, { kind: 'epoch' }> | null
  /** broken promises, each one sentence */
  broken: string[]
}

export function judgeCycle (input: CycleInput): CycleResult {
  const broken: string[] = []
  const arrivedCount = new Map<string, number>()
  for (const a of input.arrivals) if (a.kind === 'reading') arrivedCount.set(a.key, (arrivedCount.get(a.key) ?? 0) + 1)
  let lost = 0
  let duplicates = 0
  let oldestLossMs: number | null = null
  for (const r of input.acked) {
    const n = arrivedCount.get(r.key) ?? 0
    if (n === 0) {
      lost++
      const age = input.killAt - r.at
      oldestLossMs = Math.max(oldestLossMs ?? 0, age)
    } else duplicates += n - 1
  }

  const afterKill = input.arrivals.filter((a) => a.at > input.killAt)
  const epochs = afterKill.filter((a): a is Extract<Arrival, { kind: 'epoch' }> => a.kind === 'epoch')
  const epochEvent = epochs[0] ?? null
  if (epochEvent === null) {
    broken.push('no io.sluice.epoch event was announced after the power cut')
  } else {
    if (epochEvent.reason !== 'power-loss') broken.push(`the epoch event gives reason "${epochEvent.reason}", not "power-loss"`)
    const old = epochEvent.previous
    const at = input.arrivals.indexOf(epochEvent)
    // Readings of the new epoch come only after the announcement.
    const early = input.arrivals.slice(0, at).find((a) => a.kind === 'reading' && a.epoch === epochEvent.epoch)
    if (early !== undefined) broken.push('a reading of the new epoch arrived before the epoch was announced')
    // After the announcement, nothing past the last durable seq of the old epoch may be forwarded:
    // those seqs were not durable, and the new epoch is what keeps them from being reused.
    const reused = input.arrivals.slice(at + 1).find((a) => a.kind === 'reading' && a.epoch === old && a.seq > epochEvent.lastDurableSeq)
    if (reused !== undefined) broken.push(`seq ${(reused as { seq: number }).seq} of the old epoch arrived after it was announced as ending at ${epochEvent.lastDurableSeq}`)
    // The durable prefix is whole: every seq of the old epoch up to the last durable one arrived
    // (or was announced in a gap). A power cut may take the tail, never a piece from the middle.
    const have = new Set<number>()
    for (const a of input.arrivals) {
      if (a.kind === 'reading' && a.epoch === old) have.add(a.seq)
      if (a.kind === 'gap' && a.epoch === old) for (let s = a.from; s <= a.to; s++) have.add(s)
    }
    const missing: number[] = []
    for (let s = input.epochFrom; s <= epochEvent.lastDurableSeq; s++) if (!have.has(s)) missing.push(s)
    if (missing.length > 0) broken.push(`${missing.length} seq(s) of the durable prefix never arrived (first: ${missing[0]})`)
  }

  if (lost > 0) {
    switch (input.sync) {
      case 'always':
        broken.push(`${lost} PUBACKed reading(s) lost with sync: always`)
        break
      case 'interval':
        if (oldestLossMs !== null && oldestLossMs > input.lossWindowMs) {
          broken.push(`a lost reading was PUBACKed ${Math.round(oldestLossMs)} ms before the power cut, more than the ${input.lossWindowMs} ms sync: interval allows`)
        }
        break
    }
  }
  return { acked: input.acked.length, lost, duplicates, oldestLossMs, epochsAnnounced: epochs.length, epochEvent, broken }
}
