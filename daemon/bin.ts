#!/usr/bin/env node
import { main } from './cli.js'

// The process shell: run the command, turn its result into an exit code. No logic lives here.
main(process.argv.slice(2), process).then((code) => {
  process.exitCode = code
}, (err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
