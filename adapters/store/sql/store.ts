/**
 * The SQL store, one implementation for SQLite and PostgreSQL over Kysely's raw `sql` templates (parameters are
 * bound per dialect). The few dialect differences are passed in: DDL words, `FOR UPDATE SKIP LOCKED` (PostgreSQL;
 * SQLite has one writer at a time, so a claim is already exclusive) and how a write transaction starts.
 *
 * Hot paths are batched: ingest is two multi-row statements per queue batch, a claim is one UPDATE … RETURNING,
 * and completing delivered attempts is one INSERT plus one UPDATE per batch.
 */
import { type Kysely, type RawBuilder, sql } from 'kysely';
import { RouterError } from '../../../src/errors.ts';
import type { Subscriber } from '../../../src/subscribers/model.ts';
import type {
  ClaimedDelivery,
  CompletedAttempt,
  DeadLetter,
  DeadLetterFilter,
  EventRecord,
  IngestItem,
  IngestResult,
  NewSubscriber,
  Page,
  PageRequest,
  SchemaStatus,
  Store,
  SubscriberPatch,
} from '../port.ts';
import { deliveryIdFor } from '../ids.ts';
import { latestVersion, migrations, render, type SqlDialectWords } from './migrations.ts';
import { type Row, toAttempt, toDeadLetter, toDelivery, toEvent, toSubscriber } from './rows.ts';

// biome-ignore lint: Kysely over raw SQL needs no table typing.
type Db = Kysely<any>;

export interface SqlStoreOptions {
  readonly kind: 'sqlite' | 'postgres';
  readonly db: Db;
  readonly words: SqlDialectWords;
  /** Runs fn in a write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: a pooled transaction). */
  readonly transaction: <T>(fn: (db: Db) => Promise<T>) => Promise<T>;
  /**
   * Runs fn without waiting for its commit to reach the disk (SQLite synchronous=OFF, PostgreSQL
   * synchronous_commit=off). Only for writes whose loss in a power cut is harmless: a lost claim or release just
   * leaves the delivery due again. The next durable commit flushes them anyway.
   */
  readonly relaxed: <T>(fn: (db: Db) => Promise<T>) => Promise<T>;
  readonly close: () => Promise<void>;
}

/** A page cursor is a row seq; anything else (a forged or garbled cursor) reads as "past the end". */
function cursorValue(cursor: string | undefined, start: number, pastEnd: number): number {
  if (cursor === undefined) return start;
  return /^\d{1,15}$/.test(cursor) ? Number(cursor) : pastEnd;
}

/** Rows per multi-row statement, and so the size of every IN list too: SQLite binds at most 32,766 parameters. */
const CHUNK = 256;

/**
 * Cuts a list into the parts that each become one multi-row statement. PostgreSQL: slices of CHUNK, one round trip
 * each. SQLite: parts whose sizes come from the ladder CHUNK, CHUNK/2, …, 1, so a statement has at most nine texts and
 * the store thread prepares each once (sqlite-thread.ts caches statements by text). With one text per row count the
 * cache filled with hundreds of large statements and had to drop them, and a dropped better-sqlite3 statement
 * frees its native memory only when V8 collects its small wrapper, which a thread that allocates little seldom
 * does: about 150 MB of a worker's RSS under a backlog of 100,000 events.
 */
export function chunker(kind: SqlStoreOptions['kind']): <T>(items: readonly T[]) => T[][] {
  if (kind === 'postgres') {
    return (items) => {
      const parts = [];
      for (let i = 0; i < items.length; i += CHUNK) parts.push(items.slice(i, i + CHUNK));
      return parts;
    };
  }
  return (items) => {
    const parts = [];
    let i = 0;
    for (let size = CHUNK; size >= 1; size >>= 1) {
      while (items.length - i >= size) {
        parts.push(items.slice(i, i + size));
        i += size;
      }
    }
    return parts;
  };
}

/**
 * A NOT IN list, which cannot be cut into parts, padded with its own first item to the next power of two: repeats
 * change nothing in the list, and each statement again has only a few texts (see chunker()).
 */
export function padToPowerOfTwo<T>(items: readonly T[]): T[] {
  const padded = [...items];
  while (padded.length > 0 && (padded.length & (padded.length - 1)) !== 0) padded.push(items[0] as T);
  return padded;
}

export function createSqlStore(options: SqlStoreOptions): Store {
  const { db, transaction, relaxed } = options;
  const chunks = chunker(options.kind);
  const skipLocked: RawBuilder<unknown> = options.kind === 'postgres' ? sql`FOR UPDATE SKIP LOCKED` : sql``;
  const forUpdate: RawBuilder<unknown> = options.kind === 'postgres' ? sql`FOR UPDATE` : sql``;

  const bumpSubscribersVersion = (q: Db) => sql`UPDATE router_meta SET value = value + 1 WHERE key = 'subscribers_version'`.execute(q);
  const affected = (r: { numAffectedRows?: bigint }) => Number(r.numAffectedRows ?? 0n);

  async function schemaStatus(): Promise<SchemaStatus> {
    try {
      const { rows } = await sql<{ v: number | null }>`SELECT MAX(version) AS v FROM schema_migrations`.execute(db);
      return { current: Number(rows[0]?.v ?? 0), latest: latestVersion };
    } catch (err) {
      // No schema_migrations table yet: a database nothing was ever migrated into. Anything else is an outage.
      if (/no such table|does not exist/i.test(String((err as Error).message))) return { current: 0, latest: latestVersion };
      throw new RouterError('ROUTER_ERR_STORE_UNAVAILABLE', 'cannot read the schema version', { cause: err });
    }
  }

  async function deadLetterFromDelivery(q: Db, deliveryId: string, reason: string, now: number, detail?: string) {
    await sql`
      INSERT INTO dead_letters (id, delivery_id, event_id, subscriber_id, reason, last_code, last_status, attempts, detail, created_at)
      SELECT id, id, event_id, subscriber_id, CAST(${reason} AS TEXT), last_code, last_status, attempts, CAST(${detail ?? null} AS TEXT), CAST(${now} AS BIGINT)
      FROM deliveries WHERE id = ${deliveryId}
      ON CONFLICT (id) DO UPDATE SET reason = excluded.reason, last_code = excluded.last_code, last_status = excluded.last_status,
        attempts = excluded.attempts, detail = excluded.detail, created_at = excluded.created_at`.execute(q);
  }

async function requeue(deliveryIds: readonly string[], now: number): Promise<number> {
    if (deliveryIds.length === 0) return 0;
    return transaction(async (q) => {
      let moved = 0;
      for (const part of chunks(deliveryIds)) {
        const ids = sql.join(part);
        moved += affected(
          await sql`
            UPDATE deliveries SET status = 'pending', attempts = CASE WHEN status = 'pending' THEN attempts ELSE 0 END,
              cycle = CASE WHEN status = 'pending' THEN cycle ELSE cycle + 1 END, next_attempt_at = ${now}, lease_owner = NULL, updated_at = ${now}
            WHERE id IN (${ids}) AND (status <> 'pending' OR lease_owner IS NULL)`.execute(q),
        );
        await sql`DELETE FROM dead_letters WHERE delivery_id IN (${ids})`.execute(q);
      }
      return moved;
    });
  }

  /** Moves a subscriber's pending deliveries (in flight ones too, when `inFlight`) to the DLQ with `reason`. */
  async function deadLetterAll(q: Db, subscriberId: string, reason: string, now: number, inFlight: boolean): Promise<number> {
    const idle = inFlight ? sql`` : sql`AND (lease_owner IS NULL OR next_attempt_at <= ${now})`;
    const { rows } = await sql<{ id: string }>`
      SELECT id FROM deliveries WHERE subscriber_id = ${subscriberId} AND status = 'pending' ${idle} ${forUpdate}`.execute(q);
    if (rows.length === 0) return 0;
    const ids = rows.map((r) => r.id);
    for (const part of chunks(ids)) {
      await sql`UPDATE deliveries SET status = 'dead', lease_owner = NULL, updated_at = ${now} WHERE id IN (${sql.join(part)})`.execute(q);
    }
    for (const id of ids) await deadLetterFromDelivery(q, id, reason, now);
    return ids.length;
  }

  return {
    kind: options.kind,

    async connect() {
      await sql`SELECT 1`.execute(db);
    },

    async migrate() {
      return transaction(async (q) => {
        // PostgreSQL: one migrator at a time across every process; SQLite's write transaction is already exclusive.
        if (options.kind === 'postgres') await sql`SELECT pg_advisory_xact_lock(7413020)`.execute(q);
        await sql.raw(`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at ${options.words.bigint} NOT NULL)`).execute(q);
        const { rows } = await sql<{ v: number | null }>`SELECT MAX(version) AS v FROM schema_migrations`.execute(q);
        const current = Number(rows[0]?.v ?? 0);
        if (current > latestVersion) {
          throw new RouterError('ROUTER_ERR_SCHEMA_MISMATCH', `database schema v${current} is newer than this release knows (v${latestVersion})`);
        }
        for (const m of migrations.filter((m) => m.version > current)) {
          for (const statement of m.statements) await sql.raw(render(statement, options.words)).execute(q);
          await sql`INSERT INTO schema_migrations (version, applied_at) VALUES (${m.version}, ${Date.now()})`.execute(q);
        }
        return { current: latestVersion, latest: latestVersion };
      });
    },

    schemaStatus,

    async ping() {
      await sql`SELECT 1`.execute(db);
    },

    close: options.close,

    // ── Subscribers ──────────────────────────────────────────────────────────────────────────────────────────

    async createSubscriber(s: NewSubscriber, now) {
      const { id, secrets, name, enabled, ...rest } = s;
      await transaction(async (q) => {
        await sql`
          INSERT INTO subscribers (id, name, enabled, spec, secrets, disabled_reason, version, created_at, updated_at)
          VALUES (${id}, ${name}, ${enabled ? 1 : 0}, ${JSON.stringify(rest)}, ${JSON.stringify(secrets)}, NULL, 1, ${now}, ${now})`.execute(q);
        await bumpSubscribersVersion(q);
      });
      return { ...s, disabledReason: undefined, version: 1, createdAt: now, updatedAt: now };
    },

    async getSubscriber(id) {
      const { rows } = await sql<Row>`SELECT * FROM subscribers WHERE id = ${id}`.execute(db);
      return rows[0] ? toSubscriber(rows[0]) : undefined;
    },

    async listSubscribers(page: PageRequest): Promise<Page<Subscriber>> {
      const after = cursorValue(page.cursor, 0, Number.MAX_SAFE_INTEGER);
      const { rows } = await sql<Row>`SELECT * FROM subscribers WHERE seq > ${after} ORDER BY seq LIMIT ${page.limit + 1}`.execute(db);
      const items = rows.slice(0, page.limit);
      return { items: items.map(toSubscriber), nextCursor: rows.length > page.limit ? String(items.at(-1)?.seq) : undefined };
    },

    async allSubscribers() {
      const { rows } = await sql<Row>`SELECT * FROM subscribers ORDER BY seq`.execute(db);
      return rows.map(toSubscriber);
    },

    async subscribersVersion() {
      const { rows } = await sql<{ value: number | string }>`SELECT value FROM router_meta WHERE key = 'subscribers_version'`.execute(db);
      return String(rows[0]?.value ?? 0);
    },

    async updateSubscriber(id, patch: SubscriberPatch, now, expectedVersion) {
      return transaction(async (q) => {
        const { rows } = await sql<Row>`SELECT * FROM subscribers WHERE id = ${id}`.execute(q);
        const row = rows[0];
        if (!row) return undefined;
        const current = toSubscriber(row);
        if (expectedVersion !== undefined && current.version !== expectedVersion) return undefined;
        const merged = { ...current, ...patch.spec };
        const { id: _id, secrets: _s, name, enabled, disabledReason: _d, version: _v, createdAt: _c, updatedAt: _u, ...rest } = merged;
        const secrets = patch.secrets ?? current.secrets;
        const disabledReason = patch.disabledReason === undefined ? (current.disabledReason ?? null) : patch.disabledReason;
        // The version check in the UPDATE itself makes concurrent writers safe without a row lock.
        const changed = affected(
          await sql`
            UPDATE subscribers SET name = ${name}, enabled = ${enabled ? 1 : 0}, spec = ${JSON.stringify(rest)},
              secrets = ${JSON.stringify(secrets)}, disabled_reason = ${disabledReason}, version = version + 1, updated_at = ${now}
            WHERE id = ${id} AND version = ${current.version}`.execute(q),
        );
        if (changed === 0) return undefined;
        await bumpSubscribersVersion(q);
        return { ...merged, secrets, disabledReason: disabledReason ?? undefined, version: current.version + 1, updatedAt: now };
      });
    },

    async deleteSubscriber(id, now) {
      return transaction(async (q) => {
        await deadLetterAll(q, id, 'subscriber_deleted', now, true);
        const deleted = affected(await sql`DELETE FROM subscribers WHERE id = ${id}`.execute(q));
        if (deleted) await bumpSubscribersVersion(q);
        return deleted > 0;
      });
    },

    // ── Ingest and delivery ──────────────────────────────────────────────────────────────────────────────────

    async ingest(items: readonly IngestItem[], now): Promise<IngestResult[]> {
      if (items.length === 0) return [];
      // The first item of an event id is the one that may create it; a repeat later in the same batch is a duplicate.
      const first = new Map<string, number>();
      items.forEach((it, i) => {
        if (!first.has(it.event.id)) first.set(it.event.id, i);
      });
      const firsts = items.filter((it, i) => first.get(it.event.id) === i);
      return transaction(async (q) => {
        // The event id is derived from the dedupe key: an id already in events is a repeat (schema v4).
        const seqOf = new Map<string, number>();
        for (const part of chunks(firsts)) {
          const values = part.map(
            ({ event: e }) =>
              sql`(${e.id}, ${e.source}, ${e.sourceKind}, ${e.dedupeKey}, ${e.receivedAt}, ${JSON.stringify(e.headers)}, ${JSON.stringify(e.routing)}, ${Buffer.from(e.body.buffer, e.body.byteOffset, e.body.byteLength)}, ${now})`,
          );
          const inserted = await sql<{ id: string; seq: number | string }>`
            INSERT INTO events (id, source, source_kind, dedupe_key, received_at, headers, routing, body, created_at)
            VALUES ${sql.join(values)} ON CONFLICT (id) DO NOTHING RETURNING id, seq`.execute(q);
          for (const r of inserted.rows) seqOf.set(r.id, Number(r.seq));
        }
        const deliveries = firsts.flatMap((it) => {
          const seq = seqOf.get(it.event.id);
          if (seq === undefined) return [];
          return it.deliveries.map(
            (d) => sql`(${d.id}, ${it.event.id}, ${seq}, ${d.subscriberId}, 'pending', 0, 1, ${now}, ${d.orderingKey ?? null}, ${now}, ${now})`,
          );
        });
        for (const part of chunks(deliveries)) {
          await sql`
            INSERT INTO deliveries (id, event_id, event_seq, subscriber_id, status, attempts, cycle, next_attempt_at, ordering_key, created_at, updated_at)
            VALUES ${sql.join(part)} ON CONFLICT (id) DO NOTHING`.execute(q);
        }
        return items.map((it, i) => (seqOf.has(it.event.id) && first.get(it.event.id) === i ? 'created' : 'duplicate'));
      });
    },

    async claimDue({ owner, now, leaseMs, limit, exclude }): Promise<ClaimedDelivery[]> {
      const notExcluded = exclude.length > 0 ? sql`AND d.subscriber_id NOT IN (${sql.join(padToPowerOfTwo(exclude))})` : sql``;
      const { rows } = await relaxed((q) => sql<{ id: string; event_id: string; subscriber_id: string; attempts: number }>`
        UPDATE deliveries SET lease_owner = ${owner}, next_attempt_at = ${now + leaseMs}, updated_at = ${now}
        WHERE id IN (
          SELECT d.id FROM deliveries d
          WHERE d.status = 'pending' AND d.next_attempt_at <= ${now} ${notExcluded}
            AND (d.ordering_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM deliveries p
              WHERE p.subscriber_id = d.subscriber_id AND p.ordering_key = d.ordering_key AND p.status = 'pending' AND p.event_seq < d.event_seq))
          ORDER BY d.next_attempt_at LIMIT ${limit} ${skipLocked})
        RETURNING id, event_id, subscriber_id, attempts`.execute(q));
      return rows.map((r) => ({ id: r.id, eventId: r.event_id, subscriberId: r.subscriber_id, attempt: Number(r.attempts) + 1 }));
    },

    async loadEvents(ids): Promise<EventRecord[]> {
      if (ids.length === 0) return [];
      const found: EventRecord[] = [];
      for (const part of chunks([...new Set(ids)])) {
        const { rows } = await sql<Row>`SELECT * FROM events WHERE id IN (${sql.join(part)})`.execute(db);
        for (const r of rows) found.push(toEvent(r));
      }
      return found;
    },

    async complete(owner, all: readonly CompletedAttempt[], now) {
      if (all.length === 0) return;
      await transaction(async (q) => {
        // Entries whose lease this owner no longer holds are skipped entirely: no state change and no attempt row.
        const held = new Map<string, number | string>(); // delivery id → seq
        for (const part of chunks(all)) {
          const ids = part.map((r) => r.attempt.deliveryId);
          const { rows } = await sql<{ id: string; seq: number | string }>`
            SELECT id, seq FROM deliveries WHERE lease_owner = ${owner} AND status = 'pending' AND id IN (${sql.join(ids)}) ${forUpdate}`.execute(q);
          for (const r of rows) held.set(r.id, r.seq);
        }
        const results = all.filter((r) => held.has(r.attempt.deliveryId));
        if (results.length === 0) return;
        for (const part of chunks(results)) {
          const attempts = part.map(
            ({ attempt: a }) =>
              sql`(${a.deliveryId}, ${held.get(a.deliveryId)}, ${a.attempt}, ${a.startedAt}, ${a.durationMs}, ${a.outcome}, ${a.code ?? null}, ${a.status ?? null}, ${a.response ?? null})`,
          );
          await sql`
            INSERT INTO attempts (delivery_id, delivery_seq, attempt, started_at, duration_ms, outcome, code, status, response)
            VALUES ${sql.join(attempts)}`.execute(q);
        }
        const delivered = results.filter((r) => r.next.status === 'delivered');
        for (const part of chunks(delivered)) {
          const ids = part.map((r) => r.attempt.deliveryId);
          await sql`
            UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, lease_owner = NULL, last_code = NULL, last_status = NULL, updated_at = ${now}
            WHERE lease_owner = ${owner} AND status = 'pending' AND id IN (${sql.join(ids)})`.execute(q);
        }
        for (const { attempt: a, next } of results) {
          if (next.status === 'delivered') continue;
          const nextAt = next.status === 'retry' ? next.at : now;
          const held = affected(
            await sql`
              UPDATE deliveries SET status = ${next.status === 'dead' ? 'dead' : 'pending'}, attempts = attempts + 1, next_attempt_at = ${nextAt},
                lease_owner = NULL, last_code = ${a.code ?? null}, last_status = ${a.status ?? null}, updated_at = ${now}
              WHERE id = ${a.deliveryId} AND lease_owner = ${owner} AND status = 'pending'`.execute(q),
          );
          if (held && next.status === 'dead') await deadLetterFromDelivery(q, a.deliveryId, next.reason, now);
        }
      });
    },

    async release(owner, deliveryIds, nextAttemptAt) {
      await relaxed(async (q) => {
        for (const part of chunks(deliveryIds)) {
          await sql`
            UPDATE deliveries SET lease_owner = NULL, next_attempt_at = ${nextAttemptAt}
            WHERE lease_owner = ${owner} AND status = 'pending' AND id IN (${sql.join(part)})`.execute(q);
        }
      });
    },

    deadLetterPending: (subscriberId, reason, now) => transaction((q) => deadLetterAll(q, subscriberId, reason, now, false)),

    async deferSubscriber(subscriberId, until) {
      return affected(
        await sql`
          UPDATE deliveries SET next_attempt_at = ${until}
          WHERE subscriber_id = ${subscriberId} AND status = 'pending' AND next_attempt_at < ${until}`.execute(db),
      );
    },

    requeue,

    async listDeliveries(filter, page) {
      const before = cursorValue(page.cursor, Number.MAX_SAFE_INTEGER, 0);
      const { rows } = await sql<Row>`
        SELECT * FROM deliveries WHERE seq < ${before}
          ${filter.subscriber ? sql`AND subscriber_id = ${filter.subscriber}` : sql``}
          ${filter.status ? sql`AND status = ${filter.status}` : sql``}
          ${filter.event ? sql`AND event_seq = (SELECT seq FROM events WHERE id = ${filter.event})` : sql``}
          ${filter.since !== undefined ? sql`AND created_at >= ${filter.since}` : sql``}
          ${filter.until !== undefined ? sql`AND created_at < ${filter.until}` : sql``}
        ORDER BY seq DESC LIMIT ${page.limit + 1}`.execute(db);
      const items = rows.slice(0, page.limit);
      return { items: items.map(toDelivery), nextCursor: rows.length > page.limit ? String(items.at(-1)?.seq) : undefined };
    },

    async getEvent(id) {
      const { rows } = await sql<Row>`SELECT * FROM events WHERE id = ${id}`.execute(db);
      return rows[0] ? toEvent(rows[0]) : undefined;
    },

    async getDelivery(id) {
      const { rows } = await sql<Row>`SELECT * FROM deliveries WHERE id = ${id}`.execute(db);
      if (!rows[0]) return undefined;
      const log = await sql<Row>`SELECT * FROM attempts WHERE delivery_seq = ${rows[0].seq} ORDER BY seq`.execute(db);
      return { ...toDelivery(rows[0]), attemptLog: log.rows.map(toAttempt) };
    },

    // ── Dead letters ─────────────────────────────────────────────────────────────────────────────────────────

    async recordPoison(detail, now) {
      const id = `poison_${now.toString(36)}_${Math.random().toString(36).slice(2, 10)}`;
      await sql`
        INSERT INTO dead_letters (id, delivery_id, event_id, subscriber_id, reason, last_code, last_status, attempts, detail, created_at)
        VALUES (${id}, NULL, NULL, NULL, 'poison', NULL, NULL, 0, ${detail.slice(0, 4_096)}, ${now})`.execute(db);
    },

    async listDeadLetters(filter: DeadLetterFilter, page: PageRequest): Promise<Page<DeadLetter>> {
      const after = cursorValue(page.cursor, 0, Number.MAX_SAFE_INTEGER);
      const { rows } = await sql<Row>`
        SELECT * FROM dead_letters WHERE seq > ${after}
          ${filter.subscriber ? sql`AND subscriber_id = ${filter.subscriber}` : sql``}
          ${filter.event ? sql`AND event_id = ${filter.event}` : sql``}
          ${filter.reason ? sql`AND reason = ${filter.reason}` : sql``}
          ${filter.since !== undefined ? sql`AND created_at >= ${filter.since}` : sql``}
          ${filter.until !== undefined ? sql`AND created_at < ${filter.until}` : sql``}
        ORDER BY seq LIMIT ${page.limit + 1}`.execute(db);
      const items = rows.slice(0, page.limit);
      return { items: items.map(toDeadLetter), nextCursor: rows.length > page.limit ? String(items.at(-1)?.seq) : undefined };
    },

    async getDeadLetter(id) {
      const { rows } = await sql<Row>`SELECT * FROM dead_letters WHERE id = ${id}`.execute(db);
      return rows[0] ? toDeadLetter(rows[0]) : undefined;
    },

    async replayDeadLetters(ids, now, replayOptions) {
      if (ids.length === 0) return 0;
      const letters: DeadLetter[] = [];
      for (const part of chunks(ids)) {
        const { rows } = await sql<Row>`SELECT * FROM dead_letters WHERE id IN (${sql.join(part)}) AND delivery_id IS NOT NULL`.execute(db);
        for (const r of rows) letters.push(toDeadLetter(r));
      }
      const target = replayOptions?.toSubscriber;
      if (!target) return requeue(letters.map((l) => l.deliveryId as string), now);
      return transaction(async (q) => {
        // Each new delivery's id comes from its event's receive time, as ingest's do (ids.ts): one read of the events.
        const events = new Map<string, { seq: number; receivedAt: number }>();
        for (const part of chunks([...new Set(letters.map((l) => l.eventId as string))])) {
          const { rows } = await sql<{ id: string; seq: number | string; received_at: number | string }>`
            SELECT id, seq, received_at FROM events WHERE id IN (${sql.join(part)})`.execute(q);
          for (const r of rows) events.set(r.id, { seq: Number(r.seq), receivedAt: Number(r.received_at) });
        }
        let created = 0;
        for (const l of letters) {
          const event = events.get(l.eventId as string);
          if (!event) continue; // its event is gone: nothing to send, and the letter stays
          const id = deliveryIdFor(l.eventId as string, target, event.receivedAt);
          const r = await sql`
            INSERT INTO deliveries (id, event_id, event_seq, subscriber_id, status, attempts, cycle, next_attempt_at, ordering_key, created_at, updated_at)
            VALUES (${id}, ${l.eventId as string}, ${event.seq}, ${target}, 'pending', 0, 1, ${now}, NULL, ${now}, ${now})
            ON CONFLICT (id) DO UPDATE SET status = 'pending', attempts = 0, cycle = deliveries.cycle + 1, next_attempt_at = excluded.next_attempt_at,
              lease_owner = NULL, updated_at = excluded.updated_at
            WHERE deliveries.status <> 'pending'`.execute(q);
          created += affected(r);
          await sql`DELETE FROM dead_letters WHERE id = ${l.id}`.execute(q);
        }
        return created;
      });
    },

    async purgeDeadLetters(ids) {
      if (ids.length === 0) return 0;
      let purged = 0;
      for (const part of chunks(ids)) purged += affected(await sql`DELETE FROM dead_letters WHERE id IN (${sql.join(part)})`.execute(db));
      return purged;
    },

    // ── Retention ────────────────────────────────────────────────────────────────────────────────────────────

    async sweep(now, retention) {
      const day = 86_400_000;
      // Events go with their finished deliveries; an event that still has pending or dead deliveries stays. An event
      // is its dedupe key too (schema v4), so it is kept at least `dedupeDays` even when events are kept for less.
      const eventsBefore = now - retention.eventsDays * day;
      const keysBefore = now - Math.max(retention.eventsDays, retention.dedupeDays) * day;
      return transaction(async (q) => {
        const deadLetters = affected(await sql`DELETE FROM dead_letters WHERE created_at < ${now - retention.dlqDays * day}`.execute(q));
        // A dead delivery stays (with its attempts, and so its event) while its dead letter is kept: it can be replayed.
        const unreferenced = sql`NOT EXISTS (SELECT 1 FROM dead_letters l WHERE l.delivery_id = deliveries.id)`;
        await sql`DELETE FROM attempts WHERE delivery_seq IN (
          SELECT seq FROM deliveries WHERE updated_at < ${eventsBefore} AND status <> 'pending' AND ${unreferenced})`.execute(q);
        const deliveries = affected(
          await sql`DELETE FROM deliveries WHERE updated_at < ${eventsBefore} AND status <> 'pending' AND ${unreferenced}`.execute(q),
        );
        const events = affected(
          await sql`
            DELETE FROM events WHERE created_at < ${keysBefore}
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq)`.execute(q),
        );
        return { events, deliveries, deadLetters };
      });
    },
  };
}

