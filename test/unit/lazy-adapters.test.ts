/**
 * The registries import an adapter, and its SDK, only when a configuration names it (README, Operations: about
 * 35 MB less for a process on the embedded defaults). Checked in a fresh process, where nothing else imported them.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

test('a worker and API on the embedded defaults never load kafkajs, ioredis or pg; naming the kind loads it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'wr-lazy-'));
  try {
    const script = join(dir, 'check.mjs');
    writeFileSync(
      script,
      `
      import { createRequire } from 'node:module';
      const root = ${JSON.stringify(new URL('../../', import.meta.url).pathname)};
      const { buildApp } = await import(root + 'src/app.ts');
      const { createQueue } = await import(root + 'adapters/queue/index.ts');
      const { Config } = await import(root + 'config/schema.ts');
      const { createLogger } = await import(root + 'src/logger.ts');
      const config = Config.parse({
        listen: { webhooks: 0, api: 0, management: 0, host: '127.0.0.1' },
        queue: { kind: 'sqlite', path: ${JSON.stringify(join(dir, 'q.db'))} },
        store: { kind: 'sqlite', path: ${JSON.stringify(join(dir, 's.db'))} },
        sources: [{ id: 'github', kind: 'github', secrets: ['s'] }],
        api: { tokens: [{ name: 'a', token: 'a-token-long-enough-for-the-schema', scopes: ['*'] }] },
        secrets: { encryptionKey: Buffer.alloc(32, 1).toString('base64') },
        log: { level: 'silent' },
      });
      await buildApp(config, { logger: createLogger({ level: 'silent' }), roles: ['receiver', 'worker', 'api'] });
      const loaded = (name) => Object.keys(createRequire(root).cache).some((k) => k.includes('/node_modules/' + name + '/'));
      const before = { kafkajs: loaded('kafkajs'), ioredis: loaded('ioredis'), pg: loaded('pg') };
      await createQueue({ kind: 'redis', url: 'redis://127.0.0.1:1', stream: 's', group: 'g' }, {}).catch(() => {});
      process.stdout.write(JSON.stringify({ before, ioredisAfter: loaded('ioredis') }));
      process.exit(0);
      `,
    );
    const { stdout } = await promisify(execFile)(process.execPath, [script], { timeout: 30_000 });
    const result = JSON.parse(stdout) as { before: Record<string, boolean>; ioredisAfter: boolean };
    assert.deepEqual(result.before, { kafkajs: false, ioredis: false, pg: false });
    assert.equal(result.ioredisAfter, true, 'naming redis loads its adapter: the check can see a loaded SDK');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
