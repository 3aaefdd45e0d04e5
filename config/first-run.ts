/**
 * First run of `serve` with no configuration at all: generate a random webhook secret for a `github` source, keep it
 * in ./data/first-run.json (mode 0600) and reuse it on later runs. No secret is ever a built-in default.
 * The returned layer sits just above the built-in defaults, so a config file or ROUTER_* variables still win.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface FirstRun {
  readonly layer: Record<string, unknown>;
  /** True when the secret was generated just now (print it once). */
  readonly created: boolean;
  readonly githubSecret: string;
  readonly file: string;
}

export function firstRunLayer(dataDir: string): FirstRun {
  const file = join(dataDir, 'first-run.json');
  let created = false;
  let stored: { githubSecret?: unknown } = {};
  if (existsSync(file)) stored = JSON.parse(readFileSync(file, 'utf8')) as typeof stored;
  if (typeof stored.githubSecret !== 'string' || stored.githubSecret.length < 32) {
    stored = { githubSecret: randomBytes(32).toString('base64url') };
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(file, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600 });
    chmodSync(file, 0o600); // writeFileSync's mode applies only when it creates the file
    created = true;
  }
  const githubSecret = stored.githubSecret as string;
  const layer = {
    queue: { kind: 'sqlite', path: join(dataDir, 'queue.db') },
    sources: [{ id: 'github', kind: 'github', secrets: [githubSecret] }],
  };
  return { layer, created, githubSecret, file };
}

/** Applies when nothing configures sources: no --config, no ROUTER_CONFIG, no ROUTER_SOURCES* variable. */
export function wantsFirstRun(configPath: string | undefined, env: Readonly<Record<string, string | undefined>>): boolean {
  return !configPath && !env.ROUTER_CONFIG && !Object.keys(env).some((k) => k.startsWith('ROUTER_SOURCES'));
}

export function curlExample(secret: string, port: number): string {
  return [
    `BODY='{"zen":"Keep it logically awesome.","hook_id":1}'`,
    `SIG=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac '${secret}' | sed 's/^.*= //')`,
    `curl -i http://127.0.0.1:${port}/webhooks/github \\`,
    `  -H 'Content-Type: application/json' -H 'X-GitHub-Event: ping' -H 'X-GitHub-Hook-ID: 1' \\`,
    `  -H "X-GitHub-Delivery: $(date +%s%N)" -H "X-Hub-Signature-256: sha256=$SIG" \\`,
    `  --data "$BODY"`,
  ].join('\n');
}
