import { PassThrough } from 'node:stream'
import t from 'tap'
import { runDemo } from '../daemon/demo.js'

t.test('the demo forwards every PUBACKed reading through an outage and says PASS', async (t) => {
  const out = new PassThrough()
  let text = ''
  out.on('data', (chunk: Buffer) => { text += chunk.toString('utf8') })
  const code = await runDemo({
    out,
    sensors: 3,
    readingsPerSensor: 60,
    onlineMs: 2000,
    outageMs: 2000,
    recoveryMs: 2000,
    progressEveryMs: 300
  })
  t.equal(code, 0, 'exit code 0', { output: text })
  t.match(text, /^PASS: /m, 'the verdict is PASS')
  t.match(text, /ok +180 readings published, 180 PUBACKed, 180 of those arrived/, 'every reading of every sensor arrived')
  t.match(text, /first arrivals in increasing sequence with no gap/)
  t.match(text, /\[outage .*upstream down/, 'the progress shows the upstream down during the outage')
  t.match(text, /\[online .*upstream up/, 'and up before it')
  t.notMatch(text, /\r/, 'no in-place rewriting when the output is not a terminal')
})
