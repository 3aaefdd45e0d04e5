/**
 * /v1/subscribers through real HTTP against a running API, once per store harness: CRUD, validation (provider
 * schemas, SSRF registration check, templates, unknown fields), auth and scopes, pagination, ETag/If-Match,
 * secrets shown once and encrypted at rest, rotation, and the test ping against a loopback sink.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Subscriber } from '../../src/subscribers/model.ts';
import { randomWhsecSecret, standardSignature } from '../helpers/sign.ts';
import { type Sink, startSink, status } from '../helpers/sink.ts';
import { type Reply, type StoreHarness, type TestApi, startApi, storeHarnesses, subscriberBody, tokens } from './harness.ts';

const HOOK = 'https://hooks.example.com/in';

function assertError(r: Reply, httpStatus: number, code: string): void {
  assert.equal(r.status, httpStatus, `expected ${httpStatus} ${code}, got ${r.status}: ${r.text}`);
  assert.equal(r.json?.error?.code, code, r.text);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok(Array.isArray(r.json.error.details));
  assert.equal(r.json.error.requestId, r.headers['x-request-id']);
  assert.ok(!/\bat .+:\d+:\d+/.test(r.text), 'no stack trace in an error body');
}

for (const harness of storeHarnesses) suite(harness);

function suite(harness: StoreHarness): void {
  describe(`subscribers API (${harness.name})`, () => {
    let t: TestApi;
    let sink: Sink;
    let clock = Date.now();
    before(async () => {
      t = await startApi(harness, { now: () => clock });
      sink = await startSink();
    });
    after(async () => {
      await t.close();
      await sink.close();
    });

    const create = (extra: Record<string, unknown> = {}, url = HOOK) => t.call('POST', '/v1/subscribers', { body: subscriberBody(url, extra) });

    test('create returns the subscriber and its signing secret once; reads never show it; it is encrypted at rest', async () => {
      const r = await create();
      assert.equal(r.status, 201, r.text);
      const { id, secret } = r.json;
      assert.match(id, /^sub_[0-9a-f]{24}$/);
      assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
      assert.equal(Buffer.from(secret.slice(6), 'base64').length, 32);
      assert.equal(r.headers.location, `/v1/subscribers/${id}`);
      assert.equal(r.headers.etag, 'W/"1"');
      assert.equal(r.headers['cache-control'], 'no-store');
      assert.deepEqual(r.json.filter, { sources: [], events: ['push', 'ping'], repositories: [], branches: [] });
      assert.deepEqual(r.json.retry, { schedule: 'standard', maxAttempts: 10 });

      const read = await t.call('GET', `/v1/subscribers/${id}`);
      assert.equal(read.status, 200);
      assert.ok(!read.text.includes(secret));
      assert.equal(read.json.secret, undefined);
      const list = await t.call('GET', '/v1/subscribers?limit=500');
      assert.ok(!list.text.includes(secret));

      const atRest = (await t.rawStore.getSubscriber(id)) as Subscriber;
      assert.match(atRest.secrets.current, /^enc:v1:/);
      assert.equal((await t.store.getSubscriber(id))?.secrets.current, secret, 'the worker sees plaintext through the decorator');
    });

    test('a known secret may be given at creation; a malformed one is refused', async () => {
      const secret = randomWhsecSecret();
      const r = await create({ secret });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.json.secret, secret);
      assertError(await create({ secret: 'not-a-secret' }), 422, 'ROUTER_ERR_VALIDATION');
      assertError(await create({ secret: `whsec_${Buffer.alloc(8).toString('base64')}` }), 422, 'ROUTER_ERR_VALIDATION');
    });

    test('transport secrets are write-only: redacted on read, kept by a PATCH that sends the placeholder back', async () => {
      const transport = { kind: 'https', url: HOOK, headers: { 'X-Api-Key': 'key-123-secret', 'X-Team': 'blue' }, secretHeaders: ['X-Api-Key'] };
      const r = await create({ transport });
      assert.equal(r.status, 201, r.text);
      assert.ok(!r.text.includes('key-123-secret'), 'not even the create response echoes a transport credential');
      assert.deepEqual(r.json.transport.headers, { 'X-Api-Key': '[redacted]', 'X-Team': 'blue' });

      const read = await t.call('GET', `/v1/subscribers/${r.json.id}`);
      const patched = await t.call('PATCH', `/v1/subscribers/${r.json.id}`, { body: { transport: { ...read.json.transport, url: 'https://other.example.com/in' } } });
      assert.equal(patched.status, 200, patched.text);
      const stored = (await t.store.getSubscriber(r.json.id)) as Subscriber;
      assert.equal(stored.transport.url, 'https://other.example.com/in');
      assert.deepEqual(stored.transport.headers, { 'X-Api-Key': 'key-123-secret', 'X-Team': 'blue' });
      const atRest = (await t.rawStore.getSubscriber(r.json.id)) as Subscriber;
      assert.ok(!JSON.stringify(atRest).includes('key-123-secret'));

      await t.call('PATCH', `/v1/subscribers/${r.json.id}`, { body: { transport: { ...transport, headers: { 'X-Api-Key': 'key-456', 'X-Team': 'blue' } } } });
      assert.equal(((await t.store.getSubscriber(r.json.id))?.transport.headers as Record<string, string>)['X-Api-Key'], 'key-456');
    });

    test('validation: unknown fields, unknown transport kinds, bad templates and bad filters are 422 with field details', async () => {
      const unknownField = await create({ colour: 'red' });
      assertError(unknownField, 422, 'ROUTER_ERR_VALIDATION');
      assert.deepEqual(unknownField.json.error.details, [{ path: '', message: 'Unrecognized key: "colour"' }]);

      const kind = await t.call('POST', '/v1/subscribers', { body: { name: 'k', transport: { kind: 'carrier-pigeon' } } });
      assertError(kind, 422, 'ROUTER_ERR_VALIDATION');
      assert.equal(kind.json.error.details[0].path, 'transport.kind');

      const transportField = await create({ transport: { kind: 'https', url: HOOK, proxy: 'x', headers: { Host: 'evil' } } });
      assertError(transportField, 422, 'ROUTER_ERR_VALIDATION');
      const paths = transportField.json.error.details.map((d: { path: string }) => d.path).sort();
      assert.deepEqual(paths, ['transport', 'transport.headers.Host']);

      const template = await create({ ordering: { key: '{repository}/{password}' } });
      assertError(template, 422, 'ROUTER_ERR_VALIDATION');
      assert.equal(template.json.error.details[0].path, 'ordering.key');
      assert.equal((await create({ ordering: { key: '{organization}/{repository}' } })).status, 201);

      const match = await create({ filter: { match: { 'payload.a': { $where: 'sleep(1)' } } } });
      assertError(match, 422, 'ROUTER_ERR_VALIDATION');
      assertError(await create({ filter: { events: 'push' } }), 422, 'ROUTER_ERR_VALIDATION');
      assertError(await create({ retry: { maxAttempts: 0 } }), 422, 'ROUTER_ERR_VALIDATION');
      assertError(await t.call('POST', '/v1/subscribers', { body: [] }), 422, 'ROUTER_ERR_VALIDATION');
      assertError(await t.call('POST', '/v1/subscribers'), 422, 'ROUTER_ERR_VALIDATION');
    });

    test('https URLs pass the SSRF registration check (422 without echoing the resolved address)', async () => {
      const cases: [string, RegExp][] = [
        ['https://internal.example.com/x', /private/],
        ['https://rebind.example.com/x', /private/],
        ['https://169.254.169.254/latest/meta-data', /linkLocal/],
        ['https://[::ffff:169.254.169.254]/x', /linkLocal/],
        ['https://0xa.1/x', /private/],
        ['https://[::1]/x', /loopback/],
        ['http://hooks.example.com/x', /plain http/],
        ['https://unresolvable.invalid/x', /could not be resolved/],
      ];
      for (const [url, message] of cases) {
        const r = await create({}, url);
        assertError(r, 422, 'ROUTER_ERR_VALIDATION');
        assert.equal(r.json.error.details[0].path, 'transport.url', url);
        assert.match(r.json.error.details[0].message, message, url);
        assert.ok(!r.text.includes('10.1.2.3'), 'the resolved address is never echoed');
      }
      assert.equal((await create({}, sink.url('/allowed'))).status, 201, 'egress.allow opens 127.0.0.1 (plain http included)');
      const s = await create();
      const patched = await t.call('PATCH', `/v1/subscribers/${s.json.id}`, { body: { transport: { kind: 'https', url: 'https://internal.example.com/' } } });
      assertError(patched, 422, 'ROUTER_ERR_VALIDATION');
    });

    test('malformed JSON is 400, other media types 415, oversized bodies 413, non-JSON Accept 406', async () => {
      assertError(await t.call('POST', '/v1/subscribers', { raw: '{"name":', headers: { 'content-type': 'application/json' } }), 400, 'ROUTER_ERR_BODY_INVALID');
      assertError(await t.call('POST', '/v1/subscribers', { raw: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE');
      assertError(await t.call('POST', '/v1/subscribers', { raw: '{}', headers: { 'content-type': 'application/json; charset=latin1' } }), 415, 'ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE');
      assertError(await t.call('POST', '/v1/subscribers', { raw: '{}' }), 415, 'ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE');
      const huge = await t.call('POST', '/v1/subscribers', { body: { name: 'x'.repeat(70 * 1024) } });
      assertError(huge, 413, 'ROUTER_ERR_BODY_TOO_LARGE');
      assertError(await t.call('GET', '/v1/subscribers', { headers: { accept: 'text/html' } }), 406, 'ROUTER_ERR_NOT_ACCEPTABLE');
      assert.equal((await t.call('GET', '/v1/subscribers', { headers: { accept: 'text/html, application/json;q=0.5' } })).status, 200);
      assertError(await t.call('POST', '/v1/subscribers', { raw: '{"__proto__":{"x":1}}', headers: { 'content-type': 'application/json' } }), 400, 'ROUTER_ERR_BODY_INVALID');
      assertError(await t.call('POST', '/v1/subscribers', { raw: `${'['.repeat(40)}${']'.repeat(40)}`, headers: { 'content-type': 'application/json' } }), 400, 'ROUTER_ERR_BODY_INVALID');
      assertError(await t.call('GET', '/v1/subscribers', { body: { a: 1 } }), 422, 'ROUTER_ERR_VALIDATION');
      // Past node:http's 16 KiB head limit no handler runs; the answer is still the JSON error (seen in the fuzz run).
      assertError(await t.call('GET', `/v1/deliveries/${'x'.repeat(20_000)}`), 431, 'ROUTER_ERR_BAD_REQUEST');
    });

    test('auth: 401 without or with a wrong token, 403 without the scope; a token configured by SHA-256 works', async () => {
      const noToken = await t.call('GET', '/v1/subscribers', { token: null });
      assertError(noToken, 401, 'ROUTER_ERR_UNAUTHORIZED');
      assert.equal(noToken.headers['www-authenticate'], 'Bearer realm="webhook-router"');
      assertError(await t.call('GET', '/v1/subscribers', { token: 'wrong-token-of-some-length' }), 401, 'ROUTER_ERR_UNAUTHORIZED');
      assertError(await t.call('GET', '/v1/subscribers', { token: `${tokens.admin}x` }), 401, 'ROUTER_ERR_UNAUTHORIZED');
      assertError(await t.call('GET', '/v1/subscribers', { token: null, headers: { authorization: `Basic ${tokens.admin}` } }), 401, 'ROUTER_ERR_UNAUTHORIZED');
      assertError(await t.call('POST', '/v1/subscribers', { token: null, body: { junk: true } }), 401, 'ROUTER_ERR_UNAUTHORIZED');

      assert.equal((await t.call('GET', '/v1/subscribers', { token: tokens.subscribersRead })).status, 200);
      const forbidden = await t.call('POST', '/v1/subscribers', { token: tokens.subscribersRead, body: subscriberBody(HOOK) });
      assertError(forbidden, 403, 'ROUTER_ERR_FORBIDDEN');
      assert.match(forbidden.headers['www-authenticate'] ?? '', /insufficient_scope/);
      assert.equal((await t.call('POST', '/v1/subscribers', { token: tokens.subscribersWrite, body: subscriberBody(HOOK) })).status, 201);
      assertError(await t.call('GET', '/v1/subscribers', { token: tokens.subscribersWrite }), 403, 'ROUTER_ERR_FORBIDDEN');
      assert.equal((await t.call('GET', '/v1/deliveries', { token: tokens.deliveriesRead })).status, 200, 'tokenSha256');
    });

    test('request ids: a sane x-request-id is echoed, anything else replaced; every log line of the request carries it', async () => {
      const echoed = await t.call('GET', '/v1/subscribers', { headers: { 'x-request-id': 'trace-abc.123' } });
      assert.equal(echoed.headers['x-request-id'], 'trace-abc.123');
      const replaced = await t.call('GET', '/v1/subscribers', { headers: { 'x-request-id': 'bad id\twith spaces' } });
      assert.match(replaced.headers['x-request-id'] ?? '', /^req_[0-9a-f]{32}$/);
      const created = await t.call('POST', '/v1/subscribers', { body: subscriberBody(HOOK), headers: { 'x-request-id': 'create-req-1' } });
      const lines = t.logs.filter((l) => l.requestId === 'create-req-1');
      assert.deepEqual(
        lines.map((l) => l.msg),
        ['subscriber created', 'api request'],
      );
      assert.equal(lines[0]?.principal, 'admin');
      assert.equal(lines[1]?.route, '/v1/subscribers');
      assert.ok(!JSON.stringify(lines).includes(created.json.secret));
    });

    test('cursor pagination walks every subscriber once, even with inserts between pages', async () => {
      const seen = new Set<string>();
      const before = new Set<string>();
      for (let i = 0; i < 7; i++) before.add((await create({ name: `page-${i}` })).json.id);
      let cursor: string | null = null;
      let pages = 0;
      do {
        const r: Reply = await t.call('GET', `/v1/subscribers?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
        assert.equal(r.status, 200, r.text);
        assert.ok(r.json.items.length <= 3);
        for (const s of r.json.items) {
          assert.ok(!seen.has(s.id), `${s.id} twice`);
          seen.add(s.id);
        }
        cursor = r.json.nextCursor;
        if (pages++ === 1) await create({ name: 'inserted-meanwhile' });
      } while (cursor);
      for (const id of before) assert.ok(seen.has(id), `${id} skipped`);
      assertError(await t.call('GET', '/v1/subscribers?cursor=bm90LWEtY3Vyc29y'), 400, 'ROUTER_ERR_BAD_REQUEST');
      assertError(await t.call('GET', '/v1/subscribers?limit=501'), 400, 'ROUTER_ERR_BAD_REQUEST');
      assertError(await t.call('GET', '/v1/subscribers?limit=1&limit=2'), 400, 'ROUTER_ERR_BAD_REQUEST');
      assertError(await t.call('GET', '/v1/subscribers?sort=name'), 400, 'ROUTER_ERR_BAD_REQUEST');
    });

    test('PATCH: ETag/If-Match prevents lost updates; without If-Match the last write wins', async () => {
      const { json } = await create({ name: 'etag' });
      const read = await t.call('GET', `/v1/subscribers/${json.id}`);
      assert.equal(read.headers.etag, 'W/"1"');
      const first = await t.call('PATCH', `/v1/subscribers/${json.id}`, { body: { name: 'first' }, headers: { 'if-match': read.headers.etag as string } });
      assert.equal(first.status, 200, first.text);
      assert.equal(first.headers.etag, 'W/"2"');
      const stale = await t.call('PATCH', `/v1/subscribers/${json.id}`, { body: { name: 'second' }, headers: { 'if-match': read.headers.etag as string } });
      assertError(stale, 412, 'ROUTER_ERR_PRECONDITION_FAILED');
      assert.equal(stale.headers.etag, 'W/"2"');
      assert.equal((await t.call('GET', `/v1/subscribers/${json.id}`)).json.name, 'first');
      assertError(await t.call('PATCH', `/v1/subscribers/${json.id}`, { body: { name: 'x' }, headers: { 'if-match': 'garbage' } }), 412, 'ROUTER_ERR_PRECONDITION_FAILED');
      assert.equal((await t.call('PATCH', `/v1/subscribers/${json.id}`, { body: { name: 'star' }, headers: { 'if-match': '*' } })).status, 200);
      const unconditional = await t.call('PATCH', `/v1/subscribers/${json.id}`, { body: { name: 'last', enabled: false } });
      assert.equal(unconditional.status, 200);
      assert.equal(unconditional.json.name, 'last');
      assert.equal(unconditional.json.enabled, false);
      assert.equal(unconditional.json.version, 4);

      // Concurrent unconditional writers: none is lost, every one succeeds.
      const names = Array.from({ length: 5 }, (_, i) => `concurrent-${i}`);
      const results = await Promise.all(names.map((name) => t.call('PATCH', `/v1/subscribers/${json.id}`, { body: { name } })));
      for (const r of results) assert.ok(r.status === 200 || r.status === 409, r.text);
      assert.ok(names.includes((await t.call('GET', `/v1/subscribers/${json.id}`)).json.name));
    });

    test('re-enabling a subscriber the router disabled after a 410 clears its disabledReason', async () => {
      const { json } = await create();
      await t.store.updateSubscriber(json.id, { spec: { enabled: false }, disabledReason: 'endpoint_gone' }, Date.now());
      assert.equal((await t.call('GET', `/v1/subscribers/${json.id}`)).json.disabledReason, 'endpoint_gone');
      const r = await t.call('PATCH', `/v1/subscribers/${json.id}`, { body: { enabled: true } });
      assert.equal(r.json.enabled, true);
      assert.equal(r.json.disabledReason, null);
    });

    test('DELETE removes the subscriber (404 afterwards); unknown and malformed ids are 404', async () => {
      const { json } = await create();
      const r = await t.call('DELETE', `/v1/subscribers/${json.id}`);
      assert.equal(r.status, 204);
      assert.equal(r.text, '');
      assertError(await t.call('GET', `/v1/subscribers/${json.id}`), 404, 'ROUTER_ERR_NOT_FOUND');
      assertError(await t.call('DELETE', `/v1/subscribers/${json.id}`), 404, 'ROUTER_ERR_NOT_FOUND');
      assertError(await t.call('GET', `/v1/subscribers/${encodeURIComponent("' OR 1=1 --")}`), 404, 'ROUTER_ERR_NOT_FOUND');
      assertError(await t.call('PATCH', '/v1/subscribers/sub_nope', { body: { name: 'x' } }), 404, 'ROUTER_ERR_NOT_FOUND');
      assertError(await t.call('PUT', `/v1/subscribers/${json.id}`, { body: {} }), 405, 'ROUTER_ERR_METHOD_NOT_ALLOWED');
    });

    test('rotate-secret: the new secret once, the old one signs until the grace period ends', async () => {
      const { json } = await create();
      const r = await t.call('POST', `/v1/subscribers/${json.id}/rotate-secret`);
      assert.equal(r.status, 200, r.text);
      assert.notEqual(r.json.secret, json.secret);
      assert.equal(r.json.previousSecretExpiresAt, new Date(clock + 86_400_000).toISOString());
      let stored = (await t.store.getSubscriber(json.id)) as Subscriber;
      assert.equal(stored.secrets.current, r.json.secret);
      assert.equal(stored.secrets.previous, json.secret);
      const atRest = (await t.rawStore.getSubscriber(json.id)) as Subscriber;
      assert.match(atRest.secrets.previous as string, /^enc:v1:/);

      const given = randomWhsecSecret();
      const custom = await t.call('POST', `/v1/subscribers/${json.id}/rotate-secret`, { body: { secret: given, graceSec: 60 } });
      assert.equal(custom.json.secret, given);
      stored = (await t.store.getSubscriber(json.id)) as Subscriber;
      assert.equal(stored.secrets.previous, r.json.secret, 'a second rotation replaces the older secret');

      clock += 61_000;
      stored = (await t.store.getSubscriber(json.id)) as Subscriber;
      assert.equal(stored.secrets.previous, undefined, 'expired: no longer returned, so no longer used to sign');
      assert.equal((await t.call('GET', `/v1/subscribers/${json.id}`)).json.previousSecretExpiresAt, null);

      const revoked = await t.call('POST', `/v1/subscribers/${json.id}/rotate-secret`, { body: { graceSec: 0 } });
      assert.equal(revoked.json.previousSecretExpiresAt, null);
      assert.equal(((await t.store.getSubscriber(json.id)) as Subscriber).secrets.previous, undefined);
      assertError(await t.call('POST', '/v1/subscribers/sub_nope/rotate-secret'), 404, 'ROUTER_ERR_NOT_FOUND');
      assertError(await t.call('POST', `/v1/subscribers/${json.id}/rotate-secret`, { body: { graceSec: -1 } }), 422, 'ROUTER_ERR_VALIDATION');
    });

    test('test ping: signed like a delivery (both signatures during a rotation), outcome returned without the response body', async () => {
      const { json } = await create({ transport: { kind: 'https', url: sink.url('/ping-ok') } });
      const r = await t.call('POST', `/v1/subscribers/${json.id}/test`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.outcome, 'delivered');
      assert.equal(r.json.status, 200);
      assert.equal(r.json.code, null);
      const [received] = await sink.waitForCount('/ping-ok', 1, 2_000);
      assert.ok(received);
      assert.equal(received.header('webhook-id'), r.json.deliveryId);
      const ts = received.header('webhook-timestamp') as string;
      assert.equal(received.header('webhook-signature'), standardSignature(json.secret, r.json.deliveryId, ts, received.body));
      assert.equal(JSON.parse(received.body.toString()).type, 'ping');

      const rotated = await t.call('POST', `/v1/subscribers/${json.id}/rotate-secret`);
      const again = await t.call('POST', `/v1/subscribers/${json.id}/test`);
      const second = (await sink.waitForCount('/ping-ok', 2, 2_000))[1];
      assert.ok(second);
      const sigs = (second.header('webhook-signature') as string).split(' ');
      const ts2 = second.header('webhook-timestamp') as string;
      assert.deepEqual(sigs, [
        standardSignature(rotated.json.secret, again.json.deliveryId, ts2, second.body),
        standardSignature(json.secret, again.json.deliveryId, ts2, second.body),
      ]);

      sink.behave('/ping-fail', status(503));
      const failing = await create({ transport: { kind: 'https', url: sink.url('/ping-fail') } });
      const f = await t.call('POST', `/v1/subscribers/${failing.json.id}/test`);
      assert.equal(f.status, 200);
      assert.deepEqual({ outcome: f.json.outcome, status: f.json.status, code: f.json.code }, { outcome: 'retryable', status: 503, code: 'http_5xx' });
      assert.ok(!f.text.includes('status 503'), 'the endpoint’s response body is not reflected');
      assertError(await t.call('POST', '/v1/subscribers/sub_nope/test'), 404, 'ROUTER_ERR_NOT_FOUND');
      assertError(await t.call('POST', `/v1/subscribers/${json.id}/test`, { token: tokens.subscribersRead }), 403, 'ROUTER_ERR_FORBIDDEN');
    });
  });
}
