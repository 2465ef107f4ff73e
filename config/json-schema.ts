// The JSON Schema of the config file that ships with the package (config/sluice.schema.json), so
// editors can complete and check sluice.yaml. Generated from the zod schema, never edited by hand:
// scripts/gen-schema.ts writes it, and a test fails when the checked-in file is stale.
import { z } from 'zod'
import { configSchema } from './schema.js'

/** JSON Schema (draft 2020-12) of what the YAML file may hold: sizes, durations, addresses as written. */
export function configJsonSchema (): Record<string, unknown> {
  return z.toJSONSchema(configSchema, { io: 'input', target: 'draft-2020-12' }) as Record<string, unknown>
}

/** The exact text of config/sluice.schema.json. */
export function configJsonSchemaText (): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`
}
