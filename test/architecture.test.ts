/**
 * Who may import whom (docs/architecture.md): config/ and buffer/ import nothing of sluice's,
 * adapters/ never reach into buffer/ or daemon/, only daemon/ wires everything, and nothing in
 * daemon/ imports in a circle. Type imports count too: a type import is still a dependency a
 * reader has to follow.
 */
import t from 'tap'
import { readFile, readdir } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** The folders each part may import from, besides its own. */
const allowed: Record<string, readonly string[]> = {
  config: [],
  buffer: [],
  adapters: ['config'],
  daemon: ['config', 'buffer', 'adapters']
}

async function sources (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(join(root, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...await sources(path))
    else if (entry.name.endsWith('.ts')) out.push(path)
  }
  return out
}

/** The files a file's relative imports (static, type-only, re-exports, dynamic) land in, from the root. */
async function importedFiles (file: string): Promise<string[]> {
  const text = await readFile(join(root, file), 'utf8')
  const files: string[] = []
  for (const match of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'|import\(\s*'(\.[^']+)'\s*\)/g)) {
    const spec = match[1] ?? match[2]
    if (spec === undefined) continue
    files.push(relative(root, resolve(root, dirname(file), spec)).replace(/\.js$/, '.ts'))
  }
  return files
}

/** The project folders a file's relative imports land in. */
async function importedParts (file: string): Promise<string[]> {
  return (await importedFiles(file)).map((target) => target.split('/')[0] ?? target)
}

t.test('each part imports only what it may', async (t) => {
  let checked = 0
  for (const [part, may] of Object.entries(allowed)) {
    for (const file of await sources(part)) {
      for (const target of await importedParts(file)) {
        checked++
        if (target === part) continue
        t.ok(may.includes(target), `${file} imports from ${target}/`)
      }
    }
  }
  t.ok(checked > 100, `read the imports (${checked})`)
})

t.test('the check sees a forbidden import', async (t) => {
  // The same reader, on a file that does what buffer/ must not.
  const parts = await importedParts('daemon/gateway.ts')
  t.ok(parts.includes('buffer') && parts.includes('adapters'), 'it finds cross-folder imports')
})

/**
 * The cycles a depth-first walk of an import graph meets (at least one whenever the graph has
 * any), each once, as the files around it with the first repeated at the end.
 */
function cycles (graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const found = new Map<string, string[]>()
  const path: string[] = []
  const onPath = new Set<string>()
  const done = new Set<string>()
  const visit = (file: string): void => {
    if (onPath.has(file)) {
      const cycle = path.slice(path.indexOf(file))
      // One cycle, whichever file the walk entered it by: keyed by its files in order from the smallest.
      const start = cycle.indexOf([...cycle].sort()[0] ?? file)
      const turned = [...cycle.slice(start), ...cycle.slice(0, start)]
      found.set(turned.join(' -> '), [...turned, turned[0] ?? file])
      return
    }
    if (done.has(file)) return
    path.push(file)
    onPath.add(file)
    for (const next of graph.get(file) ?? []) visit(next)
    path.pop()
    onPath.delete(file)
    done.add(file)
  }
  for (const file of graph.keys()) visit(file)
  return [...found.values()]
}

t.test('nothing in daemon/ imports in a circle, type imports included', async (t) => {
  const graph = new Map<string, string[]>()
  for (const file of await sources('daemon')) graph.set(file, (await importedFiles(file)).filter((f) => f.startsWith('daemon/')))
  t.ok(graph.size > 15, `read the daemon's files (${graph.size})`)
  for (const cycle of cycles(graph)) t.fail(`import cycle: ${cycle.join(' -> ')}`)
})

t.test('the cycle check sees a cycle', async (t) => {
  const graph = new Map([
    ['a.ts', ['b.ts']], ['b.ts', ['c.ts', 'd.ts']], ['c.ts', ['a.ts']], ['d.ts', []], ['e.ts', ['e.ts']]
  ])
  t.strictSame(cycles(graph), [['a.ts', 'b.ts', 'c.ts', 'a.ts'], ['e.ts', 'e.ts']])
  t.strictSame(cycles(new Map([['a.ts', ['b.ts']], ['b.ts', []]])), [], 'none in a tree')
})
