/**
 * The receiver over real HTTP (undici, or a raw socket where the test needs control of the bytes on the wire) against
 * an app started in-process on 127.0.0.1. What is checked is the contract of design §4: status codes, that a 2xx
 * means the message is in the queue (decoded and compared byte for byte), and that no 4xx ever enqueues anything.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, beforeEach, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import type { Envelope, RoutingFields } from '../../src/envelope.ts';
import { drainEnvelopes, type SourceInput, startApp, takeEnvelopes, type TestApp } from '../helpers/app.ts';
import {
  deliveryId,
  githubFormBody,
  githubRequest,
  githubSignature,
  gitlabSigningRequest,
  gitlabTokenRequest,
  randomWhsecSecret,
  type SignedRequest,
  standardRequest,
} from '../helpers/sign.ts';

// ---------------------------------------------------------------------------------------------------------------
// Fixtures

interface ExampleDefinition {
  readonly name: string;
  readonly examples: readonly Record<string, unknown>[];
}
const definitions = createRequire(import.meta.url)('@octokit/webhooks-examples') as ExampleDefinition[];

function example(name: string, index: number): Record<string, unknown> {
  const found = definitions.find((d) => d.name === name)?.examples[index];
  assert.ok(found, `@octokit/webhooks-examples has no ${name}[${index}]`);
  return found;
}

const GH_SECRET = 'gh-secret';
const GL_TOKEN = 'gl-token';
const GL_SIGNING = randomWhsecSecret();
const SW_SECRET = randomWhsecSecret();
const SMALL_SECRET = 'small-secret';
const SMALL_CAP = 1024;

const sources: SourceInput[] = [
  { id: 'github', kind: 'github', secrets: [GH_SECRET] },
  { id: 'github-rotating', kind: 'github', secrets: ['gh-old', 'gh-new'] },
  { id: 'gitlab', kind: 'gitlab', secrets: [GL_TOKEN] },
  { id: 'gitlab-signed', kind: 'gitlab', secrets: [GL_SIGNING] },
  { id: 'sw', kind: 'standard-webhooks', secrets: [SW_SECRET] },
  { id: 'small', kind: 'github', secrets: [SMALL_SECRET], maxBodyBytes: SMALL_CAP },
];

const sender = { sender: 'Codertocat', senderType: 'User' };

/**
 * Real GitHub payloads and the routing fields each must produce, written out by hand from the fixture (not derived
 * with the code under test).
 */
const githubCases: { name: string; event: string; index: number; pretty?: boolean; routing: RoutingFields }[] = [
  {
    name: 'push to a branch, from an app installation',
    event: 'push',
    index: 4,
    routing: { event: 'push', repository: 'Codertocat/Hello-World', installation: '1', ref: 'refs/heads/master', ...sender },
  },
  {
    name: 'push of a tag in an organization (pretty-printed body)',
    event: 'push',
    index: 1,
    pretty: true,
    routing: { event: 'push', repository: 'Codertocat/Hello-World', organization: 'Octocoders', ref: 'refs/tags/simple-tag', ...sender },
  },
  {
    name: 'pull_request opened',
    event: 'pull_request',
    index: 14,
    routing: {
      event: 'pull_request',
      action: 'opened',
      repository: 'Codertocat/Hello-World',
      organization: 'Octocoders',
      installation: '1',
      ref: 'master',
      ...sender,
    },
  },
  {
    name: 'issues transferred in an organization-owned repository',
    event: 'issues',
    index: 21,
    routing: { event: 'issues', action: 'transferred', repository: 'octo-org/octo-repo', organization: 'octo-org', ...sender },
  },
  {
    name: 'workflow_run completed',
    event: 'workflow_run',
    index: 1,
    routing: { event: 'workflow_run', action: 'completed', repository: 'octo-org/octo-repo', organization: 'octo-org', ref: 'master', ...sender },
  },
  {
    name: 'check_suite requested',
    event: 'check_suite',
    index: 4,
    routing: { event: 'check_suite', action: 'requested', repository: 'Codertocat/Hello-World', installation: '957387', ref: 'master', ...sender },
  },
  {
    name: 'release published',
    event: 'release',
    index: 0,
    routing: { event: 'release', action: 'published', repository: 'Codertocat/Hello-World', ...sender },
  },
];

/** Headers a GitHub envelope may carry: the pass-through set plus content-type and traceparent. */
const GITHUB_PASS = new Set([
  'x-github-event',
  'x-github-delivery',
  'x-github-hook-id',
  'x-github-hook-installation-target-type',
  'x-github-hook-installation-target-id',
  'x-github-enterprise-version',
  'x-github-enterprise-host',
  'content-type',
  'traceparent',
]);
const SIGNATURE_HEADERS = ['x-hub-signature-256', 'x-hub-signature', 'x-gitlab-token', 'webhook-signature', 'authorization'];

// ---------------------------------------------------------------------------------------------------------------
// HTTP helpers

const agent = new Agent({ keepAliveTimeout: 1_000 });
after(() => agent.close());

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  readonly json: Record<string, unknown> | undefined;
  readonly ms: number;
}

interface Outgoing {
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: Buffer | string | Readable | undefined;
}

async function send(url: string, req: Outgoing): Promise<Answer> {
  const started = performance.now();
  const res = await request(url, {
    method: (req.method ?? 'POST') as 'POST',
    headers: req.headers ?? {},
    body: req.body ?? null,
    dispatcher: agent,
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const text = await res.body.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json, ms: performance.now() - started };
}

function errorCode(answer: Answer): unknown {
  return (answer.json?.error as { code?: unknown } | undefined)?.code;
}

function assertEventId(answer: Answer): string {
  const id = answer.json?.id;
  assert.equal(typeof id, 'string', `no id in ${answer.text}`);
  assert.match(id as string, /^evt_[0-9a-f]{32}$/);
  return id as string;
}

// ---------------------------------------------------------------------------------------------------------------

describe('receiver over HTTP', () => {
  let t: TestApp;

  before(async () => {
    t = await startApp({ sources });
  });
  after(async () => {
    await t?.close();
  });
  // Each test starts from an empty queue, so one failure cannot cascade into the next test's counts.
  beforeEach(async () => {
    await drainEnvelopes(t.queue);
  });

  /**
   * Exactly one message must be in the queue: take it. No waiting is needed: the receiver answers 2xx only after the
   * queue confirmed the publish.
   */
  async function takeOne(): Promise<Envelope> {
    const [envelope, ...rest] = await drainEnvelopes(t.queue);
    assert.ok(envelope, 'nothing was enqueued');
    assert.equal(rest.length, 0, 'more than one message was enqueued');
    return envelope;
  }

  /** A 4xx with the given error code, and nothing in the queue. */
  async function assertRejected(answer: Answer, status: number, code: string): Promise<void> {
    assert.equal(answer.status, status, `expected ${status} ${code}, got ${answer.status} ${answer.text}`);
    assert.equal(errorCode(answer), code);
    assert.match(String(answer.headers['content-type']), /^application\/json/);
    const queued = await drainEnvelopes(t.queue);
    assert.equal(queued.length, 0, `a ${status} enqueued ${queued.length} message(s)`);
  }

  function assertGithubHeaders(envelope: Envelope, req: SignedRequest): void {
    for (const name of Object.keys(envelope.headers)) assert.ok(GITHUB_PASS.has(name), `unexpected header ${name} in the envelope`);
    for (const name of SIGNATURE_HEADERS) assert.equal(envelope.headers[name], undefined, `${name} must never be passed through`);
    for (const name of ['x-github-event', 'x-github-delivery', 'x-github-hook-id', 'x-github-hook-installation-target-type', 'x-github-hook-installation-target-id', 'content-type']) {
      assert.equal(envelope.headers[name], req.headers[name], `header ${name}`);
    }
  }

  describe('GitHub: real payloads from @octokit/webhooks-examples', () => {
    for (const c of githubCases) {
      test(`${c.event}: ${c.name} → 202 and enqueued byte-identical with its routing fields`, async () => {
        const payload = example(c.event, c.index);
        const body = c.pretty ? `${JSON.stringify(payload, null, 2)}\n` : JSON.stringify(payload);
        const hookId = 100 + c.index;
        const delivery = deliveryId();
        const req = githubRequest({ secret: GH_SECRET, body, event: c.event, delivery, hookId });
        const before = Date.now();
        const answer = await send(t.url('github'), req);

        assert.equal(answer.status, 202, answer.text);
        const id = assertEventId(answer);
        assert.deepEqual(Object.keys(answer.json ?? {}), ['id']);

        const envelope = await takeOne();
        assert.equal(envelope.id, id);
        assert.equal(envelope.source, 'github');
        assert.equal(envelope.sourceKind, 'github');
        assert.equal(envelope.dedupeKey, `${hookId}:${delivery}`);
        assert.ok(envelope.receivedAt >= before - 1 && envelope.receivedAt <= Date.now() + 1);
        assert.deepEqual(envelope.routing, c.routing);
        assert.equal(Buffer.compare(Buffer.from(envelope.body), req.body), 0, 'body must be forwarded byte for byte');
        assertGithubHeaders(envelope, req);
      });
    }

    test('form-encoded (payload=…) body → 202; the form bytes are forwarded, routing read from the payload field', async () => {
      const payload = example('pull_request', 14);
      const body = githubFormBody(JSON.stringify(payload));
      const req = githubRequest({ secret: GH_SECRET, body, event: 'pull_request', contentType: 'application/x-www-form-urlencoded' });
      const answer = await send(t.url('github'), req);
      assert.equal(answer.status, 202, answer.text);
      const envelope = await takeOne();
      assert.equal(envelope.id, assertEventId(answer));
      assert.equal(Buffer.compare(Buffer.from(envelope.body), body), 0);
      assert.equal(envelope.headers['content-type'], 'application/x-www-form-urlencoded');
      assert.deepEqual(envelope.routing, githubCases.find((c) => c.event === 'pull_request')?.routing);
      assertGithubHeaders(envelope, req);
    });

    test('form-encoded body without a payload field, or with a non-JSON one, → 400', async () => {
      for (const body of ['other=1', `payload=${encodeURIComponent('{not json')}`, '']) {
        const req = githubRequest({ secret: GH_SECRET, body, contentType: 'application/x-www-form-urlencoded' });
        await assertRejected(await send(t.url('github'), req), 400, 'ROUTER_ERR_BODY_INVALID');
      }
    });

    test('content-type with parameters and odd case is accepted', async () => {
      for (const contentType of ['application/json; charset=utf-8', 'Application/JSON']) {
        const req = githubRequest({ secret: GH_SECRET, body: JSON.stringify(example('push', 0)), contentType });
        const answer = await send(t.url('github'), req);
        assert.equal(answer.status, 202, `${contentType}: ${answer.text}`);
        const envelope = await takeOne();
        assert.equal(envelope.headers['content-type'], contentType);
      }
    });

    test('ping → 200 with an id, and still enqueued (subscribers may ask for ping)', async () => {
      const payload = example('ping', 0);
      const req = githubRequest({ secret: GH_SECRET, body: JSON.stringify(payload), event: 'ping', hookId: String(payload.hook_id) });
      const answer = await send(t.url('github'), req);
      assert.equal(answer.status, 200, answer.text);
      const id = assertEventId(answer);
      const envelope = await takeOne();
      assert.equal(envelope.id, id);
      assert.deepEqual(envelope.routing, { event: 'ping', repository: 'Octocoders/Hello-World', organization: 'Octocoders', ...sender });
      assert.equal(Buffer.compare(Buffer.from(envelope.body), req.body), 0);
    });

    test('a valid W3C traceparent travels with the event; a malformed one does not', async () => {
      const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
      let answer = await send(t.url('github'), githubRequest({ secret: GH_SECRET, body: '{}', extra: { traceparent } }));
      assert.equal(answer.status, 202, answer.text);
      assert.equal((await takeOne()).headers.traceparent, traceparent);

      answer = await send(t.url('github'), githubRequest({ secret: GH_SECRET, body: '{}', extra: { traceparent: 'not-a-trace' } }));
      assert.equal(answer.status, 202, answer.text);
      assert.equal((await takeOne()).headers.traceparent, undefined);
    });

    test('rotation: a source with two secrets accepts a signature by either, and nothing else', async () => {
      for (const secret of ['gh-old', 'gh-new']) {
        const answer = await send(t.url('github-rotating'), githubRequest({ secret, body: '{"zen":"x"}' }));
        assert.equal(answer.status, 202, `${secret}: ${answer.text}`);
        assert.equal((await takeOne()).source, 'github-rotating');
      }
      await assertRejected(await send(t.url('github-rotating'), githubRequest({ secret: GH_SECRET, body: '{"zen":"x"}' })), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
    });
  });

  describe('GitLab', () => {
    const pushBody = JSON.stringify({
      object_kind: 'push',
      event_name: 'push',
      ref: 'refs/heads/main',
      user_username: 'jsmith',
      project: { id: 15, path_with_namespace: 'acme/platform/api' },
      commits: [{ id: 'b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327', message: 'Update README ✓' }],
    });
    const mergeRequestBody = JSON.stringify({
      object_kind: 'merge_request',
      event_type: 'merge_request',
      user: { username: 'root' },
      project: { path_with_namespace: 'acme/web' },
      object_attributes: { action: 'open', target_branch: 'main', source_branch: 'feature' },
    });
    const GITLAB_PASS = new Set(['x-gitlab-event', 'x-gitlab-event-uuid', 'x-gitlab-webhook-uuid', 'idempotency-key', 'x-gitlab-instance', 'content-type', 'traceparent']);

    function assertGitlabHeaders(envelope: Envelope, req: SignedRequest): void {
      for (const name of Object.keys(envelope.headers)) assert.ok(GITLAB_PASS.has(name), `unexpected header ${name} in the envelope`);
      for (const name of SIGNATURE_HEADERS) assert.equal(envelope.headers[name], undefined, `${name} must never be passed through`);
      for (const name of ['x-gitlab-event', 'x-gitlab-event-uuid', 'x-gitlab-webhook-uuid', 'idempotency-key', 'x-gitlab-instance']) {
        assert.equal(envelope.headers[name], req.headers[name], name);
      }
    }

    test('secret token → 202; dedupe key is the Idempotency-Key; X-Gitlab-Token is not passed on', async () => {
      const req = gitlabTokenRequest({ token: GL_TOKEN, body: pushBody });
      const answer = await send(t.url('gitlab'), req);
      assert.equal(answer.status, 202, answer.text);
      const envelope = await takeOne();
      assert.equal(envelope.id, assertEventId(answer));
      assert.equal(envelope.sourceKind, 'gitlab');
      assert.equal(envelope.dedupeKey, req.headers['idempotency-key']);
      assert.deepEqual(envelope.routing, { event: 'push', repository: 'acme/platform/api', organization: 'acme', ref: 'refs/heads/main', sender: 'jsmith' });
      assert.equal(Buffer.compare(Buffer.from(envelope.body), req.body), 0);
      assertGitlabHeaders(envelope, req);
    });

    test('without Idempotency-Key the dedupe key is X-Gitlab-Webhook-UUID', async () => {
      const req = gitlabTokenRequest({ token: GL_TOKEN, body: pushBody, idempotencyKey: null });
      const answer = await send(t.url('gitlab'), req);
      assert.equal(answer.status, 202, answer.text);
      assert.equal((await takeOne()).dedupeKey, req.headers['x-gitlab-webhook-uuid']);
    });

    test('wrong or missing token → 401; missing event or keys → 400', async () => {
      await assertRejected(await send(t.url('gitlab'), gitlabTokenRequest({ token: 'gl-token-wrong', body: pushBody })), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
      await assertRejected(await send(t.url('gitlab'), gitlabTokenRequest({ token: `${GL_TOKEN}x`, body: pushBody })), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
      await assertRejected(await send(t.url('gitlab'), gitlabTokenRequest({ token: GL_TOKEN.slice(0, -1), body: pushBody })), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
      await assertRejected(await send(t.url('gitlab'), gitlabTokenRequest({ body: pushBody })), 401, 'ROUTER_ERR_SIGNATURE_MISSING');
      await assertRejected(
        await send(t.url('gitlab'), gitlabTokenRequest({ token: GL_TOKEN, body: pushBody, extra: { 'x-gitlab-event': undefined } })),
        400,
        'ROUTER_ERR_HEADER_MISSING',
      );
      await assertRejected(
        await send(t.url('gitlab'), gitlabTokenRequest({ token: GL_TOKEN, body: pushBody, idempotencyKey: null, webhookUuid: null })),
        400,
        'ROUTER_ERR_HEADER_MISSING',
      );
    });

    test('signing token (Standard Webhooks headers) → 202; webhook-signature is not passed on', async () => {
      const req = gitlabSigningRequest({ secrets: [GL_SIGNING], body: mergeRequestBody, event: 'Merge Request Hook' });
      const answer = await send(t.url('gitlab-signed'), req);
      assert.equal(answer.status, 202, answer.text);
      const envelope = await takeOne();
      assert.equal(envelope.id, assertEventId(answer));
      assert.equal(envelope.dedupeKey, req.headers['idempotency-key']);
      assert.equal(envelope.dedupeKey, req.headers['webhook-id']);
      assert.deepEqual(envelope.routing, { event: 'merge_request', action: 'open', repository: 'acme/web', organization: 'acme', ref: 'main', sender: 'root' });
      assert.equal(Buffer.compare(Buffer.from(envelope.body), req.body), 0);
      assertGitlabHeaders(envelope, req);
    });

    test('signing token: wrong key → 401, stale timestamp → 401, missing webhook-id → 400', async () => {
      await assertRejected(
        await send(t.url('gitlab-signed'), gitlabSigningRequest({ secrets: [randomWhsecSecret()], body: mergeRequestBody })),
        401,
        'ROUTER_ERR_SIGNATURE_MISMATCH',
      );
      await assertRejected(
        await send(t.url('gitlab-signed'), gitlabSigningRequest({ secrets: [GL_SIGNING], body: mergeRequestBody, timestampSec: Math.floor(Date.now() / 1000) - 3_600 })),
        401,
        'ROUTER_ERR_TIMESTAMP_STALE',
      );
      await assertRejected(
        await send(t.url('gitlab-signed'), gitlabSigningRequest({ secrets: [GL_SIGNING], body: mergeRequestBody, extra: { 'webhook-id': undefined } })),
        400,
        'ROUTER_ERR_HEADER_MISSING',
      );
    });

    test(
      'a valid X-Gitlab-Token is accepted when GitLab also sends a signing-token signature the source has no key for',
      async () => {
        const req = gitlabTokenRequest({ token: GL_TOKEN, body: pushBody });
        const signed = gitlabSigningRequest({ secrets: [randomWhsecSecret()], body: pushBody, id: req.headers['idempotency-key'] as string });
        const headers = {
          ...req.headers,
          'webhook-id': signed.headers['webhook-id'] as string,
          'webhook-timestamp': signed.headers['webhook-timestamp'] as string,
          'webhook-signature': signed.headers['webhook-signature'] as string,
        };
        const answer = await send(t.url('gitlab'), { headers, body: req.body });
        assert.equal(answer.status, 202, answer.text);
        await takeOne();
      },
    );
  });

  describe('Standard Webhooks', () => {
    const body = JSON.stringify({ type: 'invoice.paid', timestamp: '2024-05-01T12:00:00Z', data: { id: 'in_1', amount: 4200 } });

    test('signed request → 202; routing from `type`; dedupe key is webhook-id', async () => {
      const req = standardRequest({ secrets: [SW_SECRET], body });
      const answer = await send(t.url('sw'), req);
      assert.equal(answer.status, 202, answer.text);
      const envelope = await takeOne();
      assert.equal(envelope.id, assertEventId(answer));
      assert.equal(envelope.sourceKind, 'standard-webhooks');
      assert.equal(envelope.dedupeKey, req.headers['webhook-id']);
      assert.deepEqual(envelope.routing, { event: 'invoice', action: 'paid' });
      assert.deepEqual(envelope.headers, { 'content-type': 'application/json' });
      assert.equal(Buffer.compare(Buffer.from(envelope.body), req.body), 0);
    });

    test('several signatures (sender rotating its key), one of them valid → 202', async () => {
      const answer = await send(t.url('sw'), standardRequest({ secrets: [randomWhsecSecret(), SW_SECRET], body }));
      assert.equal(answer.status, 202, answer.text);
      await takeOne();
    });

    test('wrong key or missing signature → 401; stale or future timestamp → 401 stale', async () => {
      const now = Math.floor(Date.now() / 1000);
      await assertRejected(await send(t.url('sw'), standardRequest({ secrets: [randomWhsecSecret()], body })), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
      await assertRejected(await send(t.url('sw'), standardRequest({ secrets: [], body })), 401, 'ROUTER_ERR_SIGNATURE_MISSING');
      await assertRejected(await send(t.url('sw'), standardRequest({ secrets: [SW_SECRET], body, timestampSec: now - 301 - 5 })), 401, 'ROUTER_ERR_TIMESTAMP_STALE');
      await assertRejected(await send(t.url('sw'), standardRequest({ secrets: [SW_SECRET], body, timestampSec: now + 600 })), 401, 'ROUTER_ERR_TIMESTAMP_STALE');
    });

    test('missing or malformed webhook-id / webhook-timestamp → 400', async () => {
      for (const extra of [{ 'webhook-id': undefined }, { 'webhook-timestamp': undefined }, { 'webhook-timestamp': 'yesterday' }, { 'webhook-id': 'has space' }]) {
        await assertRejected(await send(t.url('sw'), standardRequest({ secrets: [SW_SECRET], body, extra })), 400, 'ROUTER_ERR_HEADER_MISSING');
      }
    });
  });

  describe('refusals', () => {
    const body = JSON.stringify(example('push', 0));

    test('unknown source or no route → 404', async () => {
      for (const path of ['/webhooks/nope', '/webhooks/', '/webhooks', '/', '/other', '/webhooks/github/extra', '/webhooks/%E0%A4%A']) {
        const answer = await send(`${t.webhooksUrl}${path}`, githubRequest({ secret: GH_SECRET, body }));
        await assertRejected(answer, 404, 'ROUTER_ERR_SOURCE_UNKNOWN');
      }
    });

    test('a request head past 16 KiB → 431 with the JSON error body, nothing enqueued', async () => {
      const answer = await send(t.url('github'), githubRequest({ secret: GH_SECRET, body, extra: { 'x-padding': 'p'.repeat(20_000) } }));
      await assertRejected(answer, 431, 'ROUTER_ERR_BAD_REQUEST');
    });

    test('GET (and other non-POST methods) → 405 with Allow: POST', async () => {
      for (const method of ['GET', 'PUT', 'DELETE', 'PATCH']) {
        const answer = await send(t.url('github'), { method, headers: {} });
        await assertRejected(answer, 405, 'ROUTER_ERR_METHOD_NOT_ALLOWED');
        assert.equal(answer.headers.allow, 'POST');
      }
    });

    test('text/plain, other or missing content types → 415', async () => {
      for (const contentType of ['text/plain', 'application/xml', 'multipart/form-data; boundary=x', 'application/jsonx']) {
        await assertRejected(await send(t.url('github'), githubRequest({ secret: GH_SECRET, body, contentType })), 415, 'ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE');
      }
      await assertRejected(
        await send(t.url('github'), githubRequest({ secret: GH_SECRET, body, extra: { 'content-type': undefined } })),
        415,
        'ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE',
      );
    });

    test('missing or malformed X-GitHub-Event / X-GitHub-Delivery / X-GitHub-Hook-ID → 400 (even with a valid signature)', async () => {
      const cases: Record<string, string | undefined>[] = [
        { 'x-github-event': undefined },
        { 'x-github-delivery': undefined },
        { 'x-github-hook-id': undefined },
        { 'x-github-event': '' },
        { 'x-github-event': 'x'.repeat(65) },
        { 'x-github-event': 'push/../../etc' },
        { 'x-github-delivery': 'a/b' },
        { 'x-github-delivery': 'd'.repeat(129) },
        { 'x-github-hook-id': 'abc' },
        { 'x-github-hook-id': '-1' },
      ];
      for (const extra of cases) {
        const answer = await send(t.url('github'), githubRequest({ secret: GH_SECRET, body, extra }));
        await assertRejected(answer, 400, 'ROUTER_ERR_HEADER_MISSING');
      }
    });

    test('missing or wrong signature → 401', async () => {
      await assertRejected(await send(t.url('github'), githubRequest({ body })), 401, 'ROUTER_ERR_SIGNATURE_MISSING');
      await assertRejected(await send(t.url('github'), githubRequest({ secret: 'wrong', body })), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
      const signedOther = githubSignature(GH_SECRET, `${body} `);
      await assertRejected(await send(t.url('github'), githubRequest({ body, extra: { 'x-hub-signature-256': signedOther } })), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
      await assertRejected(await send(t.url('github'), githubRequest({ body, extra: { 'x-hub-signature-256': '' } })), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
      // The legacy SHA-1 header alone is never enough.
      const sha1 = `sha1=${createHmac('sha1', GH_SECRET).update(body).digest('hex')}`;
      await assertRejected(await send(t.url('github'), githubRequest({ body, extra: { 'x-hub-signature': sha1 } })), 401, 'ROUTER_ERR_SIGNATURE_MISSING');
    });

    test('a valid signature over a body that is not JSON → 400', async () => {
      for (const bad of ['{"truncated": ', 'not json', '', Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]) {
        const answer = await send(t.url('github'), githubRequest({ secret: GH_SECRET, body: bad }));
        await assertRejected(answer, 400, 'ROUTER_ERR_BODY_INVALID');
      }
    });
  });

  describe('body size cap', () => {
    /** A JSON body of exactly `size` bytes. */
    const jsonOfSize = (size: number) => {
      const shell = '{"pad":""}';
      return Buffer.from(`{"pad":"${'a'.repeat(size - shell.length)}"}`);
    };

    test('a body of exactly maxBodyBytes is accepted', async () => {
      const answer = await send(t.url('small'), githubRequest({ secret: SMALL_SECRET, body: jsonOfSize(SMALL_CAP) }));
      assert.equal(answer.status, 202, answer.text);
      assert.equal((await takeOne()).body.byteLength, SMALL_CAP);
    });

    test('declared Content-Length above the cap → 413', async () => {
      for (const size of [SMALL_CAP + 1, 64 * 1024, 4 * 1024 * 1024]) {
        const answer = await send(t.url('small'), githubRequest({ secret: SMALL_SECRET, body: jsonOfSize(size) }));
        await assertRejected(answer, 413, 'ROUTER_ERR_BODY_TOO_LARGE');
        assert.ok(answer.ms < 2_000, `413 took ${answer.ms} ms`);
      }
    });

    test(
      'chunked body (no Content-Length) crossing the cap → 413 while the client is still sending (raw socket)',
      async (ctx) => {
      const req = githubRequest({ secret: SMALL_SECRET, body: '' });
      const result = await streamChunked(t.app.ports.webhooks as number, '/webhooks/small', req.headers, { chunkBytes: 256, limitBytes: 8 * 1024 * 1024 });
      ctx.diagnostic(`413 after the client had sent ${result.sentWhenAnswered} body bytes (cap ${SMALL_CAP}); stream finished: ${result.finished}`);
      assert.equal(result.status, 413, result.head);
      assert.equal(result.finished, false, 'the server must answer before the stream ends');
      assert.ok(result.sentWhenAnswered < 1024 * 1024, `the client had already sent ${result.sentWhenAnswered} bytes`);
      assert.equal((await drainEnvelopes(t.queue)).length, 0);
      },
    );

    test('chunked body (no Content-Length) crossing the cap → 413 while an undici request body is still streaming', async (ctx) => {
      let sent = 0;
      let answered = false;
      let finished = false;
      const limit = 8 * 1024 * 1024;
      async function* slowBody() {
        while (!answered && sent < limit) {
          yield Buffer.alloc(256, 0x20);
          sent += 256;
          // One chunk per turn of the event loop: the response gets every chance to arrive in between.
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
        finished = !answered;
      }
      const req = githubRequest({ secret: SMALL_SECRET, body: '' });
      const res = await request(t.url('small'), { method: 'POST', headers: req.headers, body: Readable.from(slowBody()), dispatcher: agent, headersTimeout: 10_000 });
      answered = true;
      const sentWhenAnswered = sent;
      const text = await res.body.text();
      ctx.diagnostic(`413 after ${sentWhenAnswered} streamed bytes (cap ${SMALL_CAP})`);
      assert.equal(res.statusCode, 413, text);
      assert.equal(finished, false, 'the server must answer before the stream ends');
      assert.ok(sentWhenAnswered < 1024 * 1024);
      assert.equal((await drainEnvelopes(t.queue)).length, 0);
    });

    test('chunked body of exactly the cap is accepted', async () => {
      const body = jsonOfSize(SMALL_CAP);
      const req = githubRequest({ secret: SMALL_SECRET, body });
      const answer = await send(t.url('small'), { headers: req.headers, body: Readable.from([body.subarray(0, 100), body.subarray(100)]) });
      assert.equal(answer.status, 202, answer.text);
      assert.equal(Buffer.compare(Buffer.from((await takeOne()).body), body), 0);
    });

    test(
      'a client that writes its whole over-cap body before reading still receives the 413',
      async (ctx) => {
        const req = githubRequest({ secret: SMALL_SECRET, body: jsonOfSize(8 * 1024 * 1024) });
        const result = await writeThenRead(t.app.ports.webhooks as number, '/webhooks/small', req.headers, req.body);
        ctx.diagnostic(`client write: ${result.writeError ?? 'ok'}; response: ${JSON.stringify(result.response.slice(0, 40))}`);
        assert.match(result.response, /^HTTP\/1\.1 413 /);
      },
    );
  });

  describe('dedupe', () => {
    test('a repeat of the same hook id + delivery → 200 with the same id and duplicate: true; enqueued once', async () => {
      const req = githubRequest({ secret: GH_SECRET, body: JSON.stringify(example('push', 4)) });
      const first = await send(t.url('github'), req);
      assert.equal(first.status, 202, first.text);
      const id = assertEventId(first);
      const second = await send(t.url('github'), req);
      assert.equal(second.status, 200, second.text);
      assert.deepEqual(second.json, { id, duplicate: true });
      const queued = await drainEnvelopes(t.queue);
      assert.deepEqual(
        queued.map((e) => e.id),
        [id],
      );
    });

    test('the same delivery GUID under two hook ids → two events with distinct ids', async () => {
      const body = JSON.stringify(example('push', 4));
      const delivery = deliveryId();
      const a = await send(t.url('github'), githubRequest({ secret: GH_SECRET, body, delivery, hookId: 1 }));
      const b = await send(t.url('github'), githubRequest({ secret: GH_SECRET, body, delivery, hookId: 2 }));
      assert.equal(a.status, 202, a.text);
      assert.equal(b.status, 202, b.text);
      assert.notEqual(assertEventId(a), assertEventId(b));
      const queued = await takeEnvelopes(t.queue, 2);
      assert.deepEqual(queued.map((e) => e.id).sort(), [a.json?.id, b.json?.id].sort());
      assert.deepEqual(queued.map((e) => e.dedupeKey).sort(), [`1:${delivery}`, `2:${delivery}`]);
    });

    test('the same hook id + delivery on two sources → two events', async () => {
      const body = '{"zen":"x"}';
      const delivery = deliveryId();
      const a = await send(t.url('github'), githubRequest({ secret: GH_SECRET, body, delivery, hookId: 7 }));
      const b = await send(t.url('github-rotating'), githubRequest({ secret: 'gh-new', body, delivery, hookId: 7 }));
      assert.equal(a.status, 202);
      assert.equal(b.status, 202);
      assert.notEqual(assertEventId(a), assertEventId(b));
      assert.equal((await takeEnvelopes(t.queue, 2)).length, 2);
    });

    test('GitLab resend with the same Idempotency-Key → 200 duplicate; Standard Webhooks retry with the same webhook-id → 200 duplicate', async () => {
      const gl = gitlabTokenRequest({ token: GL_TOKEN, body: '{"object_kind":"push"}' });
      const gl1 = await send(t.url('gitlab'), gl);
      const gl2 = await send(t.url('gitlab'), { ...gl, headers: { ...gl.headers, 'x-gitlab-webhook-uuid': deliveryId() } });
      assert.equal(gl1.status, 202);
      assert.deepEqual(gl2.json, { id: assertEventId(gl1), duplicate: true });

      const sw1req = standardRequest({ secrets: [SW_SECRET], body: '{"type":"a.b"}' });
      const sw1 = await send(t.url('sw'), sw1req);
      // A retry is signed again with a new timestamp, under the same webhook-id.
      const sw2 = await send(t.url('sw'), standardRequest({ secrets: [SW_SECRET], body: '{"type":"a.b"}', id: sw1req.headers['webhook-id'] as string, timestampSec: Math.floor(Date.now() / 1000) + 1 }));
      assert.equal(sw1.status, 202);
      assert.deepEqual(sw2.json, { id: assertEventId(sw1), duplicate: true });
      assert.equal((await drainEnvelopes(t.queue)).length, 2);
    });

    test('a rejected repeat is still rejected (dedupe happens only after verification)', async () => {
      const req = githubRequest({ secret: GH_SECRET, body: '{"a":1}' });
      assert.equal((await send(t.url('github'), req)).status, 202);
      await drainEnvelopes(t.queue);
      const forged = { ...req, headers: { ...req.headers, 'x-hub-signature-256': githubSignature('wrong', req.body) } };
      await assertRejected(await send(t.url('github'), forged), 401, 'ROUTER_ERR_SIGNATURE_MISMATCH');
    });
  });
});

describe('receiver when the queue cannot take the write', () => {
  const body = JSON.stringify(example('push', 4));

  test('queue closed → 503 with Retry-After within 1 s; /readyz 200 → 503; /livez stays 200', async (ctx) => {
    const t = await startApp({ receiver: { retryAfterSec: 7 } });
    ctx.after(() => t.close());
    const client = new Agent();
    ctx.after(() => client.close());

    const probe = async (path: string) => {
      const res = await request(`${t.managementUrl}${path}`, { dispatcher: client });
      return { status: res.statusCode, text: await res.body.text() };
    };
    assert.equal((await probe('/livez')).status, 200);
    const ready = await probe('/readyz');
    assert.equal(ready.status, 200, ready.text);
    assert.deepEqual(JSON.parse(ready.text), { status: 'ready', checks: { queue: 'ok' } });

    await t.queue.close();

    const answer = await send(t.url('github'), githubRequest({ secret: 'github-secret', body }));
    ctx.diagnostic(`503 answered in ${answer.ms.toFixed(1)} ms`);
    assert.equal(answer.status, 503, answer.text);
    assert.equal(errorCode(answer), 'ROUTER_ERR_QUEUE_UNAVAILABLE');
    assert.equal(answer.headers['retry-after'], '7');
    assert.ok(answer.ms < 1_000, `503 took ${answer.ms} ms`);

    const notReady = await probe('/readyz');
    assert.equal(notReady.status, 503, notReady.text);
    assert.equal((JSON.parse(notReady.text) as { status: string }).status, 'not ready');
    assert.equal((await probe('/livez')).status, 200);
  });

  test('queue does not confirm within publishTimeoutMs → 503 with Retry-After within 1 s', async (ctx) => {
    // A group-commit window longer than the publish timeout: no publish can be confirmed in time.
    const t = await startApp({ queue: 'sqlite', sqlite: { batchWindowMs: 100, synchronous: 'normal' }, receiver: { publishTimeoutMs: 50 } });
    ctx.after(() => t.close());
    const answer = await send(t.url('github'), githubRequest({ secret: 'github-secret', body }));
    ctx.diagnostic(`503 answered in ${answer.ms.toFixed(1)} ms`);
    assert.equal(answer.status, 503, answer.text);
    assert.equal(answer.headers['retry-after'], '5');
    assert.ok(answer.ms < 1_000, `503 took ${answer.ms} ms`);
  });

  test('sqlite queue with too many pending publishes → 503 for the overflow, 202 only for what was committed', async (ctx) => {
    const t = await startApp({ queue: 'sqlite', sqlite: { maxPendingPublishes: 1, batchWindowMs: 100, batchMaxItems: 10_000, synchronous: 'normal' } });
    ctx.after(() => t.close());
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => send(t.url('github'), githubRequest({ secret: 'github-secret', body: JSON.stringify({ i }) }))),
    );
    const accepted = answers.filter((a) => a.status === 202);
    const refused = answers.filter((a) => a.status === 503);
    ctx.diagnostic(`${accepted.length} accepted, ${refused.length} refused with 503`);
    assert.equal(accepted.length + refused.length, answers.length, `unexpected statuses ${answers.map((a) => a.status).join(',')}`);
    assert.ok(accepted.length >= 1);
    assert.ok(refused.length >= 1);
    for (const a of refused) {
      assert.equal(a.headers['retry-after'], '5');
      assert.ok(a.ms < 1_000, `503 took ${a.ms} ms`);
    }
    const queued = await drainEnvelopes(t.queue);
    assert.deepEqual(queued.map((e) => e.id).sort(), accepted.map((a) => assertEventId(a)).sort());
  });
});

describe('metrics', () => {
  test('/metrics counts router_received_total by source, event and outcome, and observes router_publish_seconds', async (ctx) => {
    const t = await startApp({ sources: [{ id: 'github', kind: 'github', secrets: ['github-secret'], maxBodyBytes: 1024 }] });
    ctx.after(() => t.close());
    const body = JSON.stringify({ ref: 'refs/heads/main' });
    const ok = (event: string) => githubRequest({ secret: 'github-secret', body, event });

    assert.equal((await send(t.url('github'), ok('push'))).status, 202);
    const repeated = ok('push');
    assert.equal((await send(t.url('github'), repeated)).status, 202);
    assert.equal((await send(t.url('github'), repeated)).status, 200);
    assert.equal((await send(t.url('github'), ok('ping'))).status, 200);
    // An unauthenticated caller must not be able to choose a label value.
    assert.equal((await send(t.url('github'), githubRequest({ secret: 'wrong', body, event: 'attacker-chosen' }))).status, 401);
    assert.equal((await send(`${t.webhooksUrl}/webhooks/attacker-source`, ok('push'))).status, 404);
    assert.equal((await send(t.url('github'), githubRequest({ secret: 'github-secret', body, contentType: 'text/plain' }))).status, 415);
    assert.equal((await send(t.url('github'), githubRequest({ secret: 'github-secret', body: 'x'.repeat(2_000) }))).status, 413);
    assert.equal((await send(t.url('github'), githubRequest({ secret: 'github-secret', body, extra: { 'x-github-hook-id': undefined } }))).status, 400);

    const res = await request(`${t.managementUrl}/metrics`, { dispatcher: agent });
    const text = await res.body.text();
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    const samples = parseMetrics(text);
    const received = (labels: Record<string, string>) => samples.get(key('router_received_total', labels));

    assert.equal(received({ source: 'github', event: 'push', outcome: 'accepted' }), 2);
    assert.equal(received({ source: 'github', event: 'push', outcome: 'duplicate' }), 1);
    assert.equal(received({ source: 'github', event: 'ping', outcome: 'accepted' }), 1);
    assert.equal(received({ source: 'github', event: '', outcome: 'unauthorized' }), 1);
    assert.equal(received({ source: 'unknown', event: '', outcome: 'unknown_source' }), 1);
    assert.equal(received({ source: 'github', event: '', outcome: 'unsupported_media_type' }), 1);
    assert.equal(received({ source: 'github', event: '', outcome: 'too_large' }), 1);
    assert.equal(received({ source: 'github', event: '', outcome: 'bad_request' }), 1);
    assert.doesNotMatch(text, /attacker/);

    assert.equal(samples.get(key('router_publish_seconds_count', { queue: 'memory', result: 'confirmed' })), 3);
    assert.ok((samples.get(key('router_publish_seconds_sum', { queue: 'memory', result: 'confirmed' })) ?? -1) >= 0);
    assert.equal(samples.get(key('router_publish_seconds_bucket', { queue: 'memory', result: 'confirmed', le: '+Inf' })), 3);
    assert.equal(samples.get(key('router_dedupe_hits_total', { source: 'github', stage: 'receiver' })), 1);
    // Only the three accepted events were enqueued; none of the refusals.
    assert.deepEqual((await drainEnvelopes(t.queue)).map((e) => e.routing.event).sort(), ['ping', 'push', 'push']);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Prometheus text parsing (labels sorted, so the order prom-client prints them in does not matter)

function key(name: string, labels: Record<string, string>): string {
  return `${name}{${Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(',')}}`;
}

function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m?.[1] || m[3] === undefined) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = JSON.parse(`"${l[2]}"`) as string;
    out.set(key(m[1], labels), Number(m[3]));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Raw-socket clients

function requestHead(path: string, headers: Record<string, string>, framing: string): string {
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  return `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${lines.join('\r\n')}\r\n${framing}\r\n\r\n`;
}

interface StreamResult {
  status: number | undefined;
  head: string;
  /** Body bytes the client had written when the response head arrived. */
  sentWhenAnswered: number;
  /** True when the client reached its limit and ended the chunked body. */
  finished: boolean;
}

/**
 * Sends a chunked body one chunk per event-loop turn (after the previous write was taken by the kernel) until the
 * response head arrives or `limitBytes` were sent. Bounded by `timeoutMs`.
 */
function streamChunked(
  port: number,
  path: string,
  headers: Record<string, string>,
  options: { chunkBytes: number; limitBytes: number; timeoutMs?: number },
): Promise<StreamResult> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunk = Buffer.alloc(options.chunkBytes, 0x20);
    let received = Buffer.alloc(0);
    let sent = 0;
    let finished = false;
    const result: StreamResult = { status: undefined, head: '', sentWhenAnswered: -1, finished: false };
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no response within ${options.timeoutMs ?? 10_000} ms (sent ${sent} bytes)`));
    }, options.timeoutMs ?? 10_000);

    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...result, finished });
    };
    socket.on('data', (data: Buffer) => {
      received = Buffer.concat([received, data]);
      const end = received.indexOf('\r\n\r\n');
      if (result.status === undefined && end >= 0) {
        result.head = received.subarray(0, end).toString('latin1');
        result.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(result.head)?.[1]);
        result.sentWhenAnswered = sent;
        done();
      }
    });
    // The server may close while we write; what matters is whether the response head arrived first.
    socket.on('error', () => {});
    socket.on('close', () => {
      if (result.status === undefined) {
        clearTimeout(timer);
        reject(new Error(`connection closed without a response after ${sent} bytes`));
      }
    });
    const pump = () => {
      if (result.status !== undefined || socket.destroyed) return;
      if (sent >= options.limitBytes) {
        finished = true;
        socket.write('0\r\n\r\n');
        return;
      }
      socket.write(`${chunk.length.toString(16)}\r\n`);
      socket.write(chunk);
      socket.write('\r\n', (err) => {
        if (err) return;
        sent += chunk.length;
        setImmediate(pump);
      });
    };
    socket.on('connect', () => {
      socket.write(requestHead(path, headers, 'transfer-encoding: chunked'));
      pump();
    });
  });
}

/**
 * Writes the head and the whole body, and only then reads the response (what many simple HTTP clients do). Resolves
 * once the response head arrived or the connection closed; bounded at 10 s.
 */
function writeThenRead(port: number, path: string, headers: Record<string, string>, body: Buffer): Promise<{ response: string; writeError: string | undefined }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.pause();
    let response = '';
    let writeError: string | undefined;
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.on('data', (d: Buffer) => {
      response += d.toString('latin1');
      if (response.includes('\r\n\r\n')) socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (writeError ??= err.code ?? err.message));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ response, writeError });
    });
    socket.write(requestHead(path, headers, `content-length: ${body.length}`));
    socket.write(body, (err) => {
      if (err) writeError ??= (err as NodeJS.ErrnoException).code ?? err.message;
      socket.resume();
    });
  });
}
