/**
 * How the router is started: the `webhook-router` bin's shebang sets the environment and the Node flags, `npm start`
 * (package.json) passes the same flags (and no variables: npm may run it under a shell without `NAME=value cmd`, such
 * as Windows' cmd.exe). The benchmarks read the shebang itself (benchmarks/shipped-runtime.ts).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseRuntime, shippedRuntime } from '../../benchmarks/shipped-runtime.ts';

const root = new URL('../../', import.meta.url);

test('npm start runs node with the flags of the bin, and the bin sets MALLOC_ARENA_MAX=2', () => {
  const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { scripts: Record<string, string> };
  const start = parseRuntime(pkg.scripts.start?.trim().split(/\s+/) ?? []);
  const bin = shippedRuntime();
  assert.deepEqual(start, { env: {}, flags: bin.flags });
  assert.equal(bin.env.MALLOC_ARENA_MAX, '2');
  assert.ok(bin.flags.includes('--max-semi-space-size=8'), `bin flags: ${bin.flags.join(' ')}`);
});

test('the bin, started through its shebang, runs with them', async () => {
  // A module preloaded into the bin's own process reports what that process was given; --help then ends it.
  const dir = mkdtempSync(join(tmpdir(), 'wr-runtime-'));
  try {
    const probe = join(dir, 'probe.mjs');
    writeFileSync(probe, 'console.error(JSON.stringify({ env: process.env.MALLOC_ARENA_MAX, flags: process.execArgv }));\n');
    const { stderr } = await promisify(execFile)(fileURLToPath(new URL('src/main.ts', root)), ['--help'], {
      env: { PATH: process.env.PATH ?? '', NODE_OPTIONS: `--import=${probe}` },
    });
    const seen = JSON.parse(stderr.trim().split('\n')[0] ?? '') as { env: string; flags: string[] };
    // Literal values, not the parsed shebang: a shebang that lost them must fail here too.
    assert.equal(seen.env, '2');
    assert.ok(seen.flags.includes('--max-semi-space-size=8'), `the bin's process got: ${seen.flags.join(' ')}`);
    assert.deepEqual(seen.flags, shippedRuntime().flags);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
