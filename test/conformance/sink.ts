/**
 * A ReadingSink for the ingest conformance suite: it records every append, and a test decides
 * what the buffer behind it does: accept, hold its group commits open (a slow disk), fail them, or
 * refuse readings outright (closing, failed).
 */
import type { AppendOptions, Reading, ReadingSink } from '../../adapters/contract.js'
import type { TestLike } from '../helpers/mosquitto.js'

export interface Appended {
  seq: number
  reading: Reading
  options: AppendOptions | undefined
  /** a copy of the payload made when append was called: the adapter's buffer may be reused later */
  bytesAtAppend: Buffer
  /** Date.now() when append was called */
  at: number
  /** what became of its `durable` */
  state: 'pending' | 'durable' | 'failed'
}

type Mode = 'accept' | 'refuse' | 'fail'

export class RecordingSink implements ReadingSink {
  /** every reading the sink took (gave a seq), in order */
  readonly appended: Appended[] = []
  /** appends that threw */
  refusedAppends = 0
  private mode: Mode = 'accept'
  private gate: Promise<void> | null = null
  private open: () => void = () => {}

  readonly append = (reading: Reading, options?: AppendOptions): { seq: number, durable: Promise<void> } => {
    if (this.mode === 'refuse') {
      this.refusedAppends++
      throw new Error('the buffer is not accepting readings (closing)')
    }
    const entry: Appended = {
      seq: this.appended.length + 1,
      reading,
      options,
      bytesAtAppend: Buffer.from(reading.payload),
      at: Date.now(),
      state: 'pending'
    }
    this.appended.push(entry)
    if (this.mode === 'fail') {
      entry.state = 'failed'
      // Handled by nobody here: the contract does not promise that a sink handles a `durable`
      // nobody awaits, so an adapter that lets one go (QoS 0) must.
      return { seq: entry.seq, durable: Promise.reject(new Error('the group commit failed')) }
    }
    const durable = this.gate ?? Promise.resolve()
    void durable.then(() => { entry.state = 'durable' })
    return { seq: entry.seq, durable }
  }

  /** From now on appends throw, as the buffer does when it is closing or failed. */
  refuse (): void { this.mode = 'refuse' }
  /** From now on every group commit fails: `durable` rejects. */
  fail (): void { this.mode = 'fail' }
  /** Back to normal; a hold stays until released. */
  accept (): void { this.mode = 'accept' }

  /**
   * Holds every group commit from now on open until the returned function is called. A teardown
   * releases it too (teardowns run last-registered first: before the adapter's close waits on it).
   */
  hold (t: TestLike): () => void {
    this.gate = new Promise<void>((resolve) => { this.open = resolve })
    const release = (): void => {
      this.gate = null
      this.open()
    }
    t.teardown(release)
    return release
  }

  /** The readings taken on `topic`, in order. */
  on (topic: string): Appended[] {
    return this.appended.filter((a) => a.reading.topic === topic)
  }
}
