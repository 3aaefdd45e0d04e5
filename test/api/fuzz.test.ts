/**
 * fast-check fuzzing of every route and field, through real HTTP, once per store harness: path ids, query values,
 * JSON bodies derived from valid ones with one field replaced, raw bodies, keys such as `__proto__`/`constructor`,
 * SQL/NoSQL injection strings, huge strings and deep nesting.
 *
 * Properties: never a 5xx; every error is the documented JSON error body without a stack trace; Object.prototype is
 * untouched; bystander rows (other subscribers, their deliveries and dead letters) are exactly as before. Bounded:
 * a fixed number of runs per route and a time limit per property, a few seconds in all.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { Store } from '../../adapters/store/port.ts';
import { type Reply, type StoreHarness, type TestApi, seedTraffic, startApi, storeHarnesses, subscriberBody } from './harness.ts';

const RUNS = Number(process.env.API_FUZZ_RUNS ?? 60);
const TIME_LIMIT_MS = 3_000;

const injections = [
  "' OR '1'='1",
  "'; DROP TABLE subscribers; --",
  '" OR ""="',
  '1; SELECT * FROM schema_migrations',
  "sub_1' UNION SELECT secrets FROM subscribers --",
  '{"$gt": ""}',
  '{"$where": "sleep(1000)"}',
  '$ne',
  '$where',
  '__proto__',
  'constructor',
  'prototype',
  '../../../etc/passwd',
  '%00',
  '\u0000',
  '\ud800',
  '<script>alert(1)</script>',
  '${7*7}',
  '{{7*7}}',
  '{repository}',
  '{__proto__}',
  'whsec_',
  '[redacted]',
  'enc:v1:0000000000000000:AAAA',
  '*',
  'ﾟ･✿ヾ╲(｡◕‿◕｡)╱✿･ﾟ',
];

const hugeString = fc.integer({ min: 10_000, max: 80_000 }).map((n) => 'x'.repeat(n));
const nastyString = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...injections) },
  { weight: 3, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 1, arbitrary: hugeString },
);
const nastyKey = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', '$where', '$gt', 'toString', 'hasOwnProperty'), fc.string({ maxLength: 12 }));

/** Deep nesting beyond any schema's limit: arrays and objects alternating. */
const deep = fc.integer({ min: 10, max: 2_000 }).map((depth) => {
  let v: unknown = 'bottom';
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { a: v };
  return v;
});

const { value: anyJson } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    nastyString,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(nastyKey, tie('value'), { maxKeys: 4 }),
  ),
}));
const nastyValue = fc.oneof({ weight: 5, arbitrary: anyJson }, { weight: 1, arbitrary: deep });

/** A JSON text with `"__proto__"` (or another key) spliced in; JSON.stringify would never write an own __proto__. */
const protoText = fc.tuple(fc.constantFrom('__proto__', 'constructor', 'prototype'), anyJson).map(
  ([key, value]) => `{"name":"x","${key}":${JSON.stringify(value) ?? 'null'},"transport":{"kind":"https","url":"https://a.example.com","headers":{"${key}":{"polluted":"yes"}}}}`,
);

/** A valid subscriber body with one field (possibly nested) replaced or added. */
function mutated(base: Record<string, unknown>): fc.Arbitrary<unknown> {
  const paths = [['name'], ['enabled'], ['filter'], ['filter', 'events'], ['filter', 'match'], ['filter', 'repositories'], ['transport'], ['transport', 'url'], ['transport', 'kind'], ['transport', 'headers'], ['transport', 'secretHeaders'], ['retry'], ['retry', 'schedule'], ['limits', 'perSecond'], ['ordering'], ['ordering', 'key'], ['secret']];
  return fc.tuple(fc.oneof(fc.constantFrom(...paths), nastyKey.map((k) => [k])), nastyValue).map(([path, value]) => {
    const copy = structuredClone(base) as Record<string, unknown>;
    let node = copy;
    for (const key of path.slice(0, -1)) {
      if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    Object.defineProperty(node, path.at(-1) as string, { value, enumerable: true, writable: true, configurable: true });
    return copy;
  });
}

const idArb = fc.oneof(fc.constantFrom(...injections), fc.string({ maxLength: 30 }), hugeString.map((s) => s.slice(0, 5_000)));
const queryArb = fc.dictionary(fc.oneof(fc.constantFrom('limit', 'cursor', 'subscriber', 'status', 'event', 'since', 'until', 'reason', 'include'), nastyKey), nastyString, { maxKeys: 4 });

function qs(query: Record<string, string>): string {
  const parts = Object.entries(query).map(([k, v]) => `${enc(k)}=${enc(v.slice(0, 4_000))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

/** Lone surrogates cannot be percent-encoded as UTF-8; a client would send U+FFFD. */
const enc = (s: string) => encodeURIComponent(s.toWellFormed());

const protoKeysBefore = Object.getOwnPropertyNames(Object.prototype).sort();

function checkReply(r: Reply, what: string): void {
  assert.ok(r.status < 500, `${what} → ${r.status}: ${r.text.slice(0, 500)}`);
  assert.ok(!/\n\s+at |\bat [\w.<>]+ \(.*:\d+:\d+\)/.test(r.text), `${what}: a stack trace in the answer`);
  if (r.status >= 400) {
    assert.equal(typeof r.json?.error?.code, 'string', `${what}: ${r.text.slice(0, 300)}`);
    assert.match(r.json.error.code, /^ROUTER_ERR_[A-Z_]+$/);
    assert.ok(r.text.length < 40_000, `${what}: error bodies stay small`);
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined, `${what}: Object.prototype polluted`);
  assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), protoKeysBefore, `${what}: Object.prototype changed`);
}

/** What must not change: every bystander subscriber row as stored, and their deliveries and dead letters. */
async function snapshot(store: Store, subscriberIds: readonly string[]): Promise<string> {
  const out: unknown[] = [];
  for (const id of subscriberIds) {
    out.push(await store.getSubscriber(id));
    out.push(await store.listDeliveries({ subscriber: id }, { limit: 100 }));
    out.push(await store.listDeadLetters({ subscriber: id }, { limit: 100 }));
  }
  return JSON.stringify(out);
}

for (const harness of storeHarnesses) suite(harness);

function suite(harness: StoreHarness): void {
  describe(`API fuzzing (${harness.name})`, () => {
    let t: TestApi;
    let bystanders: string[];
    let before_: string;
    let target: string;
    before(async () => {
      t = await startApi(harness, { logLevel: 'silent' });
      bystanders = [];
      for (let i = 0; i < 3; i++) {
        const r = await t.call('POST', '/v1/subscribers', {
          body: subscriberBody('https://hooks.example.com/by', { transport: { kind: 'https', url: 'https://hooks.example.com/by', headers: { 'X-Key': 'k' }, secretHeaders: ['X-Key'] } }),
        });
        bystanders.push(r.json.id);
        await seedTraffic(t.store, r.json.id);
      }
      target = (await t.call('POST', '/v1/subscribers', { body: subscriberBody('https://hooks.example.com/target') })).json.id;
      before_ = await snapshot(t.rawStore, bystanders);
    });
    after(() => t.close());

    /** Inputs are generated as data (so a counterexample prints them) and then replayed by `go`. */
    const run = <T>(name: string, arb: fc.Arbitrary<T>, go: (input: T) => Promise<void>) =>
      test(name, async () => {
        await fc.assert(fc.asyncProperty(arb, go), { numRuns: RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS });
      });

    const send = async (method: string, path: string, options: Parameters<TestApi['call']>[2] = {}) => {
      const r = await t.call(method, path, options);
      checkReply(r, `${method} ${path.slice(0, 80)}`);
      return r;
    };
    /** '@target' stands for the fuzzing target's id, known only once `before` ran. */
    const ids = () => fc.oneof({ weight: 3, arbitrary: idArb }, { weight: 1, arbitrary: fc.constant('@target') });
    const real = (id: string) => (id === '@target' ? target : id);

    const postBody = async (input: { body?: unknown; raw?: string }) => {
      if (input.raw !== undefined) await send('POST', '/v1/subscribers', { raw: input.raw, headers: { 'content-type': 'application/json' } });
      else await send('POST', '/v1/subscribers', { body: input.body });
    };
    run(
      'POST /v1/subscribers with mutated, random and __proto__-laden bodies',
      fc.oneof(
        mutated(subscriberBody('https://hooks.example.com/x', { filter: { events: ['push'], match: { 'payload.a': { $eq: 1 } } }, ordering: { key: '{repository}' } })).map(
          (body) => ({ body }),
        ),
        nastyValue.map((body) => ({ body })),
        protoText.map((raw) => ({ raw })),
        fc.string({ maxLength: 200 }).map((raw) => ({ raw })),
      ),
      postBody,
    );

    run(
      'GET, PATCH, DELETE /v1/subscribers/{id} with fuzzed ids, bodies and If-Match',
      fc.tuple(ids(), fc.oneof(mutated({ name: 'renamed', filter: { events: ['push'] } }), nastyValue), fc.option(nastyString)),
      async ([fuzzed, body, ifMatch]) => {
        const id = real(fuzzed);
        const path = `/v1/subscribers/${enc(id)}`;
        await send('GET', path);
        const headers = ifMatch === null ? {} : { headers: { 'if-match': ifMatch.slice(0, 4_000).replace(/[^\t\x20-\x7e]/g, '') } };
        await send('PATCH', path, { body, ...headers });
        if (id !== target) await send('DELETE', path);
      },
    );

    run(
      'rotate-secret and test with fuzzed ids and bodies',
      fc.tuple(ids(), fc.oneof(mutated({ secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', graceSec: 60 }), nastyValue)),
      async ([fuzzed, body]) => {
        const id = real(fuzzed);
        await send('POST', `/v1/subscribers/${enc(id)}/rotate-secret`, { body });
        if (id !== target) await send('POST', `/v1/subscribers/${enc(id)}/test`);
      },
    );

    run('list routes with fuzzed query strings', fc.tuple(fc.constantFrom('/v1/subscribers', '/v1/deliveries', '/v1/dlq'), queryArb), async ([path, query]) => {
      await send('GET', `${path}${qs(query)}`);
    });

    run(
      'deliveries, events and DLQ routes with fuzzed ids, queries and bodies',
      fc.tuple(idArb, queryArb, mutated({ filter: { subscriber: 'sub_x', reason: 'rejected', since: '1h' }, limit: 5, ratePerSec: 100, toSubscriber: 'sub_x' })),
      async ([id, query, body]) => {
        const e = enc(id);
        await send('GET', `/v1/deliveries/${e}${qs(query)}`);
        await send('POST', `/v1/deliveries/${e}/retry`);
        await send('GET', `/v1/events/${e}${qs(query)}`);
        await send('DELETE', `/v1/dlq/${e}`);
        // Always a dry run: a real replay of "everything" would legitimately change the bystanders' rows.
        const replay = typeof body === 'object' && body !== null && !Array.isArray(body) ? { ...body, dryRun: true } : body;
        await send('POST', '/v1/dlq/replay', { body: replay });
      },
    );

    run(
      'headers: tokens, content types, accept, request ids',
      fc.tuple(fc.string({ maxLength: 100 }), fc.string({ maxLength: 60 }), fc.string({ maxLength: 60 }), fc.string({ maxLength: 200 })),
      async ([token, type, accept, requestId]) => {
        const printable = (s: string) => s.replace(/[^\x20-\x7e]/g, '');
        await send('GET', '/v1/subscribers', { token: printable(token) || null });
        await send('POST', '/v1/subscribers', { raw: '{"name":"x"}', headers: { 'content-type': printable(type) || 'x/y' } });
        await send('GET', '/v1/subscribers', { headers: { accept: printable(accept) || '*/*', 'x-request-id': printable(requestId) || 'r' } });
      },
    );

    test('bystander rows are unchanged and the API still answers', async () => {
      assert.equal(await snapshot(t.rawStore, bystanders), before_);
      for (const id of bystanders) {
        const s = await t.store.getSubscriber(id);
        assert.equal((s?.transport.headers as Record<string, string>)['X-Key'], 'k', 'secrets still decrypt');
      }
      assert.equal((await t.call('GET', '/v1/subscribers')).status, 200);
    });
  });
}
