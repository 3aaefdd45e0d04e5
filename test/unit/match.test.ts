import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RoutingFields } from '../../src/envelope.ts';
import { type FilterSpec, MatchExpression, compileFilter } from '../../src/subscribers/match.ts';
import { SubscriberSpec } from '../../src/subscribers/model.ts';
import { renderTemplate } from '../../src/subscribers/template.ts';

const any: FilterSpec = { sources: [], events: [], repositories: [], branches: [] };
const push: RoutingFields = { event: 'push', repository: 'acme/api', organization: 'acme', ref: 'refs/heads/main', sender: 'octocat', senderType: 'User' };
const payload = { sender: { type: 'User', login: 'octocat' }, commits: [1, 2], size: 3, pusher: { name: 'x' } };

function matches(filter: Partial<FilterSpec>, routing: RoutingFields = push, source = 'github', body: unknown = payload): boolean {
  let parsed = 0;
  const result = compileFilter({ ...any, ...filter }).matches({
    source,
    routing,
    payload: () => {
      parsed += 1;
      return body;
    },
  });
  if (filter.match === undefined) assert.equal(parsed, 0, 'the payload is parsed only for match expressions');
  return result;
}

describe('subscriber filters', () => {
  test('an empty filter matches every event except ping', () => {
    assert.ok(matches({}));
    assert.ok(!matches({}, { event: 'ping' }));
    assert.ok(!matches({ events: ['*'] }, { event: 'ping' }));
    assert.ok(matches({ events: ['ping'] }, { event: 'ping' }));
  });

  test('sources', () => {
    assert.ok(matches({ sources: ['github'] }));
    assert.ok(!matches({ sources: ['gitlab'] }));
    assert.ok(matches({ sources: ['git*'] }));
  });

  test('events match `event` (any action), `event.action` and wildcards', () => {
    const opened: RoutingFields = { event: 'pull_request', action: 'opened', repository: 'acme/api' };
    assert.ok(matches({ events: ['pull_request'] }, opened));
    assert.ok(matches({ events: ['pull_request.opened'] }, opened));
    assert.ok(!matches({ events: ['pull_request.closed'] }, opened));
    assert.ok(matches({ events: ['workflow_run.*'] }, { event: 'workflow_run', action: 'completed' }));
    assert.ok(!matches({ events: ['workflow_run.*'] }, opened));
    assert.ok(matches({ events: ['push', 'issues'] }));
  });

  test('repositories with globs and negation', () => {
    assert.ok(matches({ repositories: ['acme/*'] }));
    assert.ok(!matches({ repositories: ['acme/*', '!acme/api'] }));
    assert.ok(matches({ repositories: ['!acme/secret-*'] }));
    assert.ok(!matches({ repositories: ['!acme/secret-*'] }, { ...push, repository: 'acme/secret-sauce' }));
    assert.ok(!matches({ repositories: ['acme/*'] }, { event: 'push' }), 'no repository never matches an inclusion');
    assert.ok(matches({ repositories: ['!acme/x'] }, { event: 'push' }), 'exclusions alone let repository-less events through');
    assert.ok(!matches({ repositories: ['acme/a.i'] }, { ...push, repository: 'acme/api' }), 'dots are literal');
  });

  test('branches match the ref without refs/heads/; tags never match', () => {
    assert.ok(matches({ branches: ['main'] }));
    assert.ok(matches({ branches: ['release/*'] }, { ...push, ref: 'refs/heads/release/1.2' }));
    assert.ok(!matches({ branches: ['main'] }, { ...push, ref: 'refs/tags/v1' }));
    assert.ok(matches({ branches: ['main'] }, { event: 'pull_request', ref: 'main' }), 'a PR base ref has no prefix');
    assert.ok(!matches({ branches: ['main'] }, { event: 'issues' }));
  });

  test('match operators over payload and routing fields', () => {
    const cases: [unknown, boolean][] = [
      [{ 'payload.sender.type': { $ne: 'Bot' } }, true],
      [{ 'payload.sender.type': 'User' }, true],
      [{ 'payload.sender.type': { $eq: 'Bot' } }, false],
      [{ 'payload.size': { $gt: 2, $lte: 3 } }, true],
      [{ 'payload.size': { $gt: '2' } }, false],
      [{ 'payload.size': { $lt: 3 } }, false],
      [{ 'payload.size': { $gte: 3 } }, true],
      [{ repository: { $in: ['acme/api', 'acme/web'] } }, true],
      [{ repository: { $nin: ['acme/api'] } }, false],
      [{ 'payload.pusher.email': { $exists: false } }, true],
      [{ 'payload.pusher.name': { $exists: true } }, true],
      [{ sender: { $startsWith: 'octo' }, repository: { $endsWith: '/api' } }, true],
      [{ $or: [{ event: 'issues' }, { event: 'push' }] }, true],
      [{ $and: [{ event: 'push' }, { 'payload.sender.login': 'someone-else' }] }, false],
      [{ $not: { organization: 'acme' } }, false],
      [{ 'payload.commits.length': 2 }, false],
      [{ 'payload.__proto__.polluted': { $exists: true } }, false],
      [{ source: 'github' }, true],
    ];
    for (const [expr, expected] of cases) {
      const match = MatchExpression.parse(expr);
      assert.equal(matches({ match }), expected, JSON.stringify(expr));
    }
  });

  test('invalid match expressions are refused, deep nesting included', () => {
    for (const bad of [
      { unknownField: 1 },
      { 'payload.a': { $regex: '.*' } },
      { $and: [] },
      { 'payload.a': {} },
      {},
      { 'payload.a b': 1 },
    ]) {
      assert.equal(MatchExpression.safeParse(bad).success, false, JSON.stringify(bad));
    }
    let deep: unknown = { event: 'push' };
    for (let i = 0; i < 5_000; i++) deep = { $not: deep };
    assert.equal(MatchExpression.safeParse(deep).success, false);
  });
});

describe('subscriber spec', () => {
  test('defaults and template validation', () => {
    const spec = SubscriberSpec.parse({ name: 'ci', transport: { kind: 'https', url: 'https://x.example' }, ordering: { key: '{repository}' } });
    assert.deepEqual(spec.retry, { schedule: 'standard', maxAttempts: 10 });
    assert.deepEqual(spec.limits, { concurrency: 10, perSecond: 0 });
    assert.deepEqual(spec.filter, { sources: [], events: [], repositories: [], branches: [] });
    assert.equal(SubscriberSpec.safeParse({ name: 'x', transport: { kind: 'https' }, ordering: { key: '{repo}' } }).success, false);
    assert.equal(SubscriberSpec.safeParse({ name: 'x', transport: { kind: 'https' }, surprise: true }).success, false);
  });

  test('templates render routing fields', () => {
    assert.equal(renderTemplate('{source}:{repository}/{event}.{action}', 'github', { event: 'push', repository: 'acme/api' }), 'github:acme/api/push.');
  });
});
