import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { configJsonSchema, referenceYaml } from '../../config/generate.ts';
import { loadConfig } from '../../config/load.ts';

const committed = (name: string) => readFileSync(new URL(`../../config/${name}`, import.meta.url), 'utf8');

test('config/reference.yaml matches the schema (run `npm run gen:config` after changing config/schema.ts)', () => {
  assert.equal(committed('reference.yaml'), referenceYaml());
});

test('config/config.schema.json matches the schema (run `npm run gen:config`)', () => {
  assert.equal(committed('config.schema.json'), `${JSON.stringify(configJsonSchema(), null, 2)}\n`);
});

test('the reference configuration is itself valid and equals the defaults', () => {
  const path = new URL('../../config/reference.yaml', import.meta.url).pathname;
  const fromReference = loadConfig({ configPath: path, env: { GITHUB_WEBHOOK_SECRET: 'x' }, readFile: (p) => readFileSync(p, 'utf8') });
  const fromDefaults = loadConfig({
    env: {},
    readFile: () => '',
    base: { sources: [{ id: 'github', kind: 'github', secrets: ['x'] }] },
  });
  assert.deepEqual(fromReference, fromDefaults);
});
