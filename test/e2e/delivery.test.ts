/**
 * The delivery engine end to end (design §1, §4–6): signed GitHub webhooks go through the real receiver, the SQLite
 * queue, the worker's ingest and dispatcher, the https transport over loopback, into a sink (test/helpers/sink.ts)
 * that plays the subscribers. Each test starts its own router (test/helpers/router.ts) with subscribers written to
 * the store before start, and its own sink.
 *
 * Negatives ("this subscriber got nothing") are proven, not waited out: a later event that the subscriber does match
 * is sent afterwards; once it has arrived, the earlier event was certainly ingested (one FIFO queue, one consumer),
 * and the store is asked whether a delivery row exists for the pair. No row means no request can ever be made.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, test, type TestContext } from 'node:test';
import { verify as verifyGithub } from '@octokit/webhooks-methods';
import { Webhook } from 'standardwebhooks';
import {
  GITHUB_SECRET,
  type RouterOptions,
  startRouter,
  type SubscriberInput,
  type TestRouter,
  waitUntil,
} from '../helpers/router.ts';
import { gone, hang, ok, type Sink, type SinkRequest, slow, startSink, status } from '../helpers/sink.ts';
import { deliveryId as newGuid, githubSignature } from '../helpers/sign.ts';

// ---------------------------------------------------------------------------------------------------------------
// Fixtures: real payloads from @octokit/webhooks-examples, cloned and adjusted where a case needs other values.

// Fixture payloads are deep, loosely shaped JSON that the cases edit in place.
// biome-ignore lint/suspicious/noExplicitAny: test fixtures
type Json = Record<string, any>;
interface ExampleDefinition {
  readonly name: string;
  readonly examples: readonly Json[];
}
const definitions = createRequire(import.meta.url)('@octokit/webhooks-examples') as ExampleDefinition[];

function example(name: string, index: number): Json {
  const found = definitions.find((d) => d.name === name)?.examples[index];
  assert.ok(found, `@octokit/webhooks-examples has no ${name}[${index}]`);
  return structuredClone(found);
}

function setRepository(p: Json, fullName: string): Json {
  const [owner, name] = fullName.split('/');
  p.repository.full_name = fullName;
  p.repository.name = name;
  p.repository.owner.login = owner;
  return p;
}

function pushPayload(o: { repo: string; ref: string; senderType?: string; message?: string; archived?: boolean }): Json {
  const p = setRepository(example('push', 4), o.repo); // Codertocat/Hello-World, refs/heads/master
  p.ref = o.ref;
  p.sender.type = o.senderType ?? 'User';
  p.head_commit.message = o.message ?? 'fix a typo';
  if (o.archived !== undefined) p.repository.archived = o.archived;
  return p;
}

function pullRequestPayload(o: { action: string; repo: string; base: string; additions: number; senderType?: string }): Json {
  const p = setRepository(example('pull_request', 14), o.repo); // opened
  p.action = o.action;
  p.pull_request.base.ref = o.base;
  p.pull_request.additions = o.additions;
  p.sender.type = o.senderType ?? 'User';
  return p;
}

function workflowRunPayload(o: { repo: string; branch: string }): Json {
  const p = setRepository(example('workflow_run', 1), o.repo); // completed
  p.workflow_run.head_branch = o.branch;
  return p;
}

function issuesPayload(o: { repo: string }): Json {
  return setRepository(example('issues', 15), o.repo); // opened
}

// ---------------------------------------------------------------------------------------------------------------
// Harness

/** Starts a sink and a router for one test; closes both afterwards and keeps the temp dir when the test failed. */
async function scenario(
  t: TestContext,
  setup: (sink: Sink) => RouterOptions,
  body: (router: TestRouter, sink: Sink) => Promise<void>,
): Promise<void> {
  const sink = await startSink();
  let router: TestRouter | undefined;
  let failed = true;
  try {
    router = await startRouter(setup(sink));
    await body(router, sink);
    failed = false;
  } finally {
    await router?.close({ keep: failed });
    await sink.close();
    if (failed && router) t.diagnostic(`kept ${router.dir}`);
  }
}

const on = (path: string) => (r: SinkRequest) => r.path === path;
const guidOf = (r: SinkRequest) => r.header('x-github-delivery');
/** Header names and values as the standardwebhooks verifier wants them. */
const plainHeaders = (r: SinkRequest): Record<string, string> =>
  Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : String(v)]));

function assertAccepted(res: { status: number; eventId: string | undefined; json: unknown }, expected = 202): string {
  assert.equal(res.status, expected, `receiver answered ${res.status}: ${JSON.stringify(res.json)}`);
  assert.ok(res.eventId, 'the answer carries the event id');
  return res.eventId;
}

/** Sorted X-GitHub-Delivery values of one path's requests. */
const guidsOn = (sink: Sink, path: string) => sink.requests(path).map(guidOf).sort();

const WAIT = 10_000;

type Filter = NonNullable<SubscriberInput['filter']>;

describe('delivery engine, end to end over loopback', () => {
  test('delivers the exact bytes with a verifiable webhook-signature; webhook-id is stable; source headers pass, its signature does not', async (t) => {
    await scenario(
      t,
      (sink) => {
        // One failure first, so the same delivery is seen twice and its webhook-id can be compared across attempts.
        sink.behave('/sw', status(500), ok());
        return {
          subscribers: [
            { id: 'sub_sw', url: sink.url('/sw'), filter: { events: ['push'] }, retry: { schedule: [0.2], maxAttempts: 3 } },
            { id: 'sub_gh', url: sink.url('/gh'), filter: { events: ['push'] }, transport: { signing: 'github' } },
          ],
        };
      },
      async (router, sink) => {
        // A real GitHub push, pretty-printed with CRLF line ends and a non-ASCII commit message: bytes a router that
        // re-serialised JSON or transcoded text would change.
        const payload = example('push', 4);
        payload.head_commit.message = 'Initial commit — café ☕ 🚀';
        const body = JSON.stringify(payload, null, 2).replaceAll('\n', '\r\n');
        const sent = Buffer.from(body, 'utf8');
        const guid = newGuid();
        const hookId = 98_765;
        const res = await router.sendGithub({ event: 'push', body, delivery: guid, hookId });
        const eventId = assertAccepted(res);
        const sourceSignature = res.request.headers['x-hub-signature-256'];
        assert.ok(sourceSignature);

        await sink.waitFor((rs) => rs.filter(on('/sw')).length >= 2 && rs.filter(on('/gh')).length >= 1, WAIT);
        const sw = router.subscribers.get('sub_sw')!;
        const gh = router.subscribers.get('sub_gh')!;
        const swRequests = sink.requests('/sw');
        const [ghRequest] = sink.requests('/gh');
        assert.ok(ghRequest);

        for (const r of [...swRequests, ghRequest]) {
          assert.ok(r.body.equals(sent), `${r.path}: body differs from what the source sent (${r.body.length} vs ${sent.length} bytes)`);
          assert.equal(r.method, 'POST');
          assert.equal(r.header('x-github-event'), 'push');
          assert.equal(r.header('x-github-delivery'), guid);
          assert.equal(r.header('x-github-hook-id'), String(hookId));
          assert.equal(r.header('content-type'), 'application/json');
          assert.match(r.header('user-agent') ?? '', /^webhook-router\//);
          assert.notEqual(r.header('x-hub-signature-256'), sourceSignature, `${r.path}: the source's own signature was forwarded`);
          // The signature covers the bytes received, with the subscriber's secret (standardwebhooks also checks the
          // timestamp is within 5 minutes).
          const secret = r.path === '/sw' ? sw.secrets.current : gh.secrets.current;
          assert.doesNotThrow(() => new Webhook(secret).verify(r.body, plainHeaders(r)), `${r.path}: webhook-signature does not verify`);
          const other = r.path === '/sw' ? gh.secrets.current : sw.secrets.current;
          assert.throws(() => new Webhook(other).verify(r.body, plainHeaders(r)), `${r.path}: verified with another subscriber's secret`);
        }

        // Standard Webhooks signing: no X-Hub-Signature-256 at all; the same webhook-id on every attempt.
        for (const r of swRequests) assert.equal(r.header('x-hub-signature-256'), undefined, 'the source signature travelled on');
        const swIds = new Set(swRequests.map((r) => r.header('webhook-id')));
        assert.equal(swIds.size, 1, `webhook-id changed between attempts: ${[...swIds].join(', ')}`);
        assert.equal(swRequests[0]?.header('webhook-id'), await router.deliveryId(eventId, 'sub_sw'));
        assert.deepEqual(swRequests.map((r) => r.header('webhook-attempt')), ['1', '2']);

        // GitHub signing: X-Hub-Signature-256 made with the subscriber's secret over the exact bytes, not the source's.
        const ghSignature = ghRequest.header('x-hub-signature-256');
        assert.ok(ghSignature, 'signing "github" sends X-Hub-Signature-256');
        assert.equal(await verifyGithub(gh.secrets.current, body, ghSignature), true, 'X-Hub-Signature-256 does not verify with the subscriber secret');
        assert.equal(await verifyGithub(GITHUB_SECRET, body, ghSignature), false, 'X-Hub-Signature-256 verifies with the source secret');
        assert.equal(ghSignature, githubSignature(gh.secrets.current, sent));
        assert.equal(ghRequest.header('webhook-id'), await router.deliveryId(eventId, 'sub_gh'));
        assert.notEqual(ghRequest.header('webhook-id'), swRequests[0]?.header('webhook-id'));

        const done = await router.waitForDelivery(eventId, 'sub_sw', WAIT);
        assert.equal(done.status, 'delivered');
        assert.equal(done.attempts, 2);
      },
    );
  });

  test('fans one event out to every matching subscriber: one request each, distinct delivery ids', async (t) => {
    const ids = ['sub_a', 'sub_b', 'sub_c'];
    await scenario(
      t,
      (sink) => ({ subscribers: ids.map((id) => ({ id, url: sink.url(`/${id}`), filter: { events: ['push'] } })) }),
      async (router, sink) => {
        const eventId = assertAccepted(await router.sendGithub({ event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main' }) }));
        await sink.waitFor((rs) => ids.every((id) => rs.some(on(`/${id}`))), WAIT);
        // Delivered is final: once the store says so for each pair, no further request can come for it.
        for (const id of ids) assert.equal((await router.waitForDelivery(eventId, id, WAIT)).status, 'delivered');
        for (const id of ids) assert.equal(sink.requests(`/${id}`).length, 1, `${id} got more than one request`);
        const webhookIds = ids.map((id) => sink.requests(`/${id}`)[0]?.header('webhook-id'));
        assert.deepEqual(webhookIds, await Promise.all(ids.map((id) => router.deliveryId(eventId, id))));
        assert.equal(new Set(webhookIds).size, ids.length, 'delivery ids are not distinct');
      },
    );
  });

  test('filters: events with actions and wildcards, repositories with negation, branches, match operators', async (t) => {
    type Sub = 'ev' | 'repo' | 'br' | 'm';
    const subscribers: Record<Sub, Filter> = {
      ev: { events: ['push', 'pull_request.opened', 'workflow_run.*'] },
      repo: { repositories: ['acme/*', '!acme/secret-*'] },
      br: { branches: ['main', 'release/*'] },
      m: {
        match: {
          $and: [
            { 'payload.sender.type': { $ne: 'Bot' } },
            { event: { $in: ['push', 'pull_request'] } },
            { $or: [{ 'payload.pull_request.additions': { $gte: 100 } }, { 'payload.head_commit.message': { $startsWith: 'release:' } }] },
            { $not: { 'payload.repository.archived': true } },
          ],
        },
      },
    };
    // Expected recipients written out by hand from the filters above, not computed with the matcher under test.
    const cases: { name: string; event: string; payload: Json; to: Sub[] }[] = [
      { name: 'push acme/api main release', event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main', message: 'release: 1.2' }), to: ['ev', 'repo', 'br', 'm'] },
      { name: 'push to an excluded repo', event: 'push', payload: pushPayload({ repo: 'acme/secret-keys', ref: 'refs/heads/main' }), to: ['ev', 'br'] },
      { name: 'bot push, other owner, feature branch', event: 'push', payload: pushPayload({ repo: 'other/api', ref: 'refs/heads/feature/x', senderType: 'Bot', message: 'release: x' }), to: ['ev'] },
      { name: 'pull_request.closed, big', event: 'pull_request', payload: pullRequestPayload({ action: 'closed', repo: 'acme/api', base: 'main', additions: 500 }), to: ['repo', 'br', 'm'] },
      { name: 'pull_request.opened, small, release base', event: 'pull_request', payload: pullRequestPayload({ action: 'opened', repo: 'acme/web', base: 'release/2.0', additions: 5 }), to: ['ev', 'repo', 'br'] },
      { name: 'workflow_run.completed in an excluded repo', event: 'workflow_run', payload: workflowRunPayload({ repo: 'acme/secret-x', branch: 'develop' }), to: ['ev'] },
      { name: 'issues.opened (no ref)', event: 'issues', payload: issuesPayload({ repo: 'acme/api' }), to: ['repo'] },
      { name: 'tag push (never a branch)', event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/tags/v1.0', message: 'release: tag' }), to: ['ev', 'repo', 'm'] },
      { name: 'bot pull_request.opened, big', event: 'pull_request', payload: pullRequestPayload({ action: 'opened', repo: 'acme/api', base: 'main', additions: 150, senderType: 'Bot' }), to: ['ev', 'repo', 'br'] },
      { name: 'push to an archived repo', event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main', message: 'release: y', archived: true }), to: ['ev', 'repo', 'br'] },
      // Last: matches every subscriber, so its arrival shows everything before it was ingested.
      { name: 'marker', event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/release/3', message: 'release: 3' }), to: ['ev', 'repo', 'br', 'm'] },
    ];
    const names = Object.keys(subscribers) as Sub[];
    await scenario(
      t,
      (sink) => ({ subscribers: names.map((id) => ({ id, url: sink.url(`/${id}`), filter: subscribers[id] })) }),
      async (router, sink) => {
        const sent: { name: string; guid: string; eventId: string; to: Sub[] }[] = [];
        for (const c of cases) {
          const guid = newGuid();
          const res = await router.sendGithub({ event: c.event, payload: c.payload, delivery: guid });
          sent.push({ name: c.name, guid, eventId: assertAccepted(res), to: c.to });
        }
        const expected = (s: Sub) => sent.filter((e) => e.to.includes(s)).map((e) => e.guid).sort();
        await sink
          .waitFor((rs) => names.every((s) => expected(s).every((g) => rs.some((r) => r.path === `/${s}` && guidOf(r) === g))), WAIT)
          .catch(() => {}); // a shortfall shows up as a readable diff below
        const label = (guids: (string | undefined)[]) => guids.map((g) => sent.find((e) => e.guid === g)?.name ?? g).sort();
        for (const s of names) assert.deepEqual(label(guidsOn(sink, `/${s}`)), label(expected(s)), `subscriber ${s} received the wrong events`);
        // The marker was ingested after every other event; no delivery row means nothing will ever be sent.
        for (const e of sent) {
          for (const s of names) {
            if (e.to.includes(s)) continue;
            assert.equal(await router.delivery(e.eventId, s), undefined, `a delivery of "${e.name}" to ${s} exists`);
          }
        }
      },
    );
  });

  test('the same webhook sent twice (recent-keys hint off) and concurrently yields one delivery per subscriber', async (t) => {
    await scenario(
      t,
      (sink) => ({
        receiver: { recentKeys: 0 },
        subscribers: ['sub_a', 'sub_b'].map((id) => ({ id, url: sink.url(`/${id}`), filter: { events: ['push'] } })),
      }),
      async (router, sink) => {
        const guid = newGuid();
        const payload = pushPayload({ repo: 'acme/api', ref: 'refs/heads/main' });
        const first = await router.sendGithub({ event: 'push', payload, delivery: guid, hookId: 1 });
        const eventId = assertAccepted(first);
        const again = await router.post(first.request);
        assert.ok(again.status === 200 || again.status === 202, `a repeat is answered 2xx, got ${again.status}`);
        assert.equal(again.eventId, eventId, 'a repeat carries the same event id');
        const copies = await Promise.all(Array.from({ length: 5 }, () => router.post(first.request)));
        for (const c of copies) assert.equal(c.eventId, eventId);
        // Same GUID through another hook: a different event (design §4: the GUID alone is shared across hooks).
        const otherHook = assertAccepted(await router.sendGithub({ event: 'push', payload, delivery: guid, hookId: 2 }));
        assert.notEqual(otherHook, eventId);
        const marker = newGuid();
        const markerId = assertAccepted(await router.sendGithub({ event: 'push', payload, delivery: marker, hookId: 1 }));

        for (const s of ['sub_a', 'sub_b']) {
          await sink.waitFor((rs) => rs.some((r) => r.path === `/${s}` && guidOf(r) === marker), WAIT);
          for (const id of [eventId, otherHook, markerId]) assert.equal((await router.waitForDelivery(id, s, WAIT)).status, 'delivered');
          const hooks = sink.requests(`/${s}`).filter((r) => guidOf(r) === guid).map((r) => r.header('x-github-hook-id')).sort();
          assert.deepEqual(hooks, ['1', '2'], `${s}: one request per (hook, delivery), got hooks ${hooks.join(',')}`);
          assert.equal(sink.requests(`/${s}`).length, 3);
          const ids = sink.requests(`/${s}`).map((r) => r.header('webhook-id'));
          assert.equal(new Set(ids).size, 3);
        }
      },
    );
  });

  test('retries after 500s on its own schedule and delivers on attempt 3; every attempt is recorded', async (t) => {
    await scenario(
      t,
      (sink) => {
        sink.behave('/r', status(500), status(500), ok());
        return { subscribers: [{ id: 'sub_r', url: sink.url('/r'), retry: { schedule: [0.2, 0.2], maxAttempts: 3 } }] };
      },
      async (router, sink) => {
        const eventId = assertAccepted(await router.sendGithub({ event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main' }) }));
        const requests = await sink.waitForCount('/r', 3, WAIT);
        const delivery = await router.waitForDelivery(eventId, 'sub_r', WAIT);
        assert.equal(delivery.status, 'delivered');
        assert.equal(delivery.attempts, 3);
        assert.deepEqual(
          delivery.attemptLog.map((a) => ({ attempt: a.attempt, outcome: a.outcome, code: a.code, status: a.status })),
          [
            { attempt: 1, outcome: 'retryable', code: 'http_5xx', status: 500 },
            { attempt: 2, outcome: 'retryable', code: 'http_5xx', status: 500 },
            { attempt: 3, outcome: 'delivered', code: undefined, status: 200 },
          ],
        );
        assert.deepEqual(requests.map((r) => r.header('webhook-attempt')), ['1', '2', '3']);
        assert.equal(new Set(requests.map((r) => r.header('webhook-id'))).size, 1);
        // 0.2 s with ±20 % jitter between attempts, measured at the sink.
        for (let i = 1; i < requests.length; i++) {
          const gap = requests[i]!.at - requests[i - 1]!.at;
          assert.ok(gap >= 155 && gap < 2_000, `gap before attempt ${i + 1} was ${gap.toFixed(0)} ms, schedule says 160–240 ms`);
        }
        assert.equal(sink.requests('/r').length, 3);
      },
    );
  });

  test('429 with Retry-After: 1 delays the next attempt by at least a second', async (t) => {
    await scenario(
      t,
      (sink) => {
        sink.behave('/t', status(429, 1), ok());
        return { subscribers: [{ id: 'sub_t', url: sink.url('/t'), retry: { schedule: [0.05], maxAttempts: 3 } }] };
      },
      async (router, sink) => {
        const eventId = assertAccepted(await router.sendGithub({ event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main' }) }));
        const [first, second] = await sink.waitForCount('/t', 2, WAIT);
        const gap = second!.at - first!.at;
        // The schedule alone would retry after ~50 ms; Retry-After is a floor. 5 ms of slack for Date.now's rounding.
        assert.ok(gap >= 995, `the retry came ${gap.toFixed(0)} ms after the 429, before Retry-After allowed`);
        assert.ok(gap < 3_000, `the retry came ${gap.toFixed(0)} ms after the 429; expected about 1 s`);
        const delivery = await router.waitForDelivery(eventId, 'sub_t', WAIT);
        assert.equal(delivery.status, 'delivered');
        assert.deepEqual(delivery.attemptLog.map((a) => [a.code, a.status]), [['http_429', 429], [undefined, 200]]);
      },
    );
  });

  test('410 Gone disables the subscriber and dead-letters the delivery as endpoint_gone', async (t) => {
    await scenario(
      t,
      (sink) => {
        sink.behave('/gone', gone());
        return {
          subscribers: [
            { id: 'sub_gone', url: sink.url('/gone'), retry: { schedule: [0.05], maxAttempts: 5 } },
            { id: 'sub_ok', url: sink.url('/ok') },
          ],
        };
      },
      async (router, sink) => {
        const eventId = assertAccepted(await router.sendGithub({ event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main' }) }));
        const delivery = await router.waitForDelivery(eventId, 'sub_gone', WAIT);
        assert.equal(delivery.status, 'dead');
        assert.equal(delivery.attempts, 1, '410 is permanent: no retry');
        const letters = await router.store.listDeadLetters({ subscriber: 'sub_gone' }, { limit: 10 });
        assert.equal(letters.items.length, 1);
        assert.equal(letters.items[0]?.reason, 'endpoint_gone');
        assert.equal(letters.items[0]?.deliveryId, await router.deliveryId(eventId, 'sub_gone'));
        assert.equal(letters.items[0]?.lastStatus, 410);
        assert.equal(letters.items[0]?.attempts, 1);
        await waitUntil(async () => (await router.getSubscriber('sub_gone'))?.enabled === false, WAIT, 'sub_gone to be disabled');
        const sub = await router.getSubscriber('sub_gone');
        assert.equal(sub?.disabledReason, 'endpoint_gone');

        // Later events skip the disabled subscriber; the healthy one keeps receiving.
        const later = newGuid();
        const laterId = assertAccepted(await router.sendGithub({ event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main' }), delivery: later }));
        await sink.waitFor((rs) => rs.some((r) => r.path === '/ok' && guidOf(r) === later), WAIT);
        assert.equal(sink.requests('/gone').length, 1);
        assert.equal(await router.delivery(laterId, 'sub_gone'), undefined, 'a delivery was created for a disabled subscriber');
      },
    );
  });

  test('after max attempts the delivery is dead-lettered; replay delivers it with the same webhook-id', async (t) => {
    await scenario(
      t,
      (sink) => {
        sink.behave('/d', status(500));
        return { subscribers: [{ id: 'sub_d', url: sink.url('/d'), retry: { schedule: [0.05, 0.05], maxAttempts: 3 } }] };
      },
      async (router, sink) => {
        const eventId = assertAccepted(await router.sendGithub({ event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main' }) }));
        const dead = await router.waitForDelivery(eventId, 'sub_d', WAIT);
        assert.equal(dead.status, 'dead');
        assert.equal(sink.requests('/d').length, 3);
        const letters = await router.store.listDeadLetters({ subscriber: 'sub_d' }, { limit: 10 });
        assert.equal(letters.items.length, 1);
        const letter = letters.items[0]!;
        assert.equal(letter.reason, 'max_attempts');
        assert.equal(letter.attempts, 3);
        assert.equal(letter.lastStatus, 500);
        assert.equal(letter.lastCode, 'http_5xx');
        const webhookId = sink.requests('/d')[0]?.header('webhook-id');
        assert.equal(webhookId, await router.deliveryId(eventId, 'sub_d'));

        sink.behave('/d', ok());
        assert.equal(await router.store.replayDeadLetters([letter.id], Date.now()), 1);
        const [, , , replayed] = await sink.waitForCount('/d', 4, WAIT);
        assert.equal(replayed?.header('webhook-id'), webhookId, 'replay must keep the webhook-id');
        assert.equal(replayed?.header('webhook-attempt'), '1', 'replay starts a new attempt cycle');
        assert.doesNotThrow(() => new Webhook(router.subscribers.get('sub_d')!.secrets.current).verify(replayed!.body, plainHeaders(replayed!)));
        const done = await router.waitForDelivery(eventId, 'sub_d', WAIT);
        assert.equal(done.status, 'delivered');
        assert.equal(done.cycle, 2);
        assert.equal(done.attemptLog.length, 4);
        assert.equal((await router.store.listDeadLetters({ subscriber: 'sub_d' }, { limit: 10 })).items.length, 0);
      },
    );
  });

  test('a hanging subscriber does not slow a healthy one', async (t) => {
    const HANG_TIMEOUT_MS = 3_000;
    const N = 30;
    await scenario(
      t,
      (sink) => {
        sink.behave('/hang', hang());
        return {
          subscribers: [
            { id: 'sub_hang', url: sink.url('/hang'), transport: { timeoutMs: HANG_TIMEOUT_MS }, limits: { concurrency: 5 } },
            { id: 'sub_fast', url: sink.url('/fast') },
          ],
        };
      },
      async (router, sink) => {
        const started = performance.now();
        const results = await Promise.all(
          Array.from({ length: N }, (_, i) =>
            router.sendGithub({ event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main', message: `commit ${i}` }) }),
          ),
        );
        for (const r of results) assertAccepted(r);
        const all = await sink.waitFor((rs) => rs.filter(on('/fast')).length >= N, WAIT);
        const fast = all.filter(on('/fast'));
        const hanging = all.filter(on('/hang'));
        const lastFast = Math.max(...fast.map((r) => r.at));
        t.diagnostic(`healthy subscriber received ${N} deliveries ${(lastFast - started).toFixed(0)} ms after the first send; ${hanging.length} requests hanging`);
        assert.equal(new Set(fast.map(guidOf)).size, N);
        assert.ok(hanging.length >= 1, 'the hanging subscriber was tried');
        assert.ok(hanging.length <= 5, `the hanging subscriber held ${hanging.length} requests, above its concurrency of 5`);
        assert.ok(lastFast - started < HANG_TIMEOUT_MS * 0.75, `the healthy subscriber took ${(lastFast - started).toFixed(0)} ms`);
        const firstHang = Math.min(...hanging.map((r) => r.at));
        assert.ok(lastFast < firstHang + HANG_TIMEOUT_MS, 'the healthy subscriber finished only after a hanging attempt timed out');
        assert.equal(sink.pending('/hang'), hanging.length, 'hanging requests were answered or cut before their deadline');
      },
    );
  });

  test('ping reaches only subscribers that list ping', async (t) => {
    const filters: Record<string, Filter> = { p: { events: ['ping'] }, all: { events: ['*'] }, any: {}, push: { events: ['push'] } };
    const names = Object.keys(filters);
    await scenario(
      t,
      (sink) => ({ subscribers: names.map((id) => ({ id, url: sink.url(`/${id}`), filter: filters[id]! })) }),
      async (router, sink) => {
        const ping = newGuid();
        const pingId = assertAccepted(await router.sendGithub({ event: 'ping', payload: example('ping', 0), delivery: ping }), 200);
        const marker = newGuid();
        const markerId = assertAccepted(await router.sendGithub({ event: 'push', payload: pushPayload({ repo: 'acme/api', ref: 'refs/heads/main' }), delivery: marker }));
        await sink.waitFor(
          (rs) => rs.some((r) => r.path === '/p' && guidOf(r) === ping) && ['all', 'any', 'push'].every((s) => rs.some((r) => r.path === `/${s}` && guidOf(r) === marker)),
          WAIT,
        );
        assert.deepEqual(guidsOn(sink, '/p'), [ping]);
        assert.equal(sink.requests('/p')[0]?.header('x-github-event'), 'ping');
        for (const s of ['all', 'any', 'push']) {
          assert.deepEqual(guidsOn(sink, `/${s}`), [marker], `${s} got the ping`);
          assert.equal(await router.delivery(pingId, s), undefined, `a ping delivery to ${s} exists`);
        }
        assert.equal(await router.delivery(markerId, 'p'), undefined);
      },
    );
  });

  test('ordering key {repository}: one repository in acceptance order, one at a time, through a failure and a slow sink', async (t) => {
    await scenario(
      t,
      (sink) => {
        // The very first request fails; every later one is answered after 80 ms.
        sink.behave('/o', (_r, n) => (n === 1 ? status(500) : slow(80)));
        return {
          subscribers: [
            { id: 'sub_o', url: sink.url('/o'), ordering: { key: '{repository}' }, retry: { schedule: [0.3], maxAttempts: 5 } },
          ],
        };
      },
      async (router, sink) => {
        const order = ['api', 'web', 'api', 'web', 'api', 'web', 'api', 'api'];
        const sent: { repo: string; guid: string }[] = [];
        for (const [i, r] of order.entries()) {
          const guid = newGuid();
          const repo = `acme/${r}`;
          // Sequential: acceptance order is send order.
          assertAccepted(await router.sendGithub({ event: 'push', payload: pushPayload({ repo, ref: 'refs/heads/main', message: `${r} ${i}` }), delivery: guid }));
          sent.push({ repo, guid });
        }
        // N deliveries + the one retry.
        await sink.waitFor((rs) => rs.filter(on('/o')).length >= order.length + 1 && rs.filter(on('/o')).every((r) => r.answeredAt !== undefined), WAIT);
        const got = sink.requests('/o');
        const repoOf = (r: SinkRequest) => (JSON.parse(r.body.toString('utf8')) as Json).repository.full_name as string;
        for (const repo of ['acme/api', 'acme/web']) {
          const expected = sent.filter((s) => s.repo === repo).map((s) => s.guid);
          const seen = got.filter((r) => repoOf(r) === repo);
          const firstFailed = repo === 'acme/api';
          assert.deepEqual(
            seen.map(guidOf),
            firstFailed ? [expected[0], ...expected] : expected,
            `${repo} arrived out of acceptance order`,
          );
          // One at a time: each request of a key starts after the previous one was answered.
          for (let i = 1; i < seen.length; i++) {
            assert.ok(seen[i]!.at >= seen[i - 1]!.answeredAt!, `${repo}: request ${i + 1} started while request ${i} was in flight`);
          }
        }
        // Another key is not held back by acme/api's failed first delivery.
        const apiRetry = got.filter((r) => repoOf(r) === 'acme/api')[1]!;
        const firstWeb = got.find((r) => repoOf(r) === 'acme/web')!;
        assert.ok(firstWeb.at < apiRetry.at, 'acme/web waited for acme/api');
        assert.equal(got.length, order.length + 1);
      },
    );
  });
});
