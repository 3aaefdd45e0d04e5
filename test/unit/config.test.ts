import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig } from '../../config/load.ts';
import { isRouterError } from '../../src/errors.ts';

const source = { id: 'github', kind: 'github', secrets: ['s3cret'] };
const files = (map: Record<string, string>) => (path: string) => {
  const text = map[path];
  if (text === undefined) throw Object.assign(new Error(`ENOENT ${path}`), { code: 'ENOENT' });
  return text;
};

function issuesOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(isRouterError(err, 'ROUTER_ERR_CONFIG_INVALID'), String(err));
    return err.message;
  }
  assert.fail('expected ROUTER_ERR_CONFIG_INVALID');
}

describe('loadConfig', () => {
  test('fills defaults and deep-freezes the result', () => {
    const config = loadConfig({ env: {}, readFile: files({}), base: { sources: [source] } });
    assert.equal(config.listen.webhooks, 8080);
    assert.equal(config.queue.kind, 'sqlite');
    assert.equal(config.sources[0]?.maxBodyBytes, 25 * 1024 * 1024);
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.sources[0]) && Object.isFrozen(config.sources[0]?.secrets));
  });

  test('layers YAML over defaults and ROUTER_* variables over YAML', () => {
    const yaml = 'listen: { webhooks: 1000, api: 1001 }\nqueue: { kind: sqlite, path: /tmp/q.db }\nsources:\n  - { id: github, kind: github, secrets: [a] }\n';
    const config = loadConfig({
      configPath: '/etc/router.yaml',
      env: { ROUTER_LISTEN__WEBHOOKS: '2000', ROUTER_QUEUE__VISIBILITY_TIMEOUT_MS: '5000', ROUTER_QUEUE__BATCHWINDOWMS: '3' },
      readFile: files({ '/etc/router.yaml': yaml }),
    });
    assert.equal(config.listen.webhooks, 2000);
    assert.equal(config.listen.api, 1001);
    assert.equal(config.queue.kind === 'sqlite' && config.queue.path, '/tmp/q.db');
    assert.equal(config.queue.kind === 'sqlite' && config.queue.visibilityTimeoutMs, 5000);
    assert.equal(config.queue.kind === 'sqlite' && config.queue.batchWindowMs, 3);
  });

  test('ROUTER_CONFIG names the file when --config is absent', () => {
    const config = loadConfig({
      env: { ROUTER_CONFIG: '/c.yaml' },
      readFile: files({ '/c.yaml': 'sources: [{ id: gl, kind: gitlab, secrets: [t] }]' }),
    });
    assert.equal(config.sources[0]?.kind, 'gitlab');
  });

  test('environment variables address array items by index and parse lists', () => {
    const config = loadConfig({
      env: { ROUTER_SOURCES__0__ID: 'gh', ROUTER_SOURCES__0__KIND: 'github', ROUTER_SOURCES__0__SECRETS: 'old,new', ROUTER_QUEUE__KIND: 'memory' },
      readFile: files({}),
    });
    assert.deepEqual(config.sources[0]?.secrets, ['old', 'new']);
    assert.equal(config.queue.kind, 'memory');
  });

  test('${NAME} in YAML comes from the environment', () => {
    const config = loadConfig({
      configPath: '/c.yaml',
      env: { GH_SECRET: 'from-env' },
      readFile: files({ '/c.yaml': 'sources: [{ id: gh, kind: github, secrets: ["${GH_SECRET}"] }]' }),
    });
    assert.deepEqual(config.sources[0]?.secrets, ['from-env']);
  });

  test('<key>_FILE reads secrets from files, in YAML and in the environment', () => {
    const fromYaml = loadConfig({
      configPath: '/c.yaml',
      env: {},
      readFile: files({ '/c.yaml': 'sources: [{ id: gh, kind: github, secrets_FILE: /run/secrets/gh }]', '/run/secrets/gh': 'one\ntwo\n' }),
    });
    assert.deepEqual(fromYaml.sources[0]?.secrets, ['one', 'two']);
    const fromEnv = loadConfig({
      env: { ROUTER_SOURCES__0__ID: 'gh', ROUTER_SOURCES__0__KIND: 'github', ROUTER_SOURCES__0__SECRETS_FILE: '/s' },
      readFile: files({ '/s': 'only\n' }),
    });
    assert.deepEqual(fromEnv.sources[0]?.secrets, ['only']);
  });

  test('reports every problem at once', () => {
    const message = issuesOf(() =>
      loadConfig({
        configPath: '/c.yaml',
        env: { ROUTER_NOPE__X: '1', ROUTER_LISTEN__WEBHOOKS: 'eighty' },
        readFile: files({
          '/c.yaml': 'surprise: 1\nqueue: { kind: carrier-pigeon }\nsources: [{ id: a, kind: github, secrets: ["${UNSET_VAR}"], secrets_FILE: /x }]',
        }),
      }),
    );
    for (const expected of ['ROUTER_NOPE__X', 'listen.webhooks', 'surprise', 'queue.kind', 'UNSET_VAR', 'secrets_FILE']) {
      assert.match(message, new RegExp(expected.replace(/[.$]/g, '\\$&')), `missing ${expected} in:\n${message}`);
    }
  });

  test('no secret has a default: a configuration without sources is refused', () => {
    assert.match(issuesOf(() => loadConfig({ env: {}, readFile: files({}) })), /sources/);
  });

  test('more than two secrets and unreadable secret files are refused', () => {
    const message = issuesOf(() =>
      loadConfig({
        configPath: '/c.yaml',
        env: {},
        readFile: files({
          '/c.yaml': 'sources:\n  - { id: a, kind: github, secrets: [x, y, z] }\n  - { id: a, kind: gitlab, secrets_FILE: /missing }',
        }),
      }),
    );
    assert.match(message, /sources\.0\.secrets/);
    assert.match(message, /cannot read \/missing/);
  });

  test('duplicate source ids are refused', () => {
    const yaml = 'sources:\n  - { id: a, kind: github, secrets: [x] }\n  - { id: a, kind: gitlab, secrets: [y] }';
    assert.match(issuesOf(() => loadConfig({ configPath: '/c.yaml', env: {}, readFile: files({ '/c.yaml': yaml }) })), /duplicate source id "a"/);
  });

  test('a missing or malformed file is reported, not thrown raw', () => {
    assert.match(issuesOf(() => loadConfig({ configPath: '/none.yaml', env: {}, readFile: files({}) })), /cannot read/);
    assert.match(issuesOf(() => loadConfig({ configPath: '/b.yaml', env: {}, readFile: files({ '/b.yaml': 'a: [' }) })), /not valid YAML/);
    assert.match(issuesOf(() => loadConfig({ configPath: '/l.yaml', env: {}, readFile: files({ '/l.yaml': '- 1' }) })), /mapping/);
  });
});
