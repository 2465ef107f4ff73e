// Writes config/sluice.schema.json, the JSON Schema of sluice.yaml, and docs/config.md, the config
// reference, from the zod schema in config/.
// Run after changing config/schema.ts (test/config.test.ts fails while either file is stale):
//   npm run build && node dist/scripts/gen-schema.js
// or straight from the sources with the TypeScript loader tap ships:
//   node --import=@isaacs/ts-node-temp-fork-for-pr-2009/import scripts/gen-schema.ts
// With --check it writes nothing and exits 1 if a file is stale (for CI).
import { existsSync } from 'node:fs'
import { readFile, rename, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { configJsonSchemaText } from '../config/json-schema.js'
import { configReferenceText } from '../config/reference.js'

/** The package root: the first folder up from this file that holds package.json (works from dist/ too). */
function packageRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error('gen-schema: no package.json above this script')
    dir = parent
  }
  return dir
}

/** The generated files, each with its text. */
function generated (root: string): Array<[string, string]> {
  return [
    [join(root, 'config', 'sluice.schema.json'), configJsonSchemaText()],
    [join(root, 'docs', 'config.md'), configReferenceText()]
  ]
}

async function main (): Promise<number> {
  const check = process.argv.includes('--check')
  let stale = 0
  for (const [file, text] of generated(packageRoot())) {
    if (check) {
      const current = await readFile(file, 'utf8').catch(() => '')
      if (current === text) continue
      process.stderr.write(`${file} is stale: run scripts/gen-schema\n`)
      stale++
      continue
    }
    const tmp = `${file}.tmp`
    await writeFile(tmp, text)
    await rename(tmp, file)
    process.stdout.write(`wrote ${file}\n`)
  }
  return stale === 0 ? 0 : 1
}

main().then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`${String((err as Error).stack ?? err)}\n`)
  process.exitCode = 1
})
