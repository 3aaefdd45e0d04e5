/**
 * First run of `serve` with no configuration at all (design §2): generate a random webhook secret for a `github`
 * source, an admin API token (scope `*`) and the key that encrypts subscriber secrets at rest; keep them in
 * ./data/first-run.json (mode 0600) and reuse them on later runs. No secret is ever a built-in default. A file from an
 * older release that lacks the token or the key gets the missing values added (and the token printed once).
 * The returned layer sits just above the built-in defaults, so a config file or ROUTER_* variables still win.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface FirstRun {
  readonly layer: Record<string, unknown>;
  /** True when the webhook secret was generated just now (print it once). */
  readonly created: boolean;
  /** True when the admin token was generated just now (print it once). */
  readonly tokenCreated: boolean;
  readonly githubSecret: string;
  readonly adminToken: string;
  readonly file: string;
}

interface Stored {
  githubSecret?: unknown;
  adminToken?: unknown;
  encryptionKey?: unknown;
}

const usable = (v: unknown, min: number): v is string => typeof v === 'string' && v.length >= min;

export function firstRunLayer(dataDir: string): FirstRun {
  const file = join(dataDir, 'first-run.json');
  let stored: Stored = {};
  if (existsSync(file)) stored = JSON.parse(readFileSync(file, 'utf8')) as Stored;
  const created = !usable(stored.githubSecret, 32);
  const tokenCreated = !usable(stored.adminToken, 32);
  const keyCreated = typeof stored.encryptionKey !== 'string' || Buffer.from(stored.encryptionKey, 'base64').length !== 32;
  if (created || tokenCreated || keyCreated) {
    stored = {
      githubSecret: created ? randomBytes(32).toString('base64url') : stored.githubSecret,
      adminToken: tokenCreated ? `wr_${randomBytes(32).toString('base64url')}` : stored.adminToken,
      encryptionKey: keyCreated ? randomBytes(32).toString('base64') : stored.encryptionKey,
    };
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(file, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600 });
    chmodSync(file, 0o600); // writeFileSync's mode applies only when it creates the file
  }
  const githubSecret = stored.githubSecret as string;
  const adminToken = stored.adminToken as string;
  const layer = {
    queue: { kind: 'sqlite', path: join(dataDir, 'queue.db') },
    store: { kind: 'sqlite', path: join(dataDir, 'router.db') },
    sources: [{ id: 'github', kind: 'github', secrets: [githubSecret] }],
    api: { tokens: [{ name: 'admin', token: adminToken, scopes: ['*'] }] },
    secrets: { encryptionKey: stored.encryptionKey as string },
  };
  return { layer, created, tokenCreated, githubSecret, adminToken, file };
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

/** Creating a subscriber through the API with the generated admin token. */
export function apiCurlExample(token: string, port: number): string {
  return [
    `curl -s http://127.0.0.1:${port}/v1/subscribers \\`,
    `  -H 'Authorization: Bearer ${token}' -H 'Content-Type: application/json' \\`,
    `  --data '{"name":"example","filter":{"events":["ping","push"]},"transport":{"kind":"https","url":"https://example.com/hooks"}}'`,
  ].join('\n');
}
