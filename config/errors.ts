/** One problem found in a config: where, and what was expected. */
export interface ConfigIssue {
  /** Dotted key path (`buffer.maxBytes`, `ingest.topics[1]`), or `(root)` for the file as a whole. */
  readonly path: string
  readonly message: string
}

export const ROOT_PATH = '(root)'

/**
 * A config that cannot be used: refused at start with every problem found, never only the first.
 * `sluice check` and `sluice run` turn it into exit code 2.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  readonly code = 'SLUICE_CONFIG_INVALID' as const
  readonly errors: readonly ConfigIssue[]
  /** The file the config came from, when it came from a file. */
  readonly file: string | undefined

  constructor (errors: readonly ConfigIssue[], options: { file?: string, cause?: unknown } = {}) {
    const list = Object.freeze(errors.map((e) => Object.freeze({ path: e.path, message: e.message })))
    const where = options.file === undefined ? '' : ` in ${options.file}`
    const count = list.length === 1 ? '1 error' : `${list.length} errors`
    super(`invalid config${where} (${count}):\n${formatIssues(list)}`, { cause: options.cause })
    this.errors = list
    this.file = options.file
  }

  /** One line per error: `path: message`. */
  format (): string {
    return formatIssues(this.errors)
  }
}

function formatIssues (errors: readonly ConfigIssue[]): string {
  return errors.map((e) => `${e.path}: ${e.message}`).join('\n')
}

/** `['ingest', 'topics', 1]` -> `ingest.topics[1]`; `[]` -> `(root)`. */
export function formatPath (path: readonly PropertyKey[]): string {
  let out = ''
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`
    else if (typeof part === 'string' && /^[A-Za-z_$][\w$-]*$/.test(part)) out += out === '' ? part : `.${part}`
    else out += `[${JSON.stringify(String(part))}]`
  }
  return out === '' ? ROOT_PATH : out
}
