/**
 * The https transport: the shared transport contract against a loopback receiver, then what only HTTP has (GitHub
 * signing, custom headers, the status table end to end, deadlines, refused connections, capped responses, caller
 * aborts, redaction).
 *
 * The receiver is a node:http server on 127.0.0.1:0 whose behaviour a test sets (Svix's TestReceiver). Egress allows
 * 127.0.0.1/32 only; the lookup throws, because every URL here is a literal address and must never be resolved.
 */
import assert from 'node:assert/strict';
import { getEventListeners, once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, describe, test, type TestContext } from 'node:test';
import { verify as octokitVerify } from '@octokit/webhooks-methods';
import { silentLogger } from '../../src/logger.ts';
import { classifyError } from '../../transports/https/classify.ts';
import { createEgressPolicy, httpsProvider, type HttpsSenderDeps, type HttpsTransportConfig } from '../../transports/https/index.ts';
import { EgressError } from '../../transports/https/ssrf.ts';
import type { SendOutcome } from '../../transports/port.ts';
import { makeMessage, runTransportContract, SOURCE_SECRET_HEADERS, type Hold, type ReceivedMessage, type TransportTarget } from './transport.contract.ts';

/** Upper bound for any wait on the receiver; a test that needs longer is broken. */
const WAIT_MS = 5_000;

interface Request extends ReceivedMessage {
  readonly method: string;
  readonly url: string;
}

type Behaviour = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

class TestReceiver implements TransportTarget {
  readonly received: Request[] = [];
  connections = 0;
  /** What the receiver does with the next requests; 200 "ok" by default. */
  behaviour: Behaviour = (_req, res) => res.end('ok');
  private readonly server: Server;
  private readonly waiters = new Set<() => void>();

  private constructor(server: Server) {
    this.server = server;
    server.on('connection', () => this.connections++);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
        this.received.push({ method: req.method ?? '', url: req.url ?? '', headers, body });
        for (const wake of this.waiters) wake();
        this.behaviour(req, res, body);
      });
    });
  }

  static async start(): Promise<TestReceiver> {
    const server = createServer({ keepAliveTimeout: 1_000 });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return new TestReceiver(server);
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  url(path = '/hook'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Resolves once `count` requests arrived (each with its full body); rejects after WAIT_MS. */
  readBack(count: number): Promise<Request[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.received.length < count) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve([...this.received]);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`receiver got ${this.received.length} of ${count} requests within ${WAIT_MS} ms`));
      }, WAIT_MS);
      this.waiters.add(check);
      check();
    });
  }

  /** The next request gets no response until release(); later ones fall back to the previous behaviour. */
  hold(): Hold {
    const previous = this.behaviour;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let arrived!: () => void;
    const arrival = new Promise<void>((r) => (arrived = r));
    this.behaviour = (req, res, body) => {
      this.behaviour = previous;
      arrived();
      void released.then(() => previous(req, res, body));
    };
    return { arrived: arrival, release };
  }

  async close(): Promise<void> {
    if (!this.server.listening) return;
    const closed = once(this.server, 'close');
    this.server.close();
    this.server.closeAllConnections();
    await closed;
  }
}

const receivers = new Set<TestReceiver>();
async function receiver(t: TestContext): Promise<TestReceiver> {
  const r = await TestReceiver.start();
  receivers.add(r);
  t.after(async () => {
    await r.close();
    receivers.delete(r);
  });
  return r;
}

function deps(overrides: Partial<HttpsSenderDeps> = {}): HttpsSenderDeps {
  return {
    logger: silentLogger,
    now: Date.now,
    egress: createEgressPolicy(['127.0.0.1/32']),
    lookup: async (host) => {
      throw Object.assign(new Error(`unexpected DNS lookup of ${host}`), { code: 'ENOTFOUND' });
    },
    delivery: { timeoutMs: 5_000, maxResponseBytes: 65_536, connectionsPerOrigin: 4 },
    ...overrides,
  };
}

function config(r: TestReceiver, extra: Partial<HttpsTransportConfig> = {}): HttpsTransportConfig {
  return httpsProvider.configSchema.parse({ kind: 'https', url: r.url(), ...extra });
}

function sender(t: TestContext, cfg: HttpsTransportConfig, d: HttpsSenderDeps = deps()) {
  const s = httpsProvider.createSender(cfg, d);
  t.after(() => s.close());
  return s;
}

const signal = () => AbortSignal.timeout(WAIT_MS);

/**
 * A self-signed test certificate for DNS:receiver.test only (no IP SAN), valid 2000–2100, made with
 * `openssl ca -selfsign -startdate 20000101000000Z -enddate 21000101000000Z` (P-256). Test use only.
 */
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZfH/BJJ8s+WhVkT6
9FvVZMyznDviYTLGXSgZYsCJ/9+hRANCAATyucyYXqJ25vre6klfOqXJHgTLJyoq
F5exaK9oKYaqL6l6hzFauddo4uPCJ544lQvZ8q50/Y6wpynP5IolJNpJ
-----END PRIVATE KEY-----`;
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBizCCATKgAwIBAgIBATAKBggqhkjOPQQDAjAYMRYwFAYDVQQDDA1yZWNlaXZl
ci50ZXN0MCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAYMRYwFAYD
VQQDDA1yZWNlaXZlci50ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8rnM
mF6idub63upJXzqlyR4EyycqKheXsWivaCmGqi+peocxWrnXaOLjwieeOJUL2fKu
dP2OsKcpz+SKJSTaSaNrMGkwGAYDVR0RBBEwD4INcmVjZWl2ZXIudGVzdDAMBgNV
HRMBAf8EAjAAMAsGA1UdDwQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDATAdBgNV
HQ4EFgQUl/HYAWvosF8354kE0f7/NmlAin8wCgYIKoZIzj0EAwIDRwAwRAIgEfKg
BQnPwmbHS5+LyswGSEjrJghh+vtHinWCGjTKyXACIEVE9snl6uQ7NwJ+xppLG947
VYvopf1VwVM761nqYYE1
-----END CERTIFICATE-----`;

runTransportContract({
  name: 'https',
  provider: httpsProvider,
  deps: () => deps(),
  openTarget: () => TestReceiver.start(),
  makeConfig: (r: TestReceiver): HttpsTransportConfig => ({ kind: 'https', url: r.url(), headers: {}, secretHeaders: [], signing: 'standard-webhooks' }),
});

describe('https transport', () => {
  test('signing "github": X-Hub-Signature-256 verifies with @octokit/webhooks-methods over the bytes sent', async (t) => {
    const r = await receiver(t);
    const s = sender(t, config(r, { signing: 'github' }));
    const message = makeMessage();
    assert.equal((await s.send(message, signal())).kind, 'delivered');
    const [got] = await r.readBack(1);
    assert.ok(got);
    const sig = got.headers['x-hub-signature-256'];
    assert.ok(sig && sig !== SOURCE_SECRET_HEADERS['X-Hub-Signature-256'], 'our signature, not the source one');
    assert.equal(await octokitVerify(message.secrets.current, got.body.toString('utf8'), sig), true);
    assert.equal(await octokitVerify('another secret', got.body.toString('utf8'), sig), false);
    // Standard Webhooks headers are still there.
    assert.ok(got.headers['webhook-signature']);
    assert.equal(got.headers['x-hub-signature'], undefined, 'the source sha1 signature is not forwarded');
  });

  test('custom headers are sent and cannot override the router headers', async (t) => {
    const r = await receiver(t);
    const cfg = config(r, { headers: { 'X-Api-Key': 'k-123', 'X-Tenant': 'acme' }, secretHeaders: ['X-Api-Key'] });
    // A config that bypassed the schema (an old row in the store) still cannot override what the router sets.
    const forged = { ...cfg, headers: { ...cfg.headers, 'Webhook-Id': 'forged', 'user-agent': 'forged', 'X-GitHub-Event': 'forged' } };
    const s = sender(t, forged);
    const message = makeMessage();
    assert.equal((await s.send(message, signal())).kind, 'delivered');
    const [got] = await r.readBack(1);
    assert.ok(got);
    assert.equal(got.headers['x-api-key'], 'k-123');
    assert.equal(got.headers['x-tenant'], 'acme');
    assert.equal(got.headers['webhook-id'], message.deliveryId);
    assert.match(got.headers['user-agent'] ?? '', /^webhook-router\//);
    assert.equal(got.headers['x-github-event'], 'push');
  });

  test('the schema rejects reserved, hop-by-hop and malformed header names', () => {
    const base = { kind: 'https', url: 'https://hooks.example.com/x' };
    for (const name of ['webhook-id', 'Webhook-Signature', 'X-Hub-Signature-256', 'Host', 'content-length', 'Transfer-Encoding', 'Connection', 'User-Agent', 'bad name', 'x:y']) {
      assert.equal(httpsProvider.configSchema.safeParse({ ...base, headers: { [name]: 'v' } }).success, false, name);
    }
    assert.equal(httpsProvider.configSchema.safeParse({ ...base, headers: { 'X-A': 'a\r\nInjected: 1' } }).success, false);
    const tooMany = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`x-h${i}`, 'v']));
    assert.equal(httpsProvider.configSchema.safeParse({ ...base, headers: tooMany }).success, false);
    assert.equal(httpsProvider.configSchema.safeParse({ ...base, secretHeaders: ['x-missing'] }).success, false);
    assert.equal(httpsProvider.configSchema.safeParse({ ...base, unknown: 1 }).success, false, 'strict');
    assert.equal(httpsProvider.configSchema.safeParse({ ...base, url: 'https://user:pw@hooks.example.com/' }).success, false);
    assert.equal(httpsProvider.configSchema.safeParse({ ...base, url: 'ftp://hooks.example.com/' }).success, false);
    assert.equal(httpsProvider.configSchema.safeParse({ ...base, timeoutMs: 99 }).success, false);
    const ok = httpsProvider.configSchema.parse({ ...base, headers: { 'X-Api-Key': 'k' } });
    assert.deepEqual(ok, { ...base, headers: { 'X-Api-Key': 'k' }, secretHeaders: [], signing: 'standard-webhooks' });
  });

  test('redact() hides the values of secret headers and nothing else', () => {
    const cfg = httpsProvider.configSchema.parse({
      kind: 'https',
      url: 'https://hooks.example.com/x',
      headers: { 'X-Api-Key': 'super-secret', Authorization: 'Bearer t0ken', 'X-Tenant': 'acme' },
      secretHeaders: ['x-api-key', 'Authorization'],
    });
    const red = httpsProvider.redact(cfg);
    assert.deepEqual(red.headers, { 'X-Api-Key': '[redacted]', Authorization: '[redacted]', 'X-Tenant': 'acme' });
    assert.ok(!JSON.stringify(red).includes('super-secret') && !JSON.stringify(red).includes('t0ken'));
    assert.equal(cfg.headers['X-Api-Key'], 'super-secret', 'the original is not mutated');
  });

  describe('status table, end to end', () => {
    const soon = () => new Date(Date.now() + 120_000).toUTCString();
    const cases: { status: number; label?: string; headers?: () => Record<string, string>; expect: (o: SendOutcome) => void }[] = [
      { status: 200, expect: (o) => assert.equal(o.kind, 'delivered') },
      { status: 204, expect: (o) => assert.equal(o.kind, 'delivered') },
      { status: 301, label: 'not followed', expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code], ['retryable', 'http_3xx']) },
      { status: 400, expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code], ['permanent', 'http_4xx']) },
      { status: 408, expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code], ['retryable', 'http_408']) },
      { status: 410, expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code], ['permanent', 'http_410']) },
      { status: 413, expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code], ['permanent', 'http_413']) },
      { status: 425, expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code], ['retryable', 'http_425']) },
      {
        status: 429,
        label: 'Retry-After in seconds',
        headers: () => ({ 'retry-after': '7' }),
        expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code, 'retryAfterMs' in o && o.retryAfterMs], ['retryable', 'http_429', 7_000]),
      },
      {
        status: 429,
        label: 'Retry-After as an HTTP date',
        headers: () => ({ 'retry-after': soon() }),
        expect: (o) => {
          assert.deepEqual([o.kind, 'code' in o && o.code], ['retryable', 'http_429']);
          const ms = 'retryAfterMs' in o ? (o.retryAfterMs ?? -1) : -1;
          assert.ok(ms > 115_000 && ms <= 120_000, `Retry-After as a date: ${ms} ms`);
        },
      },
      { status: 500, expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code, 'retryAfterMs' in o], ['retryable', 'http_5xx', false]) },
      {
        status: 503,
        label: 'Retry-After in seconds',
        headers: () => ({ 'retry-after': '3' }),
        expect: (o) => assert.deepEqual([o.kind, 'code' in o && o.code, 'retryAfterMs' in o && o.retryAfterMs], ['retryable', 'http_5xx', 3_000]),
      },
    ];
    for (const c of cases) {
      test(`${c.status}${c.label ? ` (${c.label})` : ''}`, async (t) => {
        const r = await receiver(t);
        r.behaviour = (_req, res) => {
          res.writeHead(c.status, { ...(c.headers?.() ?? {}), ...(c.status === 301 ? { location: r.url('/elsewhere') } : {}) });
          res.end(c.status === 204 ? undefined : `status ${c.status}`);
        };
        const s = sender(t, config(r));
        const outcome = await s.send(makeMessage(), signal());
        c.expect(outcome);
        assert.equal(outcome.status, c.status);
        assert.ok(outcome.durationMs >= 0);
        if (c.status !== 204) assert.equal(outcome.response, `status ${c.status}`);
        // Exactly one request: nothing retried inside send(), no redirect followed.
        await s.close();
        assert.deepEqual(
          r.received.map((q) => `${q.method} ${q.url}`),
          ['POST /hook'],
        );
      });
    }
  });

  test('TLS: connects to the checked address but verifies the certificate (and sends SNI) for the registered name', async (t) => {
    let sni: unknown;
    const server = createTlsServer({ key: TEST_KEY, cert: TEST_CERT }, (req, res) => {
      sni = (req.socket as { servername?: unknown }).servername;
      req.resume();
      req.on('end', () => res.end('tls ok'));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(async () => {
      const closed = once(server, 'close');
      server.close();
      server.closeAllConnections();
      await closed;
    });
    const port = (server.address() as AddressInfo).port;
    const lookup = async () => [{ address: '127.0.0.1', family: 4 }];
    const send = (url: string, tls?: { ca: string }) =>
      sender(t, httpsProvider.configSchema.parse({ kind: 'https', url }), deps({ lookup, ...(tls ? { tls } : {}) })).send(makeMessage(), signal());
    const codeOf = (o: SendOutcome) => `${o.kind}:${'code' in o ? o.code : ''}`;

    const ok = await send(`https://receiver.test:${port}/hook`, { ca: TEST_CERT });
    assert.deepEqual([ok.kind, ok.status, ok.response], ['delivered', 200, 'tls ok']);
    assert.equal(sni, 'receiver.test');
    // Untrusted certificate, and a certificate that does not name the host we asked for: tls_error, retryable.
    assert.equal(codeOf(await send(`https://receiver.test:${port}/hook`)), 'retryable:tls_error');
    assert.equal(codeOf(await send(`https://127.0.0.1:${port}/hook`, { ca: TEST_CERT })), 'retryable:tls_error');
  });

  test('a hanging receiver ends in a retryable timeout after about timeoutMs', async (t) => {
    const r = await receiver(t);
    r.behaviour = () => {}; // never answers
    const s = sender(t, config(r, { timeoutMs: 300 }));
    const started = performance.now();
    const outcome = await s.send(makeMessage(), signal());
    const took = performance.now() - started;
    assert.deepEqual([outcome.kind, 'code' in outcome && outcome.code], ['retryable', 'timeout']);
    assert.ok(took >= 280 && took < 2_000, `took ${Math.round(took)} ms`);
  });

  test('a closed port ends in a retryable connection_refused', async (t) => {
    const r = await TestReceiver.start();
    const url = r.url();
    await r.close(); // the port is free now; nothing listens
    const s = sender(t, httpsProvider.configSchema.parse({ kind: 'https', url }));
    const outcome = await s.send(makeMessage(), signal());
    assert.deepEqual([outcome.kind, 'code' in outcome && outcome.code], ['retryable', 'connection_refused']);
  });

  test('a 10 MiB response is read only up to maxResponseBytes and still counts as delivered', async (t) => {
    const r = await receiver(t);
    const total = 10 * 1024 * 1024;
    let serverSide!: Promise<{ written: number; finished: boolean }>;
    r.behaviour = (_req, res) => {
      serverSide = new Promise((resolve) => {
        let written = 0;
        res.on('close', () => resolve({ written, finished: res.writableFinished }));
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(total) });
        const chunk = Buffer.alloc(64 * 1024, 'é'.normalize('NFC')); // 2-byte characters: the snippet must cut cleanly
        const pump = () => {
          while (written < total && !res.destroyed) {
            written += chunk.length;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          if (written >= total) res.end();
        };
        pump();
      });
    };
    const s = sender(t, config(r), deps({ delivery: { timeoutMs: 5_000, maxResponseBytes: 65_536, connectionsPerOrigin: 4 } }));
    const outcome = await s.send(makeMessage(), signal());
    assert.equal(outcome.kind, 'delivered');
    assert.equal(outcome.status, 200);
    assert.ok(outcome.response !== undefined && Buffer.byteLength(outcome.response) <= 1024, 'snippet ≤ 1 KiB');
    assert.ok(!outcome.response.includes('\uFFFD'), 'snippet cut at a character boundary');
    const { finished } = await serverSide;
    assert.equal(finished, false, 'the client stopped reading before the 10 MiB were sent');
  });

  test("the caller's abort (shutdown) throws instead of returning an outcome", async (t) => {
    const r = await receiver(t);
    r.behaviour = () => {}; // never answers
    const s = sender(t, config(r));
    const controller = new AbortController();
    const sending = s.send(makeMessage(), controller.signal);
    await r.readBack(1);
    controller.abort(new Error('shutting down'));
    await assert.rejects(sending, /shutting down/);

    // Already aborted: nothing is sent at all.
    await assert.rejects(s.send(makeMessage(), AbortSignal.abort(new Error('gone'))), /gone/);
    assert.equal(r.received.length, 1);
  });

  test("attempts leave no listener on the caller's signal, which lives as long as the worker", async (t) => {
    const r = await receiver(t);
    const s = sender(t, config(r));
    const shutdown = new AbortController();
    const outcomes = await Promise.all([1, 2, 3].map(() => s.send(makeMessage(), shutdown.signal)));
    assert.deepEqual(outcomes.map((o) => o.kind), ['delivered', 'delivered', 'delivered']);
    const slow = sender(t, config(r, { timeoutMs: 300 }));
    r.behaviour = () => {}; // never answers: the attempt ends by its own timer
    const timedOut = await slow.send(makeMessage(), shutdown.signal);
    assert.deepEqual([timedOut.kind, 'code' in timedOut && timedOut.code], ['retryable', 'timeout']);
    assert.equal(getEventListeners(shutdown.signal, 'abort').length, 0, 'every attempt removed its abort listener');
  });

  test('connection errors map to stable codes (classify table)', () => {
    const code = (err: unknown) => {
      const o = classifyError(err, 1);
      return o === null ? null : `${o.kind}:${'code' in o ? o.code : ''}`;
    };
    const e = (c: string, cause?: unknown) => Object.assign(new Error(c, { cause }), { code: c });
    assert.equal(code(new EgressError('ROUTER_SSRF_BLOCKED', 'x', 'loopback')), 'permanent:ssrf_blocked');
    assert.equal(code(new EgressError('ROUTER_DNS_FAILED', 'x', 'ENOTFOUND')), 'retryable:dns_error');
    assert.equal(code(e('ENOTFOUND')), 'retryable:dns_error');
    assert.equal(code(e('EAI_AGAIN')), 'retryable:dns_error');
    assert.equal(code(e('UND_ERR_CONNECT_TIMEOUT')), 'retryable:timeout');
    assert.equal(code(e('UND_ERR_HEADERS_TIMEOUT')), 'retryable:timeout');
    assert.equal(code(e('UND_ERR_BODY_TIMEOUT')), 'retryable:timeout');
    assert.equal(code(new DOMException('t', 'TimeoutError')), 'retryable:timeout');
    assert.equal(code(e('ECONNREFUSED')), 'retryable:connection_refused');
    assert.equal(code(e('ECONNRESET')), 'retryable:connection_reset');
    assert.equal(code(e('EPIPE')), 'retryable:connection_reset');
    assert.equal(code(e('UND_ERR_SOCKET', e('ECONNRESET'))), 'retryable:connection_reset');
    assert.equal(code(new AggregateError([e('ECONNREFUSED')])), 'retryable:connection_refused');
    for (const tls of ['ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'ERR_SSL_WRONG_VERSION_NUMBER']) {
      assert.equal(code(e(tls)), 'retryable:tls_error', tls);
    }
    assert.equal(code(e('EHOSTUNREACH')), 'retryable:network_error');
    assert.equal(code(new Error('mystery')), 'retryable:network_error');
    assert.equal(code(e('UND_ERR_INVALID_ARG')), null, 'our bug: the sender throws');
  });
});

after(async () => {
  // Closed handles leave the list once the loop has run their close callbacks.
  await new Promise((resolve) => setImmediate(resolve));
  // Leak check: every receiver closed, and no TCP handle left behind by a sender's Agent.
  assert.equal(receivers.size, 0, 'receivers left open');
  const tcp = process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP'));
  assert.deepEqual(tcp, [], 'open TCP handles after all tests');
});
