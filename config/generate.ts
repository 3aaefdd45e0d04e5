/**
 * Generates the committed copies of the configuration schema: `config/reference.yaml` (every key, its default and
 * its description) and `config/config.schema.json` (JSON Schema for editors and for the Helm chart's values schema).
 * `npm run gen:config` writes them; test/unit/config-reference.test.ts fails when the committed copies drift.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { Config } from './schema.ts';

interface Node {
  type?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, Node>;
  required?: string[];
  items?: Node;
  oneOf?: Node[];
}

export function configJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(Config, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

/** Values shown for keys that have no default (they must be configured). */
const examples: Record<string, string> = {
  sources: [
    '',
    '  - id: github                 # route: POST /webhooks/github',
    '    kind: github               # github | gitlab | standard-webhooks',
    '    secrets: ["${GITHUB_WEBHOOK_SECRET}"]   # two during a rotation; or secrets_FILE: /run/secrets/github',
    '    maxBodyBytes: 26214400',
  ].join('\n'),
};

export function referenceYaml(): string {
  const root = configJsonSchema() as Node;
  const lines = [
    '# webhook-router reference configuration, generated from config/schema.ts by `npm run gen:config`. Do not edit.',
    '# Every key with its default. Layers: defaults <- this file (--config / ROUTER_CONFIG) <- ROUTER_<SECTION>__<KEY>',
    '# environment variables <- <key>_FILE (read a secret from a file). ${NAME} in strings is taken from the environment.',
    '',
  ];
  renderObject(root, 0, lines);
  return `${lines.join('\n')}\n`;
}

function renderObject(node: Node, indent: number, lines: string[]): void {
  for (const [key, child] of Object.entries(node.properties ?? {})) renderKey(key, child, indent, lines);
}

function renderKey(key: string, node: Node, indent: number, lines: string[]): void {
  const pad = ' '.repeat(indent);
  for (const line of describe(node)) lines.push(`${pad}# ${line}`);
  if (node.oneOf) {
    const chosen = (node.default as { kind?: string } | undefined)?.kind;
    lines.push(`${pad}${key}:`);
    for (const option of node.oneOf) {
      const kind = option.properties?.kind?.const;
      const body: string[] = [];
      renderObject(option, indent + 2, body);
      if (kind === chosen) {
        lines.push(`${pad}  # kind "${String(kind)}" (default)${option.description ? `: ${option.description}` : ''}`);
        lines.push(...body);
      } else {
        lines.push(`${pad}  # kind "${String(kind)}"${option.description ? `: ${option.description}` : ''}`);
        lines.push(...body.map((l) => `${pad}  # ${l.slice(indent + 2)}`));
      }
    }
    return;
  }
  if (node.properties) {
    lines.push(`${pad}${key}:`);
    renderObject(node, indent + 2, lines);
    return;
  }
  if (key in examples) {
    lines.push(`${pad}${key}:${examples[key]}`);
    return;
  }
  const value = node.default ?? node.const;
  lines.push(value === undefined ? `${pad}# ${key}: (required)` : `${pad}${key}: ${JSON.stringify(value)}`);
}

function describe(node: Node): string[] {
  const parts: string[] = [];
  if (node.description) parts.push(node.description);
  if (node.enum) parts.push(`One of: ${node.enum.map(String).join(', ')}.`);
  return parts;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = new URL('.', import.meta.url);
  writeFileSync(new URL('reference.yaml', dir), referenceYaml());
  writeFileSync(new URL('config.schema.json', dir), `${JSON.stringify(configJsonSchema(), null, 2)}\n`);
}
