/**
 * The whole router (receiver + worker + API, as `serve` runs it) through real HTTP, following the README walkthrough:
 * create subscribers with curl-like calls, send a signed webhook, watch the delivery and its attempts, replay from
 * the DLQ, rotate a secret (both signatures sent), test-ping, and touch every other route.
 *
 * Then the leak hunt: the subscribers' signing secrets and transport credentials are known, and they must appear
 * nowhere except in the create and rotate responses that return them: not in any other API answer, not in /metrics,
 * not in the debug logs, not in the database files (encrypted at rest). The worker must still sign with them, which
 * proves it gets plaintext through the store decorator.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { Config } from '../../config/schema.ts';
import { type App, buildApp } from '../../src/app.ts';
import { tempDir } from '../helpers/app.ts';
import { GITHUB_SECRET, githubWebhook, postWebhook } from '../helpers/router.ts';
import { randomWhsecSecret, standardSignature } from '../helpers/sign.ts';
import { ok, type Sink, type SinkRequest, startSink, status } from '../helpers/sink.ts';
import { ENCRYPTION_KEY, call, captureLogs, fakeLookup, type Reply, tokens } from './harness.ts';

/** The worker looks for subscriber changes at most this often (src/worker/worker.ts). */
const SUBSCRIBER_REFRESH_MS = 1_000;

const SECRET_A = randomWhsecSecret();
const SECRET_B = randomWhsecSecret();
const HEADER_SECRET = `hdr-${randomWhsecSecret().slice(6, 30)}`;

let dir: ReturnType<typeof tempDir>;
let app: App;
let sink: Sink;
let apiUrl: string;
let webhooksUrl: string;
let managementUrl: string;
const logs = captureLogs('debug');
/** Every API answer, except the create and rotate answers that legitimately carry a secret once. */
const answers: string[] = [];
const secrets: string[] = [SECRET_A, SECRET_B, HEADER_SECRET];

async function api(method: string, path: string, options: Parameters<typeof call>[3] = {}): Promise<Reply> {
  const r = await call(apiUrl, method, path, options);
  answers.push(`${method} ${path} ${r.status} ${JSON.stringify(r.headers)} ${r.text}`);
  return r;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

before(async () => {
  dir = tempDir('wr-api-e2e-');
  sink = await startSink();
  const config = Config.parse({
    listen: { webhooks: 0, api: 0, management: 0, host: '127.0.0.1' },
    queue: { kind: 'sqlite', path: join(dir.path, 'queue.db'), pollIntervalMs: 10 },
    store: { kind: 'sqlite', path: join(dir.path, 'router.db') },
    sources: [{ id: 'github', kind: 'github', secrets: [GITHUB_SECRET] }],
    egress: { allow: ['127.0.0.1/32'] },
    delivery: { timeoutMs: 3_000 },
    worker: { pollIntervalMs: 20 },
    api: { tokens: [{ name: 'admin', token: tokens.admin, scopes: ['*'] }] },
    secrets: { encryptionKey: ENCRYPTION_KEY },
    log: { level: 'debug' },
    shutdownGraceMs: 1_000,
  });
  app = await buildApp(config, { logger: logs.logger, roles: ['receiver', 'worker', 'api'], migrate: true, lookup: fakeLookup });
  await app.start();
  apiUrl = `http://127.0.0.1:${app.ports.api}`;
  webhooksUrl = `http://127.0.0.1:${app.ports.webhooks}`;
  managementUrl = `http://127.0.0.1:${app.ports.management}`;
});

after(async () => {
  await app?.close();
  await sink?.close();
  dir?.remove();
});

test('README walkthrough end to end, and the secrets appear only where they are handed out', async () => {
  // 1. Create two subscribers with known secrets (the answers carry them once; they are kept out of `answers`).
  sink.behave('/b', status(400));
  const createdA = await call(apiUrl, 'POST', '/v1/subscribers', {
    body: {
      name: 'ci-dashboard',
      secret: SECRET_A,
      filter: { sources: ['github'], events: ['push'], repositories: ['acme/*'] },
      transport: { kind: 'https', url: sink.url('/a'), headers: { Authorization: `Bearer ${HEADER_SECRET}` }, secretHeaders: ['Authorization'] },
    },
  });
  assert.equal(createdA.status, 201, createdA.text);
  assert.equal(createdA.json.secret, SECRET_A);
  assert.ok(!createdA.text.includes(HEADER_SECRET), 'transport credentials are not echoed even at creation');
  const createdB = await call(apiUrl, 'POST', '/v1/subscribers', {
    body: { name: 'flaky', secret: SECRET_B, filter: { events: ['push'] }, transport: { kind: 'https', url: sink.url('/b') } },
  });
  assert.equal(createdB.status, 201, createdB.text);
  const a = createdA.json.id as string;
  const b = createdB.json.id as string;
  await sleep(SUBSCRIBER_REFRESH_MS + 100); // the worker's subscriber cache picks them up

  // 2. Send a signed webhook.
  const payload = { ref: 'refs/heads/main', repository: { full_name: 'acme/app' }, sender: { login: 'octocat', type: 'User' } };
  const sent = await postWebhook(`${webhooksUrl}/webhooks/github`, githubWebhook({ event: 'push', payload }));
  assert.equal(sent.status, 202, JSON.stringify(sent.json));
  const eventId = sent.eventId as string;

  // The worker signs with the plaintext secret it got through the decrypting store, and sends the credential.
  const [toA] = await sink.waitForCount('/a', 1, 10_000);
  assert.ok(toA);
  const ts = toA.header('webhook-timestamp') as string;
  assert.equal(toA.header('webhook-signature'), standardSignature(SECRET_A, toA.header('webhook-id') as string, ts, toA.body));
  assert.equal(toA.header('authorization'), `Bearer ${HEADER_SECRET}`);

  // 3. See the deliveries and their attempts.
  const deliveries = await api('GET', `/v1/deliveries?event=${eventId}`);
  assert.equal(deliveries.json.items.length, 2);
  const toB = await waitFor('the delivery to b to be dead-lettered', async () => {
    const r = await api('GET', `/v1/deliveries?subscriber=${b}&status=dead`);
    return r.json.items[0] as { id: string } | undefined;
  });
  const detail = await api('GET', `/v1/deliveries/${toB.id}`);
  assert.equal(detail.json.attemptLog.length, 1);
  assert.equal(detail.json.attemptLog[0].status, 400);
  await api('GET', `/v1/deliveries/${toB.id}?include=response`);
  const event = await api('GET', `/v1/events/${eventId}?include=body`);
  assert.equal(JSON.parse(Buffer.from(event.json.body, 'base64').toString()).ref, 'refs/heads/main');
  assert.equal(event.json.headers['x-hub-signature-256'], undefined, "the source's signature is not shown");

  // 4. Replay from the DLQ once b is fixed.
  const dlq = await api('GET', `/v1/dlq?subscriber=${b}`);
  assert.equal(dlq.json.items[0].reason, 'rejected');
  sink.behave('/b', ok());
  await api('POST', '/v1/dlq/replay', { body: { filter: { subscriber: b }, dryRun: true } });
  const replay = await api('POST', '/v1/dlq/replay', { body: { filter: { subscriber: b } } });
  assert.equal(replay.json.replayed, 1);
  await waitFor('the replayed delivery', async () => ((await api('GET', `/v1/deliveries/${toB.id}`)).json.status === 'delivered' ? true : undefined));
  const replayed = sink.requests('/b').at(-1) as SinkRequest;
  assert.equal(replayed.header('webhook-id'), toB.id, 'a replay keeps the webhook-id');
  assert.equal(
    replayed.header('webhook-signature'),
    standardSignature(SECRET_B, toB.id, replayed.header('webhook-timestamp') as string, replayed.body),
  );

  // 5. Rotate a's secret: new deliveries carry both signatures.
  const rotated = await call(apiUrl, 'POST', `/v1/subscribers/${a}/rotate-secret`);
  assert.equal(rotated.status, 200, rotated.text);
  const newSecret = rotated.json.secret as string;
  secrets.push(newSecret);
  await sleep(SUBSCRIBER_REFRESH_MS + 100);
  const second = await postWebhook(`${webhooksUrl}/webhooks/github`, githubWebhook({ event: 'push', payload }));
  assert.equal(second.status, 202);
  const afterRotation = (await sink.waitForCount('/a', 2, 10_000))[1] as SinkRequest;
  const ts2 = afterRotation.header('webhook-timestamp') as string;
  const id2 = afterRotation.header('webhook-id') as string;
  assert.equal(afterRotation.header('webhook-signature'), `${standardSignature(newSecret, id2, ts2, afterRotation.body)} ${standardSignature(SECRET_A, id2, ts2, afterRotation.body)}`);

  // 6. Every other route, including failures that carry secret-shaped input.
  const read = await api('GET', `/v1/subscribers/${a}`);
  await api('GET', '/v1/subscribers');
  await api('PATCH', `/v1/subscribers/${a}`, { body: { transport: read.json.transport, name: 'ci-dashboard-2' }, headers: { 'if-match': read.headers.etag as string } });
  await api('PATCH', `/v1/subscribers/${a}`, { body: { name: 'stale' }, headers: { 'if-match': read.headers.etag as string } });
  await api('POST', `/v1/subscribers/${a}/test`);
  await api('POST', '/v1/subscribers', { body: { name: 'bad', secret: `${SECRET_A}!`, transport: { kind: 'https', url: sink.url('/c') } } });
  await api('POST', '/v1/subscribers', { body: { name: 'bad', transport: { kind: 'https', url: `https://internal.example.com/${HEADER_SECRET}` } } });
  await api('POST', `/v1/subscribers/${a}/rotate-secret`, { body: { secret: SECRET_B.slice(0, 20) } });
  await api('GET', '/v1/subscribers', { token: SECRET_A });
  await api('POST', `/v1/deliveries/${toB.id}/retry`);
  await api('GET', '/v1/dlq');
  await api('DELETE', '/v1/dlq/msg_unknown');
  await api('GET', '/openapi.json', { token: null });
  const created = await call(apiUrl, 'POST', '/v1/subscribers', { body: { name: 'to-delete', transport: { kind: 'https', url: sink.url('/d') } } });
  secrets.push(created.json.secret);
  await api('DELETE', `/v1/subscribers/${created.json.id}`);

  // 7. The leak hunt.
  const metrics = await (await request(`${managementUrl}/metrics`)).body.text();
  assert.match(metrics, /router_api_requests_total\{method="POST",route="\/v1\/subscribers",status="201"\}/);
  await app.close(); // flush the databases to their files
  const files = readdirSync(dir.path)
    .filter((f) => f.startsWith('router.db'))
    .map((f) => readFileSync(join(dir.path, f)).toString('latin1'));
  assert.ok(files.join('').includes('ci-dashboard-2'), 'the scan reads the stored rows');
  const logText = logs.lines.join('');
  assert.match(logText, /"msg":"api request"/, 'debug logs were captured');
  const places: [string, string][] = [
    ['API answers', answers.join('\n')],
    ['/metrics', metrics],
    ['logs', logText],
    ['the store files', files.join('')],
  ];
  for (const secret of secrets) {
    const forms = [secret, secret.replace(/^whsec_/, ''), Buffer.from(secret).toString('base64')];
    for (const [where, text] of places) {
      for (const form of forms) assert.ok(!text.includes(form), `a secret (${secret.slice(0, 8)}…) appears in ${where}`);
    }
  }
});
