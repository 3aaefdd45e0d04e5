/**
 * Configuration loading: built-in defaults ← `base` (first-run generated values) ← YAML file (`--config` or
 * ROUTER_CONFIG) ← environment `ROUTER_<SECTION>__<KEY>` ← `<key>_FILE` secrets. Everything is injected (argv-derived
 * path, env, readFile) so this module has no side effects; it returns a deep-frozen Config or throws one
 * ROUTER_ERR_CONFIG_INVALID that lists every problem at once.
 *
 * Environment keys are matched against the schema, so `ROUTER_QUEUE__VISIBILITY_TIMEOUT_MS` and
 * `ROUTER_QUEUE__VISIBILITYTIMEOUTMS` both name `queue.visibilityTimeoutMs`; array items are addressed by index
 * (`ROUTER_SOURCES__0__SECRETS='["s1","s2"]'`). An unknown ROUTER_* variable is an error, like an unknown YAML key.
 */
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { RouterError } from '../src/errors.ts';
import { Config } from './schema.ts';

export interface LoadConfigInput {
  /** From `--config`; falls back to env.ROUTER_CONFIG. */
  configPath?: string | undefined;
  env: Readonly<Record<string, string | undefined>>;
  readFile: (path: string) => string;
  /** A layer just above the built-in defaults (the first-run values `serve` generates). */
  base?: Record<string, unknown>;
}

type Json = Record<string, unknown>;
interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
}

const ENV_PREFIX = 'ROUTER_';
const FILE_SUFFIX = '_FILE';
const jsonSchema = z.toJSONSchema(Config, { io: 'input', unrepresentable: 'any' }) as JsonSchema;

export function loadConfig(input: LoadConfigInput): Readonly<Config> {
  const issues: string[] = [];
  let merged: Json = structuredClone(input.base ?? {});

  const path = input.configPath ?? input.env.ROUTER_CONFIG;
  if (path) {
    const fromFile = readYaml(path, input, issues);
    if (fromFile) merged = deepMerge(merged, fromFile);
  }
  applyEnv(merged, input.env, issues);
  resolveFiles(merged, [], input.readFile, issues);

  const result = Config.safeParse(merged);
  if (!result.success) {
    for (const issue of result.error.issues) issues.push(`${formatPath(issue.path) || '(root)'}: ${issue.message}`);
  }
  if (issues.length > 0 || !result.success) {
    throw new RouterError('ROUTER_ERR_CONFIG_INVALID', `invalid configuration:\n  - ${issues.join('\n  - ')}`);
  }
  return deepFreeze(result.data);
}

function readYaml(path: string, input: LoadConfigInput, issues: string[]): Json | undefined {
  let text: string;
  try {
    text = input.readFile(path);
  } catch (err) {
    issues.push(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    return undefined;
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    issues.push(`${path}: not valid YAML (${(err as Error).message.split('\n')[0]})`);
    return undefined;
  }
  if (doc === null || doc === undefined) return {};
  if (!isPlainObject(doc)) {
    issues.push(`${path}: the top level must be a mapping`);
    return undefined;
  }
  return interpolate(doc, input.env, issues, []) as Json;
}

/** `${NAME}` in YAML strings is replaced from the environment; an unset NAME is an error, never an empty secret. */
function interpolate(value: unknown, env: LoadConfigInput['env'], issues: string[], at: (string | number)[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
      const v = env[name];
      if (v === undefined) issues.push(`${formatPath(at)}: environment variable ${name} is not set`);
      return v ?? `\${${name}}`;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, issues, [...at, i]));
  if (isPlainObject(value)) {
    const out: Json = {};
    for (const [k, v] of Object.entries(value)) out[k] = interpolate(v, env, issues, [...at, k]);
    return out;
  }
  return value;
}

function applyEnv(target: Json, env: LoadConfigInput['env'], issues: string[]): void {
  for (const [name, raw] of Object.entries(env).sort(([a], [b]) => a.localeCompare(b))) {
    if (!name.startsWith(ENV_PREFIX) || name === 'ROUTER_CONFIG' || raw === undefined) continue;
    const segments = name.slice(ENV_PREFIX.length).split('__');
    const last = segments.at(-1) ?? '';
    const isFile = last.endsWith(FILE_SUFFIX);
    if (isFile) segments[segments.length - 1] = last.slice(0, -FILE_SUFFIX.length);

    const resolved = resolveEnvPath(segments);
    if (!resolved) {
      issues.push(`${name}: does not name a configuration key`);
      continue;
    }
    const keys = [...resolved.keys];
    if (isFile) keys[keys.length - 1] = `${String(keys.at(-1))}${FILE_SUFFIX}`;
    setAt(target, keys, isFile ? raw : parseEnvValue(raw, resolved.leaf));
  }
}

/** Walks the JSON Schema, matching each env segment to a key case- and underscore-insensitively. */
function resolveEnvPath(segments: string[]): { keys: (string | number)[]; leaf: JsonSchema } | undefined {
  let node: JsonSchema | undefined = jsonSchema;
  const keys: (string | number)[] = [];
  for (const segment of segments) {
    if (!node) return undefined;
    if (/^\d+$/.test(segment) && node.items) {
      keys.push(Number(segment));
      node = node.items;
      continue;
    }
    const wanted = normalise(segment);
    const candidates: JsonSchema[] = [node, ...(node.anyOf ?? []), ...(node.oneOf ?? [])];
    let next: JsonSchema | undefined;
    for (const candidate of candidates) {
      const match = Object.keys(candidate.properties ?? {}).find((k) => normalise(k) === wanted);
      if (match !== undefined) {
        keys.push(match);
        next = candidate.properties?.[match];
        break;
      }
    }
    if (!next) return undefined;
    node = next;
  }
  return node ? { keys, leaf: node } : undefined;
}

function parseEnvValue(raw: string, leaf: JsonSchema): unknown {
  const type = Array.isArray(leaf.type) ? leaf.type[0] : leaf.type;
  switch (type) {
    case 'integer':
    case 'number':
      return raw.trim() === '' ? raw : Number(raw);
    case 'boolean':
      return raw === 'true' ? true : raw === 'false' ? false : raw;
    case 'array':
    case 'object':
      try {
        return JSON.parse(raw);
      } catch {
        // A plain comma-separated list is the friendlier way to write a list of strings in an env var.
        return type === 'array' ? raw.split(',').map((s) => s.trim()).filter(Boolean) : raw;
      }
    default:
      return raw;
  }
}

/** Replaces every `<key>_FILE: path` with `<key>: <file content>` (one item per line for list-valued keys). */
function resolveFiles(node: unknown, at: (string | number)[], readFile: (p: string) => string, issues: string[]): void {
  if (Array.isArray(node)) {
    node.forEach((v, i) => resolveFiles(v, [...at, i], readFile, issues));
    return;
  }
  if (!isPlainObject(node)) return;
  for (const key of Object.keys(node)) {
    if (!key.endsWith(FILE_SUFFIX)) {
      resolveFiles(node[key], [...at, key], readFile, issues);
      continue;
    }
    const target = key.slice(0, -FILE_SUFFIX.length);
    const where = formatPath([...at, key]);
    const file = node[key];
    delete node[key];
    if (target in node) {
      issues.push(`${where}: give either ${target} or ${key}, not both`);
      continue;
    }
    const paths = Array.isArray(file) ? file : [file];
    const contents: string[] = [];
    for (const p of paths) {
      if (typeof p !== 'string') {
        issues.push(`${where}: must be a file path`);
        continue;
      }
      try {
        contents.push(readFile(p).replace(/\r?\n$/, ''));
      } catch (err) {
        issues.push(`${where}: cannot read ${p} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      }
    }
    const listValued = target === 'secrets';
    node[target] = listValued ? contents.flatMap((c) => c.split(/\r?\n/).filter(Boolean)) : contents[0];
  }
}

function setAt(target: Json, keys: (string | number)[], value: unknown): void {
  let node: Json | unknown[] = target;
  for (const [i, key] of keys.entries()) {
    const last = i === keys.length - 1;
    const container = node as Record<string | number, unknown>;
    if (last) {
      container[key] = value;
      return;
    }
    if (typeof container[key] !== 'object' || container[key] === null) {
      container[key] = typeof keys[i + 1] === 'number' ? [] : {};
    }
    node = container[key] as Json;
  }
}

function deepMerge(base: Json, over: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isPlainObject(v) && isPlainObject(out[k]) ? deepMerge(out[k] as Json, v) : v;
  }
  return out;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

const normalise = (s: string) => s.replaceAll('_', '').toLowerCase();
const isPlainObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const formatPath = (path: readonly PropertyKey[]) => path.map((p) => String(p)).join('.');
