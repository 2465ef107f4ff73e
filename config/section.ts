// The building blocks of the config schema: strict sections that report every error at once, and
// keys of the contract whose feature is not built yet (refused with "not supported yet").
import { z } from 'zod'

export type Shape = z.ZodRawShape

/** The later feature that brings each key made by `later`. */
const laterFeatures = new WeakMap<z.ZodType, string>()

/**
 * A key of the contract whose feature is not built yet. Its value is still checked against its
 * type (so a typo is reported as one); the enclosing `section` refuses its presence. No default.
 */
export function later<T extends z.ZodType> (schema: T, feature: string, description: string) {
  const key = schema.optional().meta({ description: `Not supported yet (${feature}). ${description}` })
  laterFeatures.set(key, feature)
  return key
}

/**
 * A strict section: `built` keys are validated and defaulted; `notYet` keys (made with `later`) are
 * known but refused, and left out of the parsed type so the daemon codes against built keys only.
 * `rules` are cross-field rules.
 *
 * The refusals and rules run even when some keys have errors, so that every error is reported at
 * once; a rule therefore looks at the value defensively (a key that failed holds what was written).
 * That holds as long as no schema inside raises an aborting issue (`abort: true`, `z.int()`):
 * zod skips such checks after one.
 */
export function section<B extends Shape, L extends Shape> (
  built: B,
  notYet: L,
  rules?: (value: Readonly<Record<string, unknown>>, ctx: z.RefinementCtx) => void
) {
  const laterKeys = Object.keys(notYet)
  const features = laterKeys.map((key) => {
    const feature = laterFeatures.get(notYet[key] as z.ZodType)
    if (feature === undefined) throw new Error(`config schema: ${key} is not made with later()`)
    return [key, feature] as const
  })
  const object = z.strictObject({ ...built, ...notYet }).superRefine((value: Record<string, unknown>, ctx) => {
    for (const [key, feature] of features) {
      if (value[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `not supported yet (${feature})` })
    }
    rules?.(value, ctx)
  }, { when: (payload) => isRecord(payload.value) })
  return object.transform((value) => {
    const out: Record<string, unknown> = { ...value }
    for (const key of laterKeys) delete out[key]
    return out as z.output<z.ZodObject<B, z.core.$strict>>
  })
}

export function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
