// The config reference for operators (docs/config.md), generated from the same JSON Schema that
// ships as config/sluice.schema.json, so the reference cannot drift from what `sluice check`
// accepts. scripts/gen-schema.ts writes both files; a test fails when either is stale.
import { configJsonSchema } from './json-schema.js'

interface SchemaNode {
  description?: string
  default?: unknown
  type?: string | string[]
  enum?: unknown[]
  const?: unknown
  anyOf?: SchemaNode[]
  oneOf?: SchemaNode[]
  properties?: Record<string, SchemaNode>
  required?: string[]
  items?: SchemaNode
  minimum?: number
  maximum?: number
}

interface Row { path: string, type: string, default: string, description: string }

/** A short name for what a key takes, as an operator writes it in YAML. */
function typeOf (node: SchemaNode): string {
  if (node.enum !== undefined) return node.enum.map((v) => JSON.stringify(v)).join(' | ')
  if (node.const !== undefined) return JSON.stringify(node.const)
  const alternatives = node.anyOf ?? node.oneOf
  if (alternatives !== undefined) return [...new Set(alternatives.map(typeOf))].join(' or ')
  if (node.type === 'array') return node.items?.type === 'object' ? 'list of entries' : `list of ${node.items === undefined ? 'values' : typeOf(node.items)}`
  if (Array.isArray(node.type)) return node.type.join(' or ')
  if (node.type === 'object') return node.properties === undefined ? 'map' : 'section'
  return node.type ?? 'value'
}

function walk (node: SchemaNode, path: string, required: boolean, rows: Row[]): void {
  if (path !== '') {
    rows.push({
      path,
      type: typeOf(node),
      default: node.default === undefined ? (required ? 'required' : '') : JSON.stringify(node.default),
      description: node.description ?? ''
    })
  }
  const object = node.type === 'array' ? node.items : node
  if (object?.properties === undefined) return
  const prefix = node.type === 'array' ? `${path}[]` : path
  for (const [key, child] of Object.entries(object.properties)) {
    walk(child, prefix === '' ? key : `${prefix}.${key}`, object.required?.includes(key) ?? false, rows)
  }
}

const cell = (text: string): string => text.replaceAll('|', '\\|').replaceAll('\n', ' ')

/** The exact text of docs/config.md. */
export function configReferenceText (): string {
  const schema = configJsonSchema() as SchemaNode
  const rows: Row[] = []
  walk(schema, '', false, rows)
  const sections = new Map<string, Row[]>()
  for (const row of rows) {
    const top = row.path.split(/[.[]/)[0] ?? row.path
    if (!sections.has(top)) sections.set(top, [])
    sections.get(top)?.push(row)
  }
  const out = [
    '# Configuration reference',
    '',
    '<!-- Generated from config/schema.ts by scripts/gen-schema.ts; do not edit by hand. -->',
    '',
    `${schema.description ?? ''}`,
    '',
    'Every key below is checked at start (`sluice check -c FILE` checks without starting): an unknown',
    'key, a wrong type or an impossible value is refused with its path, and every error is reported at',
    'once (exit 2). [`config/example.yaml`](../config/example.yaml) shows every key in place with',
    'comments; [`config/sluice.schema.json`](../config/sluice.schema.json) is the same schema for editors.',
    ''
  ]
  for (const [top, list] of sections) {
    out.push(`## \`${top}\``, '', '| key | takes | default | meaning |', '| --- | --- | --- | --- |')
    for (const row of list) {
      out.push(`| \`${row.path}\` | ${cell(row.type)} | ${row.default === '' || row.default === 'required' ? row.default : `\`${cell(row.default)}\``} | ${cell(row.description)} |`)
    }
    out.push('')
  }
  return out.join('\n')
}
