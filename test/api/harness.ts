/**
 * Harness for the REST API tests: a running API (createApi on node:http, 127.0.0.1 port 0) over a store made by a
 * `StoreHarness`, wrapped with secret encryption exactly as src/app.ts wraps it. Every test file runs its suite once
 * per entry of `storeHarnesses`; another store (PostgreSQL, MongoDB) slots in by adding a harness there.
 *
 * Also: tokens for every scope, a fake resolver (no real DNS), a controllable clock, captured logs (an object-mode
 * stream, probot's habit) and a seeder that writes events, deliveries, attempts and dead letters through the store
 * port, as the worker would.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { request } from 'undici';
import type { z } from 'zod';
import { deliveryIdFor } from '../../adapters/store/ids.ts';
import type { AttemptRecord, EventRecord, NewDelivery, NextState, Store } from '../../adapters/store/port.ts';
import { createPostgresStore } from '../../adapters/store/postgres.ts';
import { answerClientErrors } from '../../src/client-errors.ts';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import { Config } from '../../config/schema.ts';
import { type Api, createApi } from '../../src/api/app.ts';
import { createLogger, type Logger } from '../../src/logger.ts';
import { createMetrics, type Metrics } from '../../src/metrics.ts';
import { createKeyring } from '../../src/secrets/keyring.ts';
import { withSecretEncryption } from '../../src/secrets/store.ts';
import { createEgressPolicy, type LookupAll } from '../../transports/https/index.ts';
import pg from 'pg';
import { tempDir } from '../helpers/app.ts';
import { backendAvailable, env } from '../helpers/backends.ts';

export interface StoreHarness {
  readonly name: string;
  /** A connected, migrated, empty store of its own. */
  makeStore(): Promise<{ store: Store; close(): Promise<void> }>;
}

export const sqliteHarness: StoreHarness = {
  name: 'sqlite',
  async makeStore() {
    const dir = tempDir('wr-api-');
    const store = createSqliteStore({ kind: 'sqlite', path: `${dir.path}/router.db` });
    await store.connect();
    await store.migrate();
    return {
      store,
      async close() {
        await store.close();
        dir.remove();
      },
    };
  },
};

let schemas = 0;

/** A schema of its own in the PostgreSQL at POSTGRES_URL, dropped on close. */
export const postgresHarness: StoreHarness = {
  name: 'postgres',
  async makeStore() {
    const schema = `wr_api_${process.pid}_${++schemas}`;
    const store = createPostgresStore({ kind: 'postgres', url: env.postgresUrl, schema, poolSize: 4, connectTimeoutMs: 3_000 });
    await store.connect();
    await store.migrate();
    return {
      store,
      async close() {
        await store.close();
        const client = new pg.Client({ connectionString: env.postgresUrl });
        await client.connect();
        await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        await client.end();
      },
    };
  },
};

const postgresUp = await backendAvailable('postgres', async () => {
  const client = new pg.Client({ connectionString: env.postgresUrl, connectionTimeoutMillis: 3_000 });
  await client.connect();
  await client.end();
});

/** Every store the project has a harness for; the API suites run once per entry. */
export const storeHarnesses: readonly StoreHarness[] = [sqliteHarness, ...(postgresUp ? [postgresHarness] : [])];

export const ENCRYPTION_KEY = Buffer.alloc(32, 0x5a).toString('base64');

/** One token per scope, and one for everything. */
export const tokens = {
  admin: 'test-token-admin-0123456789abcdef',
  subscribersRead: 'test-token-subscribers-read-0123456789',
  subscribersWrite: 'test-token-subscribers-write-0123456789',
  deliveriesRead: 'test-token-deliveries-read-0123456789',
  dlqWrite: 'test-token-dlq-write-0123456789',
} as const;

/** Public names resolve to a public address, `internal.example.com` to a private one; everything else fails. */
export const fakeLookup: LookupAll = async (host) => {
  if (host === 'internal.example.com') return [{ address: '10.1.2.3', family: 4 }];
  if (host === 'rebind.example.com') return [{ address: '93.184.216.34', family: 4 }, { address: '192.168.7.7', family: 4 }];
  if (/(^|\.)example\.(com|org)$/.test(host)) return [{ address: '93.184.216.34', family: 4 }];
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
};

export interface ApiOptions {
  readonly api?: z.input<typeof Config>['api'];
  /** Milliseconds; Date.now when absent. */
  readonly now?: () => number;
  readonly logLevel?: string;
}

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly text: string;
  // biome-ignore lint: tests read arbitrary JSON.
  readonly json: any;
}

export interface CallOptions {
  /** A token (default: admin); null sends no Authorization header. */
  readonly token?: string | null;
  /** Serialised as JSON with content-type application/json. */
  readonly body?: unknown;
  /** Sent as is (wins over body). */
  readonly raw?: string | Buffer;
  readonly headers?: Record<string, string>;
}

export interface TestApi {
  readonly url: string;
  readonly api: Api;
  /** The store the API uses: encryption decorator over the harness's store. */
  readonly store: Store;
  /** The harness's store itself: what is really at rest. */
  readonly rawStore: Store;
  readonly metrics: Metrics;
  /** Every log line so far, parsed. */
  readonly logs: Record<string, unknown>[];
  /** Every log line so far, as written. */
  readonly logText: () => string;
  call(method: string, path: string, options?: CallOptions): Promise<Reply>;
  close(): Promise<void>;
}

export function captureLogs(level: string): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { logger: createLogger({ level }, stream), lines };
}

export function apiConfig(options: ApiOptions = {}): Readonly<Config> {
  return Config.parse({
    listen: { webhooks: 0, api: 0, management: 0, host: '127.0.0.1' },
    queue: { kind: 'memory' },
    sources: [{ id: 'github', kind: 'github', secrets: ['router-test-github-secret'] }],
    egress: { allow: ['127.0.0.1/32'] },
    api: options.api ?? {
      tokens: [
        { name: 'admin', token: tokens.admin, scopes: ['*'] },
        { name: 'subscribers-read', token: tokens.subscribersRead, scopes: ['subscribers:read'] },
        { name: 'subscribers-write', token: tokens.subscribersWrite, scopes: ['subscribers:write'] },
        // Configured by hash: the configuration never holds this token.
        { name: 'deliveries-read', tokenSha256: sha256Hex(tokens.deliveriesRead), scopes: ['deliveries:read'] },
        { name: 'dlq-write', token: tokens.dlqWrite, scopes: ['dlq:write'] },
      ],
      maxBodyBytes: 64 * 1024,
    },
    secrets: { encryptionKey: ENCRYPTION_KEY },
    delivery: { timeoutMs: 2_000 },
    log: { level: 'silent' },
  } satisfies z.input<typeof Config>);
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export async function startApi(harness: StoreHarness, options: ApiOptions = {}): Promise<TestApi> {
  const config = apiConfig(options);
  const made = await harness.makeStore();
  const now = options.now ?? Date.now;
  const store = withSecretEncryption(made.store, createKeyring(config.secrets), { now });
  const { logger, lines } = captureLogs(options.logLevel ?? 'debug');
  const metrics = createMetrics();
  const api = createApi({
    store,
    config,
    senderDeps: { logger, now: Date.now, egress: createEgressPolicy(config.egress.allow), lookup: fakeLookup, delivery: config.delivery },
    logger,
    metrics,
    now,
    checkResponses: true,
  });
  const server: Server = createServer(api.handler);
  answerClientErrors(server); // as src/app.ts does for every listener
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    api,
    store,
    rawStore: made.store,
    metrics,
    get logs() {
      return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    logText: () => lines.join(''),
    call: (method, path, callOptions) => call(url, method, path, callOptions),
    close() {
      closing ??= (async () => {
        api.close();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await made.close();
      })();
      return closing;
    },
  };
}

export async function call(base: string, method: string, path: string, options: CallOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  const token = options.token === undefined ? tokens.admin : options.token;
  if (token !== null) headers.authorization ??= `Bearer ${token}`;
  let body: string | Buffer | undefined;
  if (options.raw !== undefined) body = options.raw;
  else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await request(`${base}${path}`, { method: method.toUpperCase() as 'GET', headers, ...(body === undefined ? {} : { body }) });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(', ') : v;
  return { status: res.statusCode, headers: flat, text, json };
}

/** A minimal valid create body for an https subscriber at `url`. */
export function subscriberBody(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'test-subscriber', filter: { events: ['push', 'ping'] }, transport: { kind: 'https', url }, ...extra };
}

// ── Seeding traffic through the store port ───────────────────────────────────────────────────────────────────────

let eventCounter = 0;

export function eventRecord(overrides: Partial<EventRecord> = {}): EventRecord {
  eventCounter += 1;
  const n = `${process.pid}_${eventCounter}_${Math.random().toString(36).slice(2, 8)}`;
  return {
    id: `evt_${n}`,
    source: 'github',
    sourceKind: 'github',
    dedupeKey: `dk_${n}`,
    receivedAt: Date.now(),
    headers: { 'x-github-event': 'push', 'content-type': 'application/json' },
    routing: { event: 'push', repository: 'acme/app', ref: 'refs/heads/main' },
    body: Buffer.from(JSON.stringify({ ref: 'refs/heads/main', repository: { full_name: 'acme/app' } })),
    ...overrides,
  };
}

export interface Seeded {
  readonly events: EventRecord[];
  /** delivered (one attempt, with a response snippet), dead (a dead letter), pending (no attempt). */
  readonly delivered: string;
  readonly dead: string;
  readonly pending: string;
}

/** Three events for `subscriberId`: one delivered, one dead-lettered, one still pending. */
export async function seedTraffic(store: Store, subscriberId: string, now = Date.now()): Promise<Seeded> {
  const events = [eventRecord({ receivedAt: now }), eventRecord({ receivedAt: now }), eventRecord({ receivedAt: now })];
  const items = events.map((event) => ({
    event,
    deliveries: [{ id: deliveryIdFor(event.id, subscriberId, event.receivedAt), subscriberId, orderingKey: undefined } satisfies NewDelivery],
  }));
  await store.ingest(items, now);
  const [delivered, dead, pending] = events.map((e) => deliveryIdFor(e.id, subscriberId, e.receivedAt)) as [string, string, string];
  const owner = `seed-${Math.random().toString(36).slice(2)}`;
  const claimed = await store.claimDue({ owner, now, leaseMs: 60_000, limit: 100, exclude: [] });
  const attempt = (deliveryId: string, outcome: AttemptRecord['outcome'], status: number, next: NextState) => ({
    attempt: {
      deliveryId,
      attempt: 1,
      startedAt: now,
      durationMs: 12,
      outcome,
      code: outcome === 'delivered' ? undefined : ('http_4xx' as const),
      status,
      response: `internal snippet of ${deliveryId}`,
    },
    next,
  });
  await store.complete(
    owner,
    [attempt(delivered, 'delivered', 200, { status: 'delivered' }), attempt(dead, 'permanent', 400, { status: 'dead', reason: 'rejected' })],
    now,
  );
  await store.release(
    owner,
    claimed.map((c) => c.id).filter((id) => id === pending),
    now + 3_600_000,
  );
  return { events, delivered, dead, pending };
}
