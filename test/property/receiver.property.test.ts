/**
 * Property tests of the receiver over real HTTP, against one app started once for the file.
 *
 * Random header sets (real header names with random values, random names), random bodies (bytes, long strings,
 * invalid UTF-8, JSON), random methods and paths, and raw garbage on a socket. Whatever arrives, the receiver:
 * - never answers 5xx,
 * - never enqueues a request that has no valid signature (and never answers it 2xx),
 * - keeps serving: a correctly signed request right after each case is accepted and enqueued,
 * - for correctly signed requests with mangled headers: enqueues exactly when it answers 2xx, byte for byte.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { Agent, errors } from 'undici';
import { drainEnvelopes, startApp, type TestApp } from '../helpers/app.ts';
import { githubRequest, gitlabSigningRequest, gitlabTokenRequest, randomWhsecSecret, standardRequest } from '../helpers/sign.ts';

const GH_SECRET = 'gh-secret';
const GL_TOKEN = 'gl-token';
const GL_SIGNING = randomWhsecSecret();
const SW_SECRET = randomWhsecSecret();
const SOURCE_IDS = ['github', 'gitlab', 'gitlab-signed', 'sw', 'small'] as const;
const NUM_RUNS = Number(process.env.PROPERTY_RUNS ?? 250);

/** Header names the receiver looks at (plus a few generic ones). */
const REAL_HEADERS = [
  'content-type',
  'x-github-event',
  'x-github-delivery',
  'x-github-hook-id',
  'x-github-hook-installation-target-type',
  'x-github-hook-installation-target-id',
  'x-github-enterprise-version',
  'x-github-enterprise-host',
  'x-hub-signature-256',
  'x-hub-signature',
  'x-gitlab-token',
  'x-gitlab-event',
  'x-gitlab-event-uuid',
  'x-gitlab-webhook-uuid',
  'x-gitlab-instance',
  'idempotency-key',
  'webhook-id',
  'webhook-timestamp',
  'webhook-signature',
  'traceparent',
  'user-agent',
  'authorization',
  'accept',
] as const;

/** Message framing and hop-by-hop headers are left to the raw-socket property (undici refuses or rewrites them). */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'expect', 'host', 'te', 'trailer', 'proxy-connection']);

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries

const hex = (min: number, max: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${min},${max}}$`));
const printable = (maxLength: number) => fc.string({ unit: 'grapheme-ascii', maxLength });
const nowSec = () => Math.floor(Date.now() / 1000);

const headerValue: fc.Arbitrary<string> = fc.oneof(
  printable(40),
  printable(400),
  fc.constantFrom('application/json', 'application/x-www-form-urlencoded', 'application/json; charset=utf-8', 'text/plain', 'push', 'ping', 'Push Hook', ''),
  hex(64, 64).map((h) => `sha256=${h}`),
  hex(0, 80).map((h) => `sha256=${h}`),
  hex(40, 40).map((h) => `sha1=${h}`),
  fc.base64String({ maxLength: 60 }).map((b) => `v1,${b}`),
  fc.array(fc.base64String({ minLength: 44, maxLength: 44 }).map((b) => `v1,${b}`), { maxLength: 4 }).map((a) => a.join(' ')),
  fc.integer({ min: -10_000, max: 10_000 }).map((d) => String(nowSec() + d)),
  fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String),
  fc.uuid(),
  fc.constantFrom(GH_SECRET, GL_TOKEN, SW_SECRET, GL_SIGNING),
);

const headerName: fc.Arbitrary<string> = fc
  .oneof({ weight: 3, arbitrary: fc.constantFrom(...REAL_HEADERS) }, { weight: 1, arbitrary: fc.stringMatching(/^[a-z][a-z0-9-]{0,24}$/) })
  .filter((n) => !FRAMING.has(n));

const randomHeaders = fc.dictionary(headerName, headerValue, { maxKeys: 14 });

/**
 * A complete, plausible header set for one of the source kinds, signed with a wrong secret (or not at all), with
 * random headers merged over it: these reach the signature check and the body cap instead of stopping at 400/415.
 */
const plausibleHeaders = (kind: (typeof SOURCE_IDS)[number]) =>
  fc.tuple(fc.option(fc.constantFrom('wrong-secret', randomWhsecSecret())), fc.dictionary(headerName, headerValue, { maxKeys: 2 })).map(([secret, extra]) => {
    const base =
      kind === 'github' || kind === 'small'
        ? githubRequest({ secret: secret ?? undefined, body: '{}' }).headers
        : kind === 'gitlab'
          ? gitlabTokenRequest({ token: secret ?? undefined, body: '{}' }).headers
          : standardRequest({ secrets: secret?.startsWith('whsec_') ? [secret] : [], body: '{}' }).headers;
    return { ...base, ...extra };
  });

const body: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 4096 }).map((b) => Buffer.from(b)),
  fc.string({ unit: 'binary', maxLength: 2_000 }).map((s) => Buffer.from(s, 'utf8')),
  fc.json({ maxDepth: 4 }).map((s) => Buffer.from(s, 'utf8')),
  // Invalid UTF-8: stray continuation bytes, overlong forms, lone surrogates encoded as bytes.
  fc.array(fc.constantFrom(0x80, 0xbf, 0xc0, 0xc1, 0xf5, 0xff, 0xed, 0xa0, 0x7b, 0x22), { maxLength: 512 }).map((a) => Buffer.from(a)),
  fc.integer({ min: 1_000, max: 300_000 }).map((n) => Buffer.alloc(n, 'x')),
  fc.constant(Buffer.alloc(0)),
  fc.json().map((s) => Buffer.from(`payload=${encodeURIComponent(s)}`)),
);

const method = fc.oneof(
  { weight: 4, arbitrary: fc.constant('POST') },
  { weight: 2, arbitrary: fc.constantFrom('GET', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS') },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Z]{1,10}$/).filter((m) => m !== 'CONNECT') },
);

const path = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...SOURCE_IDS).map((s) => `/webhooks/${s}`) },
  { weight: 1, arbitrary: fc.constantFrom(...SOURCE_IDS).map((s) => `/webhooks/${s}/`) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...SOURCE_IDS), fc.webQueryParameters()).map(([s, q]) => `/webhooks/${s}?${q}`) },
  { weight: 1, arbitrary: fc.webSegment().map((s) => `/webhooks/${s}`) },
  { weight: 1, arbitrary: fc.webPath().map((p) => (p.startsWith('/') ? p : `/${p}`)) },
  { weight: 1, arbitrary: fc.constantFrom('/webhooks/%ZZ', '/webhooks/%E0%A4%A', '/webhooks/github%2F..', '/webhooks/..%2Fgithub', '/webhooks//github', '*') },
);

interface RandomRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

/** Anything at all, or a POST to a real source with that source's headers (wrongly signed) and a random body. */
const randomRequest: fc.Arbitrary<RandomRequest> = fc.oneof(
  fc.record({ method, path, headers: randomHeaders, body }),
  fc
    .constantFrom(...SOURCE_IDS)
    .chain((source) => fc.record({ method: fc.constant('POST'), path: fc.constant(`/webhooks/${source}`), headers: plausibleHeaders(source), body })),
);

// ---------------------------------------------------------------------------------------------------------------

describe('receiver properties', () => {
  let t: TestApp;
  const agent = new Agent({ keepAliveTimeout: 2_000 });
  const stats = { answered: 0, clientRefused: 0, connectionErrors: 0, statuses: new Map<number, number>() };

  before(async () => {
    t = await startApp({
      sources: [
        { id: 'github', kind: 'github', secrets: [GH_SECRET] },
        { id: 'gitlab', kind: 'gitlab', secrets: [GL_TOKEN] },
        { id: 'gitlab-signed', kind: 'gitlab', secrets: [GL_SIGNING] },
        { id: 'sw', kind: 'standard-webhooks', secrets: [SW_SECRET] },
        { id: 'small', kind: 'github', secrets: [GH_SECRET], maxBodyBytes: 1024 },
      ],
    });
  });
  after(async () => {
    await agent.close();
    await t?.close();
  });

  type Sent = { status: number; text: string } | { refused: string } | { connectionError: string };

  async function send(m: string, p: string, headers: Record<string, string>, payload: Buffer | null): Promise<Sent> {
    try {
      // Dispatcher.request sends the path as given (undici's top-level request() would normalise it through URL).
      const res = await agent.request({
        origin: t.webhooksUrl,
        method: m as 'POST',
        path: p,
        headers,
        body: payload,
        headersTimeout: 5_000,
        bodyTimeout: 5_000,
      });
      const text = await res.body.text();
      stats.answered += 1;
      stats.statuses.set(res.statusCode, (stats.statuses.get(res.statusCode) ?? 0) + 1);
      return { status: res.statusCode, text };
    } catch (err) {
      // undici refusing to send something (an invalid header value, a body on a method that cannot carry one) is the
      // client's business, not the server's.
      if (err instanceof errors.InvalidArgumentError || err instanceof errors.NotSupportedError) {
        stats.clientRefused += 1;
        return { refused: err.message };
      }
      stats.connectionErrors += 1;
      return { connectionError: `${(err as Error).name}: ${(err as Error).message}` };
    }
  }

  /** The server still works: a correctly signed request is accepted and is the only thing in the queue. */
  async function assertHealthy(): Promise<void> {
    const req = githubRequest({ secret: GH_SECRET, body: '{"zen":"still here"}' });
    const res = await send('POST', '/webhooks/github', req.headers, req.body);
    assert.ok('status' in res, `the server stopped answering: ${JSON.stringify(res)}`);
    assert.equal(res.status, 202, res.text);
    const queued = await drainEnvelopes(t.queue);
    assert.equal(queued.length, 1);
    assert.equal(queued[0]?.dedupeKey, `${req.headers['x-github-hook-id']}:${req.headers['x-github-delivery']}`);
  }

  test('random methods, paths, headers and bodies: never 5xx, never 2xx, nothing enqueued, still serving', async (ctx) => {
    await fc.assert(
      fc.asyncProperty(randomRequest, async ({ method: m, path: p, headers, body: payload }) => {
        const res = await send(m, p, headers, m === 'GET' || m === 'HEAD' ? null : payload);
        if ('status' in res) {
          assert.ok(res.status < 500, `answered ${res.status}: ${res.text}`);
          assert.ok(res.status >= 400, `an unsigned request was answered ${res.status}: ${res.text}`);
        }
        assert.deepEqual(await drainEnvelopes(t.queue), [], 'a request without a valid signature was enqueued');
        await assertHealthy();
      }),
      { numRuns: NUM_RUNS },
    );
    ctx.diagnostic(`answered ${stats.answered} (statuses ${JSON.stringify(Object.fromEntries(stats.statuses))}), refused by the client ${stats.clientRefused}, connection errors ${stats.connectionErrors}`);
  });

  test('correctly signed requests with mangled headers: never 5xx; enqueued exactly when answered 2xx, byte for byte', async (ctx) => {
    const kinds = fc.constantFrom('github', 'gitlab', 'gitlab-signed', 'sw');
    // Start from a valid request, then drop or overwrite some of its headers (never the signature's inputs for the
    // body: the body is signed as sent).
    const mangle = fc.record({
      drop: fc.subarray([...REAL_HEADERS], { maxLength: 2 }),
      set: fc.dictionary(fc.constantFrom(...REAL_HEADERS).filter((n) => !n.includes('signature') && n !== 'x-gitlab-token'), headerValue, { maxKeys: 3 }),
    });
    const signedBody = fc.oneof(
      fc.json({ maxDepth: 3 }).map((s) => Buffer.from(s)),
      body,
    );
    const outcomes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(kinds, signedBody, mangle, async (kind, payload, { drop, set }) => {
        const base =
          kind === 'github'
            ? githubRequest({ secret: GH_SECRET, body: payload })
            : kind === 'gitlab'
              ? gitlabTokenRequest({ token: GL_TOKEN, body: payload })
              : kind === 'gitlab-signed'
                ? gitlabSigningRequest({ secrets: [GL_SIGNING], body: payload })
                : standardRequest({ secrets: [SW_SECRET], body: payload });
        const headers = { ...base.headers };
        for (const name of drop) delete headers[name];
        Object.assign(headers, set);
        const res = await send('POST', `/webhooks/${kind}`, headers, base.body);
        const queued = await drainEnvelopes(t.queue);
        if (!('status' in res)) {
          assert.ok('refused' in res, `connection error: ${JSON.stringify(res)}`);
          assert.deepEqual(queued, []);
          return;
        }
        outcomes.set(`${kind} ${res.status}`, (outcomes.get(`${kind} ${res.status}`) ?? 0) + 1);
        assert.ok(res.status < 500, `answered ${res.status}: ${res.text}`);
        if (res.status >= 200 && res.status < 300) {
          const answer = JSON.parse(res.text) as { id: string; duplicate?: boolean };
          if (answer.duplicate) {
            assert.equal(res.status, 200);
            assert.deepEqual(queued, []);
          } else {
            assert.equal(queued.length, 1, `answered ${res.status} but enqueued ${queued.length}`);
            assert.equal(queued[0]?.id, answer.id);
            assert.equal(Buffer.compare(Buffer.from(queued[0]?.body ?? []), base.body), 0);
            for (const name of ['x-hub-signature-256', 'x-gitlab-token', 'webhook-signature']) assert.equal(queued[0]?.headers[name], undefined);
          }
        } else {
          assert.ok(res.status >= 400, `unexpected ${res.status}`);
          assert.deepEqual(queued, [], `answered ${res.status} but enqueued ${queued.length}`);
        }
      }),
      { numRuns: NUM_RUNS },
    );
    ctx.diagnostic(`outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`);
    await assertHealthy();
  });

  test('raw bytes on a socket (malformed request lines, headers and framing): never 5xx, nothing enqueued, still serving', async (ctx) => {
    const crlf = fc.constantFrom('\r\n', '\n', '\r', '');
    const rawHeader = fc.oneof(
      { weight: 4, arbitrary: fc.tuple(fc.constantFrom(...REAL_HEADERS), headerValue).map(([n, v]) => `${n}: ${v}`) },
      fc.tuple(fc.constantFrom(...REAL_HEADERS, 'content-length', 'transfer-encoding', 'host', 'expect', 'connection'), fc.string({ unit: 'binary-ascii', maxLength: 60 })).map(([n, v]) => `${n}: ${v}`),
      fc.constantFrom('content-length: 5', 'content-length: -1', 'content-length: 99999999999999999999', 'transfer-encoding: chunked', 'transfer-encoding: gzip, chunked', 'content-length: 3\r\ncontent-length: 4', 'expect: 100-continue'),
      fc.string({ unit: 'binary-ascii', maxLength: 80 }),
    );
    const rawRequest = fc
      .tuple(
        fc.oneof({ weight: 4, arbitrary: fc.constantFrom('POST', 'GET', 'PUT', 'CONNECT', 'PRI') }, fc.string({ unit: 'binary-ascii', maxLength: 10 })),
        fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...SOURCE_IDS).map((s) => `/webhooks/${s}`) }, fc.string({ unit: 'binary-ascii', maxLength: 40 })),
        fc.oneof({ weight: 4, arbitrary: fc.constant('HTTP/1.1') }, fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 extra', '')),
        fc.array(fc.tuple(rawHeader, fc.oneof({ weight: 6, arbitrary: fc.constant('\r\n') }, crlf)), { maxLength: 10 }),
        fc.uint8Array({ maxLength: 2_048 }),
      )
      .map(([m, p, v, hs, b]) =>
        Buffer.concat([Buffer.from(`${m} ${p} ${v}\r\nhost: 127.0.0.1\r\n${hs.map(([h, e]) => `${h}${e}`).join('')}\r\n`, 'latin1'), Buffer.from(b)]),
      );
    const statuses = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(rawRequest, async (bytes) => {
        const response = await rawExchange(t.app.ports.webhooks as number, bytes);
        // The final status: skip interim 1xx answers (100 Continue).
        const status = [...response.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => m[1] as string).find((code) => !code.startsWith('1')) ?? 'none';
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status !== 'none') assert.ok(Number(status) < 500, `answered ${status}: ${JSON.stringify(response.slice(0, 200))}`);
        assert.ok(!/^2/.test(status), `garbage was answered ${status}`);
        assert.deepEqual(await drainEnvelopes(t.queue), []);
      }),
      { numRuns: Math.ceil(NUM_RUNS / 2) },
    );
    ctx.diagnostic(`raw statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
    await assertHealthy();
  });
});

/**
 * Writes `bytes`, half-closes, and collects whatever comes back until the server closes (bounded at 5 s; node:http
 * answers or closes on a client FIN, so the bound only matters when something is wrong).
 */
function rawExchange(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let response = '';
    const timer = setTimeout(() => socket.destroy(), 5_000);
    socket.on('data', (d: Buffer) => (response += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(response);
    });
    socket.end(bytes);
  });
}
