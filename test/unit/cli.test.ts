import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CommanderError } from 'commander';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import { type CliIo, buildCli } from '../../src/cli.ts';
import { createKeyring } from '../../src/secrets/keyring.ts';
import { withSecretEncryption } from '../../src/secrets/store.ts';
import { SubscriberSpec } from '../../src/subscribers/model.ts';

const dir = mkdtempSync(join(tmpdir(), 'wr-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function run(args: string[], env: Record<string, string> = {}, dataDir = join(dir, 'data')) {
  const out: string[] = [];
  const err: string[] = [];
  let exitCode = 0;
  const started: string[] = [];
  const io: CliIo = {
    env,
    dataDir,
    readFile: (p) => readFileSync(p, 'utf8'),
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    stderrIsTTY: false,
    setExitCode: (c) => {
      exitCode = c;
    },
    async runService(app) {
      await app.start();
      started.push(`webhooks:${app.ports.webhooks} api:${app.ports.api}`);
      await app.close();
    },
  };
  try {
    await buildCli(io).parseAsync(['node', 'webhook-router', ...args]);
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    exitCode = e.exitCode;
  }
  return { out: out.join(''), err: err.join(''), exitCode, started };
}

const validYaml = join(dir, 'valid.yaml');
writeFileSync(validYaml, 'queue: { kind: memory }\nsources: [{ id: gh, kind: github, secrets: [TOPSECRET-VALUE] }]\n');

test('config check accepts a valid file', async () => {
  const r = await run(['--config', validYaml, 'config', 'check']);
  assert.equal(r.exitCode, 0);
  assert.match(r.out, /configuration is valid/);
});

test('config check lists every problem and exits 1', async () => {
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'queue: { kind: nope }\nlisten: { webhooks: -1 }\n');
  const r = await run(['--config', bad, 'config', 'check']);
  assert.equal(r.exitCode, 1);
  assert.match(r.err, /queue\.kind/);
  assert.match(r.err, /listen\.webhooks/);
  assert.match(r.err, /sources/);
});

test('config print shows defaults and redacts secrets', async () => {
  const r = await run(['--config', validYaml, 'config', 'print']);
  assert.equal(r.exitCode, 0);
  assert.match(r.out, /maxBodyBytes: 26214400/);
  assert.match(r.out, /\[redacted\]/);
  assert.ok(!r.out.includes('TOPSECRET-VALUE'));
});

test('--help explains every command', async () => {
  const r = await run(['--help']);
  for (const command of ['serve', 'receiver', 'worker', 'api', 'config']) assert.match(r.out, new RegExp(`\\b${command}\\b`));
  const config = await run(['config', '--help']);
  assert.match(config.out, /check/);
  assert.match(config.out, /print/);
});

const serveEnv = {
  ROUTER_LISTEN__WEBHOOKS: '0',
  ROUTER_LISTEN__API: '0',
  ROUTER_LISTEN__MANAGEMENT: '0',
  ROUTER_LISTEN__HOST: '127.0.0.1',
  ROUTER_LOG__LEVEL: 'silent',
};

interface FirstRunFile {
  githubSecret: string;
  adminToken: string;
  encryptionKey: string;
}

test('serve with no configuration generates a secret, an admin token and a key once (mode 0600) and reuses them', async () => {
  const dataDir = join(dir, 'first-run');
  const first = await run(['serve'], serveEnv, dataDir);
  assert.equal(first.exitCode, 0, first.err);
  assert.equal(first.started.length, 1);
  assert.match(first.started[0] as string, /api:\d+/, 'serve runs the API too');
  const stored = JSON.parse(readFileSync(join(dataDir, 'first-run.json'), 'utf8')) as FirstRunFile;
  assert.equal(statSync(join(dataDir, 'first-run.json')).mode & 0o777, 0o600);
  assert.ok(first.out.includes(stored.githubSecret));
  assert.ok(first.out.includes(stored.adminToken), 'the admin token is printed once');
  assert.ok(!first.out.includes(stored.encryptionKey), 'the encryption key is never printed');
  assert.equal(Buffer.from(stored.encryptionKey, 'base64').length, 32);
  assert.match(first.out, /curl -i http:\/\/127\.0\.0\.1:0\/webhooks\/github/);
  assert.match(first.out, /Authorization: Bearer /);
  assert.ok(statSync(join(dataDir, 'queue.db')).isFile(), 'the embedded queue lives under the data dir');
  assert.ok(statSync(join(dataDir, 'router.db')).isFile(), 'the embedded store lives under the data dir');

  const second = await run(['serve'], serveEnv, dataDir);
  assert.equal(second.exitCode, 0);
  assert.equal(second.out, '', 'the secret and the token are printed only once');
  assert.deepEqual(JSON.parse(readFileSync(join(dataDir, 'first-run.json'), 'utf8')), stored);
});

test('a first-run file from before the API gets a token and a key added, keeping its webhook secret', async () => {
  const dataDir = join(dir, 'first-run-upgrade');
  mkdirSync(dataDir, { recursive: true });
  const githubSecret = 'an-older-release-generated-this-secret-0123456789';
  writeFileSync(join(dataDir, 'first-run.json'), JSON.stringify({ githubSecret }), { mode: 0o600 });
  const r = await run(['serve'], serveEnv, dataDir);
  assert.equal(r.exitCode, 0, r.err);
  const stored = JSON.parse(readFileSync(join(dataDir, 'first-run.json'), 'utf8')) as FirstRunFile;
  assert.equal(stored.githubSecret, githubSecret);
  assert.ok(r.out.includes(stored.adminToken));
  assert.ok(!r.out.includes(githubSecret), 'the webhook secret was printed on its own first run');
});

test('the api command refuses to start without tokens and an encryption key', async () => {
  const yaml = join(dir, 'no-api.yaml');
  writeFileSync(yaml, 'queue: { kind: memory }\nsources: [{ id: gh, kind: github, secrets: [s] }]\nlog: { level: silent }\n');
  const r = await run(['--config', yaml, 'api']);
  assert.equal(r.exitCode, 1);
  assert.match(r.err, /ROUTER_ERR_CONFIG_INVALID/);
  assert.match(r.err, /secrets\.encryptionKey/);
  assert.match(r.err, /api\.tokens/);
  assert.deepEqual(r.started, []);
});

test('the api command serves the API with a configured token and key', async () => {
  const yaml = join(dir, 'api.yaml');
  const key = Buffer.alloc(32, 7).toString('base64');
  writeFileSync(
    yaml,
    [
      'queue: { kind: memory }',
      `store: { kind: sqlite, path: ${JSON.stringify(join(dir, 'api-store', 'router.db'))} }`,
      'sources: [{ id: gh, kind: github, secrets: [s] }]',
      'listen: { api: 0, management: 0, host: 127.0.0.1 }',
      'api: { tokens: [{ name: ops, token: a-token-of-sixteen-chars-or-more, scopes: ["*"] }] }',
      `secrets: { encryptionKey: ${JSON.stringify(key)} }`,
      'log: { level: silent }',
    ].join('\n'),
  );
  // A fresh store must be migrated first: roles other than serve refuse a schema that is behind.
  const migrated = await run(['--config', yaml, 'migrate']);
  assert.equal(migrated.exitCode, 0, migrated.err);
  const r = await run(['--config', yaml, 'api']);
  assert.equal(r.exitCode, 0, r.err);
  assert.match(r.started[0] as string, /webhooks:undefined api:\d+/, 'the api command runs no receiver');
});

test('secrets reencrypt moves every subscriber secret to the current key', async () => {
  const oldKey = Buffer.alloc(32, 1).toString('base64');
  const newKey = Buffer.alloc(32, 2).toString('base64');
  const storePath = join(dir, 'reencrypt', 'router.db');
  const raw = createSqliteStore({ kind: 'sqlite', path: storePath });
  await raw.connect();
  await raw.migrate();
  const spec = SubscriberSpec.parse({ name: 'a', transport: { kind: 'https', url: 'https://hooks.example.com/' } });
  await withSecretEncryption(raw, createKeyring({ encryptionKey: oldKey })).createSubscriber({ ...spec, id: 'sub_a', secrets: { current: 'whsec_a' } }, Date.now());

  const yaml = join(dir, 'reencrypt.yaml');
  writeFileSync(
    yaml,
    [
      'queue: { kind: memory }',
      `store: { kind: sqlite, path: ${JSON.stringify(storePath)} }`,
      'sources: [{ id: gh, kind: github, secrets: [s] }]',
      `secrets: { encryptionKey: ${JSON.stringify(newKey)}, previousKeys: [${JSON.stringify(oldKey)}] }`,
    ].join('\n'),
  );
  const r = await run(['--config', yaml, 'secrets', 'reencrypt']);
  assert.equal(r.exitCode, 0, r.err);
  assert.match(r.out, /re-encrypted the secrets of 1 subscriber/);
  const withNewKeyOnly = withSecretEncryption(raw, createKeyring({ encryptionKey: newKey }));
  assert.equal((await withNewKeyOnly.getSubscriber('sub_a'))?.secrets.current, 'whsec_a');
  await raw.close();
});
