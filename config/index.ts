// config/: the schema, defaults, loading and errors of sluice's config file. A leaf: it imports
// nothing else of sluice's.
export { ConfigError, type ConfigIssue } from './errors.js'
export { configJsonSchema, configJsonSchemaText } from './json-schema.js'
export { loadConfig, parseConfig, parseYaml, PASSWORD_ENV, readPasswordFile, redactConfig, resolveSecrets, validateConfig } from './load.js'
export { configSchema, type SluiceConfig, type SluiceConfigInput } from './schema.js'
export { formatListen, type ListenAddress, parseDuration, parseSize } from './values.js'
