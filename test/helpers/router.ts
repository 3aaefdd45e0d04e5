/**
 * The whole router in-process for delivery-engine tests: buildApp with the 'receiver' and 'worker' roles, a SQLite
 * queue and a SQLite store in a fresh temp dir, every listener on 127.0.0.1 port 0, `egress.allow: 127.0.0.1/32` so
 * plain-http loopback sinks are reachable, and a short worker poll interval. The configuration goes through the real
 * schema (config/schema.ts), so defaults are production's.
 *
 * Subscribers are written straight into the store (there is no REST API yet). The worker caches them and looks for
 * changes at most once a second, so `startRouter({ subscribers })` writes them BEFORE the app starts (through its own
 * store connection on the same file, migrated here); `addSubscriber` after start waits out that refresh interval.
 *
 * Also: a signed GitHub webhook sender over real HTTP (test/helpers/sign.ts signs), a bounded poll for store state
 * (the store has no change events), and `seedStore` for tests that run the router as a child process.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request, type Dispatcher } from 'undici';
import type { z } from 'zod';
import { deliveryIdFor, pairKeyFor, pairKeyOf } from '../../adapters/store/ids.ts';
import type { AttemptRecord, DeliveryView, NewSubscriber, Store } from '../../adapters/store/port.ts';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import { Config } from '../../config/schema.ts';
import { type App, buildApp } from '../../src/app.ts';
import { createLogger } from '../../src/logger.ts';
import { type Subscriber, SubscriberSpec } from '../../src/subscribers/model.ts';
import { deliveryId as newGuid, githubRequest, randomWhsecSecret, type SignedRequest } from './sign.ts';

export type ConfigInput = z.input<typeof Config>;
type SpecInput = z.input<typeof SubscriberSpec>;

/** Secret of the default `github` source. */
export const GITHUB_SECRET = 'router-test-github-secret';
export const DEFAULT_HOOK_ID = 4242;

export interface SubscriberInput {
  readonly id: string;
  /** Where the https transport POSTs (a sink URL). */
  readonly url: string;
  readonly name?: string;
  readonly enabled?: boolean;
  readonly filter?: SpecInput['filter'];
  readonly retry?: SpecInput['retry'];
  readonly limits?: SpecInput['limits'];
  readonly ordering?: SpecInput['ordering'];
  /** Extra https transport settings (timeoutMs, signing, headers). */
  readonly transport?: { readonly timeoutMs?: number; readonly signing?: 'standard-webhooks' | 'github'; readonly headers?: Record<string, string> };
  /** `whsec_<base64>`; random when absent. */
  readonly secret?: string;
}

/** A subscriber through the real zod schema (defaults as the API would store them), with its secret. */
export function newSubscriber(input: SubscriberInput): NewSubscriber {
  const spec = SubscriberSpec.parse({
    name: input.name ?? input.id,
    ...(input.enabled === undefined ? {} : { enabled: input.enabled }),
    filter: input.filter ?? {},
    transport: { kind: 'https', url: input.url, ...input.transport },
    ...(input.retry ? { retry: input.retry } : {}),
    ...(input.limits ? { limits: input.limits } : {}),
    ...(input.ordering === undefined ? {} : { ordering: input.ordering }),
  } satisfies SpecInput);
  return { ...spec, id: input.id, secrets: { current: input.secret ?? randomWhsecSecret() } };
}

/** Migrates the SQLite store at `path` and writes the subscribers; closes its connection. */
export async function seedStore(path: string, subscribers: readonly NewSubscriber[]): Promise<void> {
  const store = createSqliteStore({ kind: 'sqlite', path });
  try {
    await store.connect();
    await store.migrate();
    for (const s of subscribers) await store.createSubscriber(s, Date.now());
  } finally {
    await store.close();
  }
}

export interface RouterOptions {
  /** Created before the app starts, so the worker sees them from its first look. */
  readonly subscribers?: readonly SubscriberInput[];
  /** Default: one github source `github` with GITHUB_SECRET. */
  readonly sources?: ConfigInput['sources'];
  readonly receiver?: ConfigInput['receiver'];
  readonly delivery?: ConfigInput['delivery'];
  /** Merged over { pollIntervalMs: 20 }. */
  readonly worker?: ConfigInput['worker'];
  /** Default 1000 ms, so closing with a hanging subscriber stays quick. */
  readonly shutdownGraceMs?: number;
}

export interface SendResult {
  readonly status: number;
  readonly json: unknown;
  /** The event id from a 2xx answer (`{ id }`), else undefined. */
  readonly eventId: string | undefined;
}

export interface GithubWebhook {
  readonly event: string;
  /** Serialised with JSON.stringify when `body` is absent. */
  readonly payload?: unknown;
  /** Exact bytes to send (wins over `payload`). */
  readonly body?: string | Uint8Array;
  /** X-GitHub-Delivery; a fresh GUID when absent. */
  readonly delivery?: string;
  readonly hookId?: number | string;
  /** Signing secret; default GITHUB_SECRET. */
  readonly secret?: string;
  readonly extra?: Readonly<Record<string, string | undefined>>;
}

export interface TestRouter {
  readonly app: App;
  readonly config: Readonly<Config>;
  readonly store: Store;
  readonly dir: string;
  /** http://127.0.0.1:<port> of the webhook listener. */
  readonly webhooksUrl: string;
  url(sourceId?: string): string;
  /** Subscribers by id, as written (secrets included). */
  readonly subscribers: ReadonlyMap<string, NewSubscriber>;
  /** Creates a subscriber on the running router and waits until the worker's cache must have picked it up. */
  addSubscriber(input: SubscriberInput): Promise<NewSubscriber>;
  /** POSTs a signed request to /webhooks/{sourceId}. */
  post(req: SignedRequest, sourceId?: string): Promise<SendResult>;
  /** Builds, signs and POSTs a GitHub webhook; returns the answer and the request that was sent. */
  sendGithub(hook: GithubWebhook, sourceId?: string): Promise<SendResult & { readonly request: SignedRequest }>;
  /** The id of an (event, subscriber) pair's delivery: derived from the event's receive time, so once it is stored. */
  deliveryId(eventId: string, subscriberId: string): Promise<string | undefined>;
  /** The delivery (with attempts) of an (event, subscriber) pair, or undefined when none was created. */
  delivery(eventId: string, subscriberId: string): Promise<(DeliveryView & { attemptLog: AttemptRecord[] }) | undefined>;
  /** Waits until a delivery reaches a final state (delivered or dead), polling the store. */
  waitForDelivery(eventId: string, subscriberId: string, timeoutMs: number): Promise<DeliveryView & { attemptLog: AttemptRecord[] }>;
  getSubscriber(id: string): Promise<Subscriber | undefined>;
  /** Closes the app (idempotent); removes the temp dir when `keep` is false and KEEP_TEST_TMP is unset. */
  close(options?: { keep?: boolean }): Promise<void>;
}

export function routerConfig(dir: string, options: RouterOptions = {}): Readonly<Config> {
  return Config.parse({
    listen: { webhooks: 0, api: 0, management: 0, host: '127.0.0.1' },
    queue: { kind: 'sqlite', path: join(dir, 'queue.db'), pollIntervalMs: 10 },
    store: { kind: 'sqlite', path: join(dir, 'router.db') },
    sources: options.sources ?? [{ id: 'github', kind: 'github', secrets: [GITHUB_SECRET] }],
    receiver: options.receiver ?? {},
    egress: { allow: ['127.0.0.1/32'] },
    delivery: { timeoutMs: 5_000, ...options.delivery },
    worker: { pollIntervalMs: 20, ...options.worker },
    log: { level: 'silent' },
    shutdownGraceMs: options.shutdownGraceMs ?? 1_000,
  } satisfies ConfigInput);
}

/** How long the worker may keep using its cached subscriber list (src/worker/worker.ts SUBSCRIBER_REFRESH_MS). */
const SUBSCRIBER_REFRESH_MS = 1_000;

export async function startRouter(options: RouterOptions = {}): Promise<TestRouter> {
  const dir = mkdtempSync(join(tmpdir(), 'wr-router-'));
  const config = routerConfig(dir, options);
  const subscribers = new Map<string, NewSubscriber>();
  let app: App | undefined;
  try {
    const initial = (options.subscribers ?? []).map(newSubscriber);
    for (const s of initial) subscribers.set(s.id, s);
    if (config.store.kind !== 'sqlite') throw new Error('the test router runs on a sqlite store');
    await seedStore(config.store.path, initial);
    // TEST_LOG_LEVEL=debug shows the router's logs while debugging a test.
    const logger = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
    app = await buildApp(config, { logger, roles: ['receiver', 'worker'], migrate: true });
    await app.start();
  } catch (err) {
    await app?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const running = app;
  const store = running.store;
  if (!store) throw new Error('the worker role has no store');
  const webhooksUrl = `http://127.0.0.1:${running.ports.webhooks}`;
  const url = (sourceId = 'github') => `${webhooksUrl}/webhooks/${sourceId}`;
  let closing: Promise<void> | undefined;
  const deliveryId = async (eventId: string, subscriberId: string): Promise<string | undefined> => {
    const [event] = await store.loadEvents([eventId]);
    return event && deliveryIdFor(eventId, subscriberId, event.receivedAt);
  };

  const router: TestRouter = {
    app: running,
    config,
    store,
    dir,
    webhooksUrl,
    url,
    subscribers,
    async addSubscriber(input) {
      const s = newSubscriber(input);
      await store.createSubscriber(s, Date.now());
      subscribers.set(s.id, s);
      // No event tells us the worker reloaded; its cache looks again once this interval has passed.
      await sleep(SUBSCRIBER_REFRESH_MS + 100);
      return s;
    },
    post: (req, sourceId) => postWebhook(url(sourceId), req),
    async sendGithub(hook, sourceId) {
      const req = githubWebhook(hook);
      return { ...(await postWebhook(url(sourceId), req)), request: req };
    },
    deliveryId,
    delivery: async (eventId, subscriberId) => {
      const id = await deliveryId(eventId, subscriberId);
      return id === undefined ? undefined : store.getDelivery(id);
    },
    async waitForDelivery(eventId, subscriberId, timeoutMs) {
      let last: (DeliveryView & { attemptLog: AttemptRecord[] }) | undefined;
      await waitUntil(
        async () => {
          const id = await deliveryId(eventId, subscriberId);
          last = id === undefined ? undefined : await store.getDelivery(id);
          return last !== undefined && last.status !== 'pending';
        },
        timeoutMs,
        () => `delivery of ${eventId} to ${subscriberId} to finish (now: ${last ? `${last.status}, ${last.attempts} attempt(s)` : 'no delivery'})`,
      );
      return last!;
    },
    getSubscriber: (id) => store.getSubscriber(id),
    close(closeOptions) {
      closing ??= (async () => {
        await running.close();
        if (!closeOptions?.keep && !process.env.KEEP_TEST_TMP) rmSync(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
  return router;
}

/** A signed GitHub webhook (X-GitHub-Event / -Delivery / -Hook-ID, X-Hub-Signature-256). */
export function githubWebhook(hook: GithubWebhook): SignedRequest {
  const body = hook.body ?? JSON.stringify(hook.payload ?? {});
  return githubRequest({
    secret: hook.secret ?? GITHUB_SECRET,
    body,
    event: hook.event,
    delivery: hook.delivery ?? newGuid(),
    hookId: hook.hookId ?? DEFAULT_HOOK_ID,
    ...(hook.extra ? { extra: hook.extra } : {}),
  });
}

/** POSTs a signed request and reads the JSON answer. */
export async function postWebhook(url: string, req: SignedRequest, dispatcher?: Dispatcher): Promise<SendResult> {
  const res = await request(url, { method: 'POST', headers: req.headers, body: req.body, ...(dispatcher ? { dispatcher } : {}) });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  const id = res.statusCode >= 200 && res.statusCode < 300 ? (json as { id?: unknown } | null)?.id : undefined;
  return { status: res.statusCode, json, eventId: typeof id === 'string' ? id : undefined };
}

/**
 * Polls `condition` every `intervalMs` until it holds; throws after `timeoutMs`, naming what it waited for. For store
 * state only: the store has no change events. Sink arrivals are awaited with sink.waitFor instead.
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string | (() => string),
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

export { deliveryIdFor, pairKeyFor, pairKeyOf };
