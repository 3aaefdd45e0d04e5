/**
 * Builders for tests that drive a store only through its port (adapters/store/port.ts): subscribers, events with
 * awkward bodies, deliveries with derived ids, attempt records. Every builder is deterministic except `randomBody`.
 */
import { randomBytes } from 'node:crypto';
import type { z } from 'zod';
import { deliveryIdFor as idFor } from '../../adapters/store/ids.ts';
import type {
  AttemptRecord,
  ClaimedDelivery,
  EventRecord,
  IngestItem,
  NewDelivery,
  NewSubscriber,
} from '../../adapters/store/port.ts';
import { migrations, render, type SqlDialectWords } from '../../adapters/store/sql/migrations.ts';
import { SubscriberSpec } from '../../src/subscribers/model.ts';

/** A delivery's id; the receive time defaults to eventRecord()'s (T0), the one the contract's events carry. */
export const deliveryIdFor = (eventId: string, subscriberId: string, receivedAt: number = T0): string => idFor(eventId, subscriberId, receivedAt);

/** A fixed, far-from-epoch instant; tests pass `now` explicitly and count from here. */
export const T0 = Date.UTC(2031, 0, 1, 12, 0, 0);
export const DAY = 86_400_000;

/** A subscriber spec through the real zod schema, so defaults are the ones the API stores. */
export function subscriberSpec(overrides: Partial<z.input<typeof SubscriberSpec>> = {}): SubscriberSpec {
  return SubscriberSpec.parse({
    name: 'ci-dashboard',
    transport: { kind: 'https', url: 'https://ci.example.com/hooks', headers: {}, timeoutMs: 15_000, signing: 'standard-webhooks' },
    filter: { sources: ['github'], events: ['push', 'pull_request.*'], repositories: ['acme/*', '!acme/secret-*'] },
    retry: { schedule: [1, 5, 30], maxAttempts: 3 },
    ...overrides,
  });
}

export function newSubscriber(id: string, overrides: Partial<z.input<typeof SubscriberSpec>> = {}): NewSubscriber {
  return { ...subscriberSpec({ name: `subscriber ${id}`, ...overrides }), id, secrets: { current: `whsec_${id}_secret` } };
}

/**
 * Bytes a JSON or UTF-8 layer would mangle: NUL, 0xFF, a truncated two-byte sequence, an encoded surrogate, an
 * overlong slash, a CR LF, followed by random bytes.
 */
export function randomBody(size: number): Uint8Array {
  const nasty = [0x00, 0xff, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0xc0, 0xaf, 0x0d, 0x0a, 0x00, 0xfe];
  const out = new Uint8Array(Math.max(size, nasty.length));
  out.set(nasty, 0);
  out.set(randomBytes(out.length - nasty.length), nasty.length);
  return out;
}

export function eventRecord(id: string, overrides: Partial<EventRecord> = {}): EventRecord {
  return {
    id,
    source: 'github',
    sourceKind: 'github',
    dedupeKey: `gh-${id}`,
    receivedAt: T0,
    headers: { 'x-github-event': 'push', 'x-github-delivery': `gh-${id}`, 'x-github-hook-id': '42' },
    routing: { event: 'push', repository: 'acme/api', organization: 'acme', ref: 'refs/heads/main', sender: 'octocat' },
    body: new TextEncoder().encode(JSON.stringify({ ref: 'refs/heads/main', id })),
    ...overrides,
  };
}

export function newDelivery(eventId: string, subscriberId: string, orderingKey?: string, receivedAt: number = T0): NewDelivery {
  return { id: deliveryIdFor(eventId, subscriberId, receivedAt), subscriberId, orderingKey };
}

/** One event with one delivery per subscriber (all with `orderingKey`, when given). */
export function ingestItem(
  eventId: string,
  subscriberIds: readonly string[],
  options: { orderingKey?: string; event?: Partial<EventRecord> } = {},
): IngestItem {
  const event = eventRecord(eventId, options.event);
  return { event, deliveries: subscriberIds.map((s) => newDelivery(eventId, s, options.orderingKey, event.receivedAt)) };
}

const outcomes = {
  delivered: { code: undefined, status: 200, response: 'ok' },
  retryable: { code: 'http_5xx', status: 503, response: 'unavailable' },
  permanent: { code: 'http_4xx', status: 400, response: 'bad request' },
} as const;

/** The attempt a worker records for a claimed delivery. */
export function attemptFor(
  claimed: Pick<ClaimedDelivery, 'id' | 'attempt'>,
  outcome: AttemptRecord['outcome'],
  startedAt: number,
  overrides: Partial<AttemptRecord> = {},
): AttemptRecord {
  return { deliveryId: claimed.id, attempt: claimed.attempt, startedAt, durationMs: 12, outcome, ...outcomes[outcome], ...overrides };
}

export { assertSameBytes } from './queue.ts';

/** A value as JSON would carry it: drops `undefined` members, so stored and returned objects compare fairly. */
export function plain<T>(value: T): unknown {
  return JSON.parse(JSON.stringify(value));
}

export function sorted(values: Iterable<string>): string[] {
  return [...values].sort();
}

/** What the store contract's upgrade test expects to find after migrating a database written at schema v1. */
export const V1_FIXTURE = { eventId: 'evt_v1', subscriberId: 'sub_v1', attempt: { attempt: 1, status: 503, response: 'busy' } } as const;

/**
 * A SQL database as release 1 (schema v1) left it, with one event, its dedupe key, its delivery and one attempt: the
 * statements the SQL harnesses run behind the store's back for the upgrade test. Written with v1's own DDL, so
 * later migrations have real rows to carry over.
 */
export function sqlSchemaV1(words: SqlDialectWords): string[] {
  const v1 = migrations.find((m) => m.version === 1);
  if (!v1) throw new Error('no migration v1');
  const { eventId, subscriberId, attempt } = V1_FIXTURE;
  const deliveryId = deliveryIdFor(eventId, subscriberId);
  return [
    `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at ${words.bigint} NOT NULL)`,
    ...v1.statements.map((statement) => render(statement, words)),
    `INSERT INTO schema_migrations (version, applied_at) VALUES (1, ${T0})`,
    `INSERT INTO events (id, source, source_kind, dedupe_key, received_at, headers, routing, body, created_at)
     VALUES ('${eventId}', 'github', 'github', 'k1', ${T0}, '{}', '{"event":"push"}', CAST('{}' AS ${words.blob}), ${T0})`,
    `INSERT INTO dedupe_keys (event_id, source, dedupe_key, expires_at) VALUES ('${eventId}', 'github', 'k1', ${T0 + 7 * DAY})`,
    `INSERT INTO deliveries (id, event_id, event_seq, subscriber_id, status, attempts, cycle, next_attempt_at, created_at, updated_at)
     SELECT '${deliveryId}', id, seq, '${subscriberId}', 'pending', 1, 1, ${T0}, ${T0}, ${T0} FROM events WHERE id = '${eventId}'`,
    `INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, outcome, code, status, response)
     VALUES ('${deliveryId}', ${attempt.attempt}, ${T0}, 12, 'retryable', 'http_5xx', ${attempt.status}, '${attempt.response}')`,
  ];
}
