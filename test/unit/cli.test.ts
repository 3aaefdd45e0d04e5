import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CommanderError } from 'commander';
import { type CliIo, buildCli } from '../../src/cli.ts';

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
      started.push(`webhooks:${app.ports.webhooks}`);
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
  for (const command of ['serve', 'receiver', 'config']) assert.match(r.out, new RegExp(`\\b${command}\\b`));
  const config = await run(['config', '--help']);
  assert.match(config.out, /check/);
  assert.match(config.out, /print/);
});

test('serve with no configuration generates a secret once (mode 0600) and reuses it', async () => {
  const env = { ROUTER_LISTEN__WEBHOOKS: '0', ROUTER_LISTEN__MANAGEMENT: '0', ROUTER_LISTEN__HOST: '127.0.0.1', ROUTER_LOG__LEVEL: 'silent' };
  const dataDir = join(dir, 'first-run');
  const first = await run(['serve'], env, dataDir);
  assert.equal(first.exitCode, 0, first.err);
  assert.equal(first.started.length, 1);
  const stored = JSON.parse(readFileSync(join(dataDir, 'first-run.json'), 'utf8')) as { githubSecret: string };
  assert.equal(statSync(join(dataDir, 'first-run.json')).mode & 0o777, 0o600);
  assert.ok(first.out.includes(stored.githubSecret));
  assert.match(first.out, /curl -i http:\/\/127\.0\.0\.1:0\/webhooks\/github/);
  assert.ok(statSync(join(dataDir, 'queue.db')).isFile(), 'the embedded queue lives under the data dir');

  const second = await run(['serve'], env, dataDir);
  assert.equal(second.exitCode, 0);
  assert.equal(second.out, '', 'the secret is printed only once');
  assert.equal(JSON.parse(readFileSync(join(dataDir, 'first-run.json'), 'utf8')).githubSecret, stored.githubSecret);
});
