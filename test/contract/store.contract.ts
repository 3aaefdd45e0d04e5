/**
 * The store contract: one suite that every store (SQLite, PostgreSQL, MongoDB) passes unchanged, run once per backend
 * through a `StoreHarness` (store.<backend>.test.ts). It checks what adapters/store/port.ts promises — the delivery
 * state machine, leases, ordering, the DLQ, retention — and nothing an implementation only happens to do: the order
 * of a claim or a list is never asserted unless the port defines it, cursors are opaque, and boundaries the port
 * leaves open (is `since` inclusive?) are never probed.
 *
 * Time is data: every call takes an explicit `now` (counted from T0), so there are no sleeps and a lease "runs out"
 * by passing a later `now`.
 *
 * Writing a harness for a new backend
 * - `make()` returns a connected, migrated store that shares nothing with any other store it returned (a temp file, a
 *   schema or database named per call). `make({ migrated: false })` skips the migration.
 * - `writeSchemaVersion(store, v)`, when the backend can do it, records schema version `v` behind the store's back
 *   (what a newer release's `migrate` would leave). Without it the "newer schema is refused" case is skipped.
 * - `writeSchemaV1(store)` writes the backend's oldest schema with V1_FIXTURE's event, delivery and attempt in it
 *   (the SQL stores: sqlSchemaV1()), into a store made with `migrated: false`. Without it the upgrade case is skipped.
 * - The suite closes every store after its test; `close({ passed })` runs once at the end. Keep failing state (temp
 *   dirs, schemas) when `passed` is false.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { ClaimedDelivery, DeadLetter, DeadLetterFilter, DeadReason, IngestItem, NextState, Store } from '../../adapters/store/port.ts';
import { isRouterError } from '../../src/errors.ts';
import {
  assertSameBytes,
  attemptFor,
  DAY,
  deliveryIdFor,
  ingestItem,
  newSubscriber,
  plain,
  randomBody,
  sorted,
  T0,
  V1_FIXTURE,
} from '../helpers/store.ts';

export interface StoreHarness {
  /** Shown in the suite name: `store contract: <name>`. */
  readonly name: string;
  /** A fresh, connected, isolated store; migrated unless `migrated: false`. */
  make(options?: { migrated?: boolean }): Promise<Store>;
  /** Records schema version `version` in the store's database behind its back (a newer release migrated it). */
  writeSchemaVersion?(store: Store, version: number): Promise<void>;
  /** Writes the backend's oldest schema, holding V1_FIXTURE's rows, behind the store's back (see above). */
  writeSchemaV1?(store: Store): Promise<void>;
  /** After the whole suite. `passed: false` keeps failing state around for inspection. */
  close(result: { passed: boolean }): Promise<void>;
}

/** Lease used unless a test says otherwise. */
const LEASE = 30_000;

type Body = (store: Store) => Promise<void>;

export function runStoreContract(h: StoreHarness): void {
  let failed = false;

  /** A test with its own store, closed afterwards whatever happened. */
  function stest(name: string, fn: Body, options: { migrated?: boolean; skip?: string | false } = {}): void {
    test(name, { skip: options.skip ?? false, timeout: 15_000 }, async () => {
      const store = await h.make({ migrated: options.migrated ?? true });
      try {
        await fn(store);
      } catch (err) {
        failed = true;
        throw err;
      } finally {
        await store.close();
      }
    });
  }

  // ── small drivers over the port ─────────────────────────────────────────────────────────────────────────────

  const claim = (store: Store, owner: string, now: number, options: { leaseMs?: number; limit?: number; exclude?: string[] } = {}) =>
    store.claimDue({ owner, now, leaseMs: options.leaseMs ?? LEASE, limit: options.limit ?? 1_000, exclude: options.exclude ?? [] });

  const ids = (claims: readonly ClaimedDelivery[]) => sorted(claims.map((c) => c.id));

  /** Ingests one event (one delivery per subscriber) at `now`, asserting it was new. Returns the delivery ids. */
  async function ingest(store: Store, eventId: string, subscriberIds: string[], now: number, orderingKey?: string): Promise<string[]> {
    const item = ingestItem(eventId, subscriberIds, orderingKey === undefined ? {} : { orderingKey });
    assert.deepEqual(await store.ingest([item], now), ['created'], `ingest ${eventId}`);
    return subscriberIds.map((s) => deliveryIdFor(eventId, s));
  }

  /** Claims at `now` as `owner` and expects exactly `expected` (by id). */
  async function claimExactly(store: Store, owner: string, now: number, expected: string[], message: string, leaseMs = LEASE) {
    const got = await claim(store, owner, now, { leaseMs });
    assert.deepEqual(ids(got), sorted(expected), message);
    return got;
  }

  function only<T>(items: readonly T[], message: string): T {
    assert.equal(items.length, 1, message);
    return items[0] as T;
  }

  function find(claims: readonly ClaimedDelivery[], id: string): ClaimedDelivery {
    const c = claims.find((x) => x.id === id);
    assert.ok(c, `delivery ${id} was not claimed`);
    return c;
  }

  /** Completes one claimed delivery with a matching attempt record. */
  async function finish(store: Store, owner: string, c: ClaimedDelivery, next: NextState, now: number) {
    const outcome = next.status === 'delivered' ? 'delivered' : next.status === 'retry' ? 'retryable' : 'permanent';
    await store.complete(owner, [{ attempt: attemptFor(c, outcome, now - 12), next }], now);
  }

  async function mustGet(store: Store, id: string) {
    const d = await store.getDelivery(id);
    assert.ok(d, `delivery ${id} exists`);
    return d;
  }

  async function allLetters(store: Store, filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    const out: DeadLetter[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 100; i++) {
      const page = await store.listDeadLetters(filter, { limit: 50, cursor });
      out.push(...page.items);
      cursor = page.nextCursor;
      if (!cursor) return out;
    }
    assert.fail('listDeadLetters never ended');
  }

  async function letterOf(store: Store, deliveryId: string): Promise<DeadLetter | undefined> {
    return (await allLetters(store)).find((l) => l.deliveryId === deliveryId);
  }

  /** Ingests one event for one subscriber at `now` and takes its delivery straight to dead with `reason`. */
  async function deadDelivery(store: Store, eventId: string, subscriberId: string, reason: DeadReason, now: number): Promise<string> {
    const [id] = await ingest(store, eventId, [subscriberId], now);
    const owner = `dlq-${eventId}`;
    const claimed = await claim(store, owner, now);
    await finish(store, owner, find(claimed, id as string), { status: 'dead', reason }, now);
    // Anything else that was due and got claimed on the way goes straight back, still due, no attempt spent.
    const others = claimed.filter((c) => c.id !== id).map((c) => c.id);
    if (others.length > 0) await store.release(owner, others, now);
    return id as string;
  }

  describe(`store contract: ${h.name}`, () => {
    after(() => h.close({ passed: !failed }));

    // ── 1. schema ───────────────────────────────────────────────────────────────────────────────────────────

    describe('schema', () => {
      stest(
        'a fresh store reports version 0 and migrates to the latest version',
        async (store) => {
          const before = await store.schemaStatus();
          assert.equal(before.current, 0, 'nothing applied yet');
          assert.ok(before.latest >= 1, 'this release knows at least one migration');
          assert.deepEqual(await store.migrate(), { current: before.latest, latest: before.latest });
          assert.deepEqual(await store.schemaStatus(), { current: before.latest, latest: before.latest });
        },
        { migrated: false },
      );

      stest('migrating again is a no-op that keeps every row', async (store) => {
        const status = await store.schemaStatus();
        assert.equal(status.current, status.latest);
        await store.createSubscriber(newSubscriber('sub_keep'), T0);
        await ingest(store, 'evt_keep', ['sub_keep'], T0);
        const version = await store.subscribersVersion();
        assert.deepEqual(await store.migrate(), status);
        assert.deepEqual(await store.schemaStatus(), status);
        assert.ok(await store.getSubscriber('sub_keep'), 'subscriber survived');
        assert.equal((await store.loadEvents(['evt_keep'])).length, 1, 'event survived');
        assert.equal((await mustGet(store, deliveryIdFor('evt_keep', 'sub_keep'))).status, 'pending');
        assert.equal(await store.subscribersVersion(), version, 'a migration is not a subscriber change');
      });

      stest(
        'two migrations racing on a fresh store both end at the latest version',
        async (store) => {
          const { latest } = await store.schemaStatus();
          const results = await Promise.all([store.migrate(), store.migrate()]);
          assert.deepEqual(results, [
            { current: latest, latest },
            { current: latest, latest },
          ]);
          assert.deepEqual(await store.schemaStatus(), { current: latest, latest });
        },
        { migrated: false },
      );

      stest(
        'a schema newer than this release knows is refused with ROUTER_ERR_SCHEMA_MISMATCH',
        async (store) => {
          const { latest } = await store.schemaStatus();
          await h.writeSchemaVersion?.(store, latest + 1);
          assert.deepEqual(await store.schemaStatus(), { current: latest + 1, latest }, 'schemaStatus shows the newer version');
          await assert.rejects(store.migrate(), (err: unknown) => {
            assert.ok(isRouterError(err), `expected a RouterError, got ${String(err)}`);
            assert.equal(err.code, 'ROUTER_ERR_SCHEMA_MISMATCH');
            return true;
          });
        },
        { skip: h.writeSchemaVersion ? false : `harness ${h.name} cannot write a schema version behind the store's back` },
      );

      stest(
        'a database at schema v1 with data migrates to the latest version and keeps finding its deliveries and attempts',
        async (store) => {
          await h.writeSchemaV1?.(store);
          const { latest } = await store.schemaStatus();
          assert.deepEqual(await store.schemaStatus(), { current: 1, latest });
          assert.deepEqual(await store.migrate(), { current: latest, latest });
          const { eventId, subscriberId, attempt } = V1_FIXTURE;
          const deliveryId = deliveryIdFor(eventId, subscriberId);
          assert.deepEqual((await store.listDeliveries({ event: eventId }, { limit: 10 })).items.map((d) => d.id), [deliveryId]);
          assert.deepEqual(
            (await mustGet(store, deliveryId)).attemptLog.map((a) => ({ attempt: a.attempt, status: a.status, response: a.response })),
            [attempt],
            'the attempt written at v1 is found through its delivery',
          );
          // Its dedupe key lived in dedupe_keys until v4 dropped the table: the event alone still makes a repeat one.
          assert.deepEqual(await store.ingest([ingestItem(eventId, [subscriberId, 'sub_other'])], T0 + DAY), ['duplicate']);
          assert.equal(await store.getDelivery(deliveryIdFor(eventId, 'sub_other')), undefined, 'the repeat added no delivery');
        },
        { migrated: false, skip: h.writeSchemaV1 ? false : `harness ${h.name} cannot write an old schema behind the store's back` },
      );
    });

    // ── 2. subscribers ──────────────────────────────────────────────────────────────────────────────────────

    describe('subscribers', () => {
      stest('create returns version 1 and get returns the same subscriber, secrets included', async (store) => {
        const input = newSubscriber('sub_1', { ordering: { key: '{repository}' }, limits: { concurrency: 3, perSecond: 7 } });
        const created = await store.createSubscriber(input, T0);
        assert.equal(created.version, 1);
        assert.equal(created.createdAt, T0);
        assert.equal(created.updatedAt, T0);
        assert.equal(created.disabledReason, undefined);
        assert.deepEqual(plain(created), plain({ ...input, version: 1, createdAt: T0, updatedAt: T0 }));
        const got = await store.getSubscriber('sub_1');
        assert.ok(got);
        assert.deepEqual(plain(got), plain(created));
        assert.equal(got.secrets.current, 'whsec_sub_1_secret');
        assert.equal(await store.getSubscriber('sub_nope'), undefined);
      });

      stest('list: 25 subscribers in pages of 10 → 3 pages, each subscriber exactly once', async (store) => {
        const created = [];
        for (let i = 0; i < 25; i++) created.push((await store.createSubscriber(newSubscriber(`sub_${String(i).padStart(2, '0')}`), T0 + i)).id);
        const pages: string[][] = [];
        let cursor: string | undefined;
        do {
          const page = await store.listSubscribers({ limit: 10, cursor });
          pages.push(page.items.map((s) => s.id));
          cursor = page.nextCursor;
          assert.ok(pages.length <= 3, 'more than 3 pages');
        } while (cursor);
        assert.deepEqual(
          pages.map((p) => p.length),
          [10, 10, 5],
        );
        const seen = pages.flat();
        assert.equal(new Set(seen).size, seen.length, 'no subscriber twice');
        assert.deepEqual(sorted(seen), sorted(created));
      });

      stest('list: subscribers created between pages never make another one appear twice or vanish', async (store) => {
        const originals: string[] = [];
        for (let i = 0; i < 25; i++) originals.push((await store.createSubscriber(newSubscriber(`sub_m${String(i).padStart(2, '0')}`), T0 + i)).id);
        const seen: string[] = [];
        let cursor: string | undefined;
        let pages = 0;
        do {
          const page = await store.listSubscribers({ limit: 10, cursor });
          seen.push(...page.items.map((s) => s.id));
          cursor = page.nextCursor;
          pages++;
          // Ids that sort before, between and after the existing ones.
          for (const id of [`sub_a${pages}`, `sub_m${String(pages).padStart(2, '0')}x`, `sub_z${pages}`]) {
            await store.createSubscriber(newSubscriber(id), T0 + 100 + pages);
          }
          assert.ok(pages <= 10, 'paging never ends');
        } while (cursor);
        assert.equal(new Set(seen).size, seen.length, `a subscriber came twice: ${seen.join(' ')}`);
        for (const id of originals) assert.ok(seen.includes(id), `${id} existed before paging started and was skipped`);
      });

      stest('allSubscribers returns every subscriber and none that was deleted', async (store) => {
        assert.deepEqual(await store.allSubscribers(), []);
        for (const id of ['sub_x', 'sub_y', 'sub_z']) await store.createSubscriber(newSubscriber(id), T0);
        assert.deepEqual(sorted((await store.allSubscribers()).map((s) => s.id)), ['sub_x', 'sub_y', 'sub_z']);
        await store.deleteSubscriber('sub_y', T0 + 1);
        const all = await store.allSubscribers();
        assert.deepEqual(sorted(all.map((s) => s.id)), ['sub_x', 'sub_z']);
        assert.deepEqual(plain(all.find((s) => s.id === 'sub_x')), plain(await store.getSubscriber('sub_x')));
      });

      stest('update: a wrong expectedVersion changes nothing, the right one bumps the version', async (store) => {
        await store.createSubscriber(newSubscriber('sub_u'), T0);
        assert.equal(await store.updateSubscriber('sub_u', { spec: { name: 'stale' } }, T0 + 1, 7), undefined);
        const untouched = await store.getSubscriber('sub_u');
        assert.equal(untouched?.name, 'subscriber sub_u');
        assert.equal(untouched?.version, 1);

        const v2 = await store.updateSubscriber('sub_u', { spec: { name: 'renamed', enabled: false }, disabledReason: 'endpoint_gone' }, T0 + 2, 1);
        assert.ok(v2);
        assert.equal(v2.version, 2);
        assert.equal(v2.name, 'renamed');
        assert.equal(v2.enabled, false);
        assert.equal(v2.disabledReason, 'endpoint_gone');
        assert.equal(v2.createdAt, T0);
        assert.equal(v2.updatedAt, T0 + 2);
        assert.deepEqual(v2.transport, untouched?.transport, 'fields outside the patch are kept');
        assert.deepEqual(plain(await store.getSubscriber('sub_u')), plain(v2));

        // The old version is stale now.
        assert.equal(await store.updateSubscriber('sub_u', { spec: { name: 'late' } }, T0 + 3, 1), undefined);

        // Without expectedVersion: last writer wins. Secrets and the disabled reason can change on their own.
        const v3 = await store.updateSubscriber(
          'sub_u',
          { spec: { enabled: true }, disabledReason: null, secrets: { current: 'whsec_new', previous: 'whsec_sub_u_secret', previousExpiresAt: T0 + DAY } },
          T0 + 4,
        );
        assert.ok(v3);
        assert.equal(v3.version, 3);
        assert.equal(v3.enabled, true);
        assert.equal(v3.disabledReason, undefined);
        assert.equal(v3.name, 'renamed');
        const got = await store.getSubscriber('sub_u');
        assert.deepEqual(plain(got), plain(v3));
        assert.deepEqual(plain(got?.secrets), { current: 'whsec_new', previous: 'whsec_sub_u_secret', previousExpiresAt: T0 + DAY });

        assert.equal(await store.updateSubscriber('sub_gone', { spec: { name: 'x' } }, T0 + 5), undefined, 'unknown id');
        assert.equal(await store.updateSubscriber('sub_gone', { spec: { name: 'x' } }, T0 + 5, 1), undefined, 'unknown id with version');
      });

      stest('two concurrent updates with the same expectedVersion: exactly one wins', async (store) => {
        await store.createSubscriber(newSubscriber('sub_race'), T0);
        const results = await Promise.all(
          ['left', 'right', 'middle'].map((name, i) => store.updateSubscriber('sub_race', { spec: { name } }, T0 + 1 + i, 1)),
        );
        const winners = results.filter((r) => r !== undefined);
        assert.equal(winners.length, 1, 'optimistic concurrency lets one writer through');
        const got = await store.getSubscriber('sub_race');
        assert.equal(got?.version, 2);
        assert.equal(got?.name, winners[0]?.name);
      });

      stest('subscribersVersion changes on every create, update and delete', async (store) => {
        const versions = [await store.subscribersVersion()];
        const step = async (what: string, op: () => Promise<unknown>) => {
          await op();
          const v = await store.subscribersVersion();
          assert.ok(!versions.includes(v), `${what}: subscribersVersion ${v} was seen before (${versions.join(', ')})`);
          versions.push(v);
        };
        await step('create a', () => store.createSubscriber(newSubscriber('sub_a'), T0));
        await step('create b', () => store.createSubscriber(newSubscriber('sub_b'), T0));
        await step('update a', () => store.updateSubscriber('sub_a', { spec: { name: 'A' } }, T0 + 1));
        await step('update a with version', () => store.updateSubscriber('sub_a', { spec: { name: 'AA' } }, T0 + 2, 2));
        await step('disable b', () => store.updateSubscriber('sub_b', { disabledReason: 'endpoint_gone', spec: { enabled: false } }, T0 + 3));
        await step('delete a', () => store.deleteSubscriber('sub_a', T0 + 4));
        await step('delete b', () => store.deleteSubscriber('sub_b', T0 + 5));
      });

      stest('delete returns true, then false; the subscriber is gone everywhere', async (store) => {
        await store.createSubscriber(newSubscriber('sub_d'), T0);
        await store.createSubscriber(newSubscriber('sub_e'), T0);
        assert.equal(await store.deleteSubscriber('sub_d', T0 + 1), true);
        assert.equal(await store.deleteSubscriber('sub_d', T0 + 2), false);
        assert.equal(await store.deleteSubscriber('sub_never', T0 + 2), false);
        assert.equal(await store.getSubscriber('sub_d'), undefined);
        assert.deepEqual(
          (await store.listSubscribers({ limit: 10 })).items.map((s) => s.id),
          ['sub_e'],
        );
      });
    });

    // ── 3. ingest ───────────────────────────────────────────────────────────────────────────────────────────

    describe('ingest', () => {
      stest('a new event is stored with one pending delivery per subscriber', async (store) => {
        const item = ingestItem('evt_1', ['sub_a', 'sub_b']);
        assert.deepEqual(await store.ingest([item], T0), ['created']);
        for (const sub of ['sub_a', 'sub_b']) {
          const d = await mustGet(store, deliveryIdFor('evt_1', sub));
          assert.equal(d.eventId, 'evt_1');
          assert.equal(d.subscriberId, sub);
          assert.equal(d.status, 'pending');
          assert.equal(d.attempts, 0);
          assert.equal(d.cycle, 1);
          assert.equal(d.nextAttemptAt, T0, 'due at once');
          assert.equal(d.createdAt, T0);
          assert.deepEqual(d.attemptLog, []);
        }
        const [event] = await store.loadEvents(['evt_1']);
        assert.ok(event);
        const { body, ...meta } = event;
        const { body: sent, ...sentMeta } = item.event;
        assert.deepEqual(plain(meta), plain(sentMeta));
        assertSameBytes(body, sent);

        // An event no subscriber wants is still recorded (and deduplicated).
        assert.deepEqual(await store.ingest([ingestItem('evt_lonely', [])], T0), ['created']);
        assert.equal((await store.loadEvents(['evt_lonely'])).length, 1);
        assert.deepEqual(await store.ingest([ingestItem('evt_lonely', ['sub_a'])], T0 + 1), ['duplicate']);
        assert.equal(await store.getDelivery(deliveryIdFor('evt_lonely', 'sub_a')), undefined);
      });

      stest('deliveries are listed by event, by subscriber and by status, newest first', async (store) => {
        await ingest(store, 'evt_1', ['sub_a', 'sub_b'], T0);
        await ingest(store, 'evt_2', ['sub_a'], T0 + 1);
        const ids = async (filter: Parameters<Store['listDeliveries']>[0]) =>
          (await store.listDeliveries(filter, { limit: 10 })).items.map((d) => [d.eventId, d.subscriberId]);
        assert.deepEqual(await ids({ event: 'evt_1' }), [['evt_1', 'sub_b'], ['evt_1', 'sub_a']]);
        assert.deepEqual(await ids({ event: 'evt_2' }), [['evt_2', 'sub_a']]);
        assert.deepEqual(await ids({ event: 'evt_unknown' }), []);
        assert.deepEqual(await ids({ subscriber: 'sub_a' }), [['evt_2', 'sub_a'], ['evt_1', 'sub_a']]);
        assert.deepEqual(await ids({ event: 'evt_1', subscriber: 'sub_b', status: 'pending' }), [['evt_1', 'sub_b']]);
        assert.deepEqual(await ids({ event: 'evt_1', status: 'delivered' }), []);
      });

      stest('the same event again is a duplicate and adds no deliveries', async (store) => {
        await ingest(store, 'evt_1', ['sub_a'], T0);
        const again = ingestItem('evt_1', ['sub_a', 'sub_c'], { event: { body: new TextEncoder().encode('{"changed":true}') } });
        assert.deepEqual(await store.ingest([again], T0 + 5), ['duplicate']);
        assert.equal(await store.getDelivery(deliveryIdFor('evt_1', 'sub_c')), undefined, 'no delivery for the newcomer');
        const d = await mustGet(store, deliveryIdFor('evt_1', 'sub_a'));
        assert.equal(d.createdAt, T0, 'the original delivery is untouched');
        assert.equal(d.nextAttemptAt, T0);
        const [event] = await store.loadEvents(['evt_1']);
        assert.equal(new TextDecoder().decode(event?.body), JSON.stringify({ ref: 'refs/heads/main', id: 'evt_1' }), 'the first body stays');
      });

      stest('a batch mixing new and known events answers per item', async (store) => {
        await ingest(store, 'evt_known', ['sub_a'], T0);
        const results = await store.ingest(
          [ingestItem('evt_new1', ['sub_a']), ingestItem('evt_known', ['sub_a', 'sub_b']), ingestItem('evt_new2', ['sub_a', 'sub_b'])],
          T0 + 1,
        );
        assert.deepEqual(results, ['created', 'duplicate', 'created']);
        assert.equal(await store.getDelivery(deliveryIdFor('evt_known', 'sub_b')), undefined);
        assert.deepEqual(ids(await claim(store, 'w', T0 + 1)), sorted([
          deliveryIdFor('evt_known', 'sub_a'),
          deliveryIdFor('evt_new1', 'sub_a'),
          deliveryIdFor('evt_new2', 'sub_a'),
          deliveryIdFor('evt_new2', 'sub_b'),
        ]));
      });

      stest('the same event twice in one batch: created, then duplicate', async (store) => {
        // A queue batch can hold one webhook twice (a publish retried by the receiver, a source's own retry).
        const results = await store.ingest(
          [ingestItem('evt_twice', ['sub_a']), ingestItem('evt_other', ['sub_a']), ingestItem('evt_twice', ['sub_a', 'sub_b'])],
          T0,
        );
        assert.deepEqual(results, ['created', 'created', 'duplicate']);
        assert.equal(await store.getDelivery(deliveryIdFor('evt_twice', 'sub_b')), undefined, 'the repeat adds no delivery');
      });

      stest('concurrent ingests of one event: exactly one is created', async (store) => {
        const item = ingestItem('evt_race', ['sub_a', 'sub_b']);
        const results = await Promise.all(Array.from({ length: 5 }, (_, i) => store.ingest([item], T0 + i)));
        assert.deepEqual(sorted(results.flat()), ['created', 'duplicate', 'duplicate', 'duplicate', 'duplicate']);
        assert.deepEqual(ids(await claim(store, 'w', T0 + 10)), sorted(item.deliveries.map((d) => d.id)), 'one delivery per subscriber');
      });

      stest('event bodies come back byte for byte (NUL, invalid UTF-8, views, empty)', async (store) => {
        const big = randomBody(64 * 1024);
        const backing = randomBody(4_096);
        const view = backing.subarray(100, 3_000); // a view into a larger buffer, as a decoded queue envelope is
        const bodies: Record<string, Uint8Array> = { evt_big: big, evt_view: view, evt_empty: new Uint8Array(0), evt_nul: new Uint8Array([0, 0, 0]) };
        const results = await store.ingest(
          Object.entries(bodies).map(([id, body]) => ingestItem(id, ['sub_a'], { event: { body } })),
          T0,
        );
        assert.deepEqual(results, ['created', 'created', 'created', 'created']);
        const loaded = await store.loadEvents([...Object.keys(bodies), 'evt_unknown']);
        assert.deepEqual(sorted(loaded.map((e) => e.id)), sorted(Object.keys(bodies)), 'unknown ids are left out');
        for (const e of loaded) assertSameBytes(e.body, bodies[e.id] as Uint8Array, `body of ${e.id}`);
        assert.deepEqual(await store.loadEvents([]), []);
      });

      stest('a batch larger than one statement keeps per-item results', async (store) => {
        const known = Array.from({ length: 300 }, (_, i) => ingestItem(`evt_k${i}`, ['sub_a']));
        assert.equal((await store.ingest(known, T0)).filter((r) => r === 'created').length, 300);
        const batch = Array.from({ length: 1_100 }, (_, i) => (i % 4 === 0 ? known[i / 4] : ingestItem(`evt_n${i}`, ['sub_a', 'sub_b'])) as IngestItem);
        const results = await store.ingest(batch, T0 + 1);
        assert.equal(results.length, batch.length);
        results.forEach((r, i) => assert.equal(r, i % 4 === 0 ? 'duplicate' : 'created', `item ${i}`));
        const claimed = await store.claimDue({ owner: 'w', now: T0 + 1, leaseMs: LEASE, limit: 5_000, exclude: [] });
        assert.equal(claimed.length, 300 + 825 * 2);
        assert.equal(new Set(claimed.map((c) => c.id)).size, claimed.length);
      });
    });

    // ── 4. claimDue ─────────────────────────────────────────────────────────────────────────────────────────

    describe('claimDue', () => {
      stest('claims due pending deliveries as attempt 1', async (store) => {
        const [a, b] = await ingest(store, 'evt_1', ['sub_a', 'sub_b'], T0);
        assert.deepEqual(await claim(store, 'w1', T0 - 1), [], 'not due before the event was accepted');
        const claimed = await claim(store, 'w1', T0);
        assert.deepEqual(
          sorted(claimed.map((c) => JSON.stringify(c))),
          sorted([
            JSON.stringify({ id: a, eventId: 'evt_1', subscriberId: 'sub_a', attempt: 1 }),
            JSON.stringify({ id: b, eventId: 'evt_1', subscriberId: 'sub_b', attempt: 1 }),
          ]),
        );
      });

      stest('a leased delivery is not claimed again until the lease ends; then another owner gets attempt 1', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        await claimExactly(store, 'w1', T0, [a as string], 'first claim', 1_000);
        assert.deepEqual(await claim(store, 'w2', T0 + 1), [], 'leased');
        assert.deepEqual(await claim(store, 'w1', T0 + 999), [], 'leased, even for its holder');
        const again = await claimExactly(store, 'w2', T0 + 1_001, [a as string], 'after the lease');
        assert.equal(again[0]?.attempt, 1, 'no attempt was recorded, so it is still attempt 1');
        assert.deepEqual(await claim(store, 'w3', T0 + 1_002), [], 'leased by w2 now');
      });

      stest('exclude skips the listed subscribers', async (store) => {
        await ingest(store, 'evt_1', ['sub_a', 'sub_b', 'sub_c'], T0);
        const got = await claim(store, 'w1', T0, { exclude: ['sub_a', 'sub_c'] });
        assert.deepEqual(
          got.map((c) => c.subscriberId),
          ['sub_b'],
        );
        assert.deepEqual(sorted((await claim(store, 'w2', T0)).map((c) => c.subscriberId)), ['sub_a', 'sub_c'], 'the excluded ones stayed due');
      });

      stest('limit is honoured and no delivery is handed out twice', async (store) => {
        const all = await ingest(store, 'evt_1', ['s1', 's2', 's3', 's4', 's5'], T0);
        const seen: string[] = [];
        for (const expected of [2, 2, 1, 0]) {
          const got = await claim(store, 'w1', T0, { limit: 2 });
          assert.equal(got.length, expected);
          seen.push(...got.map((c) => c.id));
        }
        assert.deepEqual(sorted(seen), sorted(all));
      });

      stest('a retry is not claimed before its time', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [c] = await claimExactly(store, 'w1', T0, [a as string], 'first');
        await finish(store, 'w1', c as ClaimedDelivery, { status: 'retry', at: T0 + 5_000 }, T0 + 10);
        assert.deepEqual(await claim(store, 'w2', T0 + 4_999), []);
        const [again] = await claimExactly(store, 'w2', T0 + 5_000, [a as string], 'at its time');
        assert.equal(again?.attempt, 2);
      });

      stest('concurrent claims never hand out the same delivery twice', async (store) => {
        const subs = Array.from({ length: 40 }, (_, i) => `sub_${i}`);
        const all = await ingest(store, 'evt_1', subs, T0);
        const rounds = await Promise.all(['w1', 'w2', 'w3', 'w4'].map((w) => claim(store, w, T0, { limit: 15 })));
        const got = rounds.flat().map((c) => c.id);
        assert.equal(new Set(got).size, got.length, 'a delivery went to two owners');
        got.push(...(await claim(store, 'w5', T0)).map((c) => c.id));
        assert.deepEqual(sorted(got), sorted(all));
      });

      stest('concurrent claims still hand out one delivery per ordering key', async (store) => {
        for (let i = 0; i < 6; i++) await ingest(store, `evt_${i}`, ['sub_o'], T0 + i, 'k');
        const rounds = await Promise.all(['w1', 'w2', 'w3', 'w4'].map((w) => claim(store, w, T0 + 10)));
        assert.deepEqual(
          rounds.flat().map((c) => c.id),
          [deliveryIdFor('evt_0', 'sub_o')],
        );
      });
    });

    // ── 5. ordering ─────────────────────────────────────────────────────────────────────────────────────────

    describe('ordering', () => {
      stest('same key: one at a time in acceptance order; a retry blocks later ones until it ends', async (store) => {
        const [d1] = await ingest(store, 'evt_1', ['sub_o'], T0, 'acme/api');
        const [d2] = await ingest(store, 'evt_2', ['sub_o'], T0 + 1, 'acme/api');
        const [d3] = await ingest(store, 'evt_3', ['sub_o'], T0 + 2, 'acme/api');
        const [other] = await ingest(store, 'evt_4', ['sub_o'], T0 + 3, 'acme/web');
        const [free] = await ingest(store, 'evt_5', ['sub_o'], T0 + 4);

        const first = await claimExactly(store, 'w1', T0 + 10, [d1, other, free] as string[], 'head of each key and the unkeyed one');
        assert.deepEqual(await claim(store, 'w2', T0 + 11), [], 'e2 waits while e1 is in flight');
        await finish(store, 'w1', find(first, other as string), { status: 'delivered' }, T0 + 12);
        await finish(store, 'w1', find(first, free as string), { status: 'delivered' }, T0 + 12);
        assert.deepEqual(await claim(store, 'w2', T0 + 13), [], 'other keys finishing does not release e2');

        await finish(store, 'w1', find(first, d1 as string), { status: 'delivered' }, T0 + 20);
        const second = await claimExactly(store, 'w2', T0 + 21, [d2 as string], 'e2 after e1 was delivered');
        await finish(store, 'w2', find(second, d2 as string), { status: 'retry', at: T0 + 1_000 }, T0 + 22);
        assert.deepEqual(await claim(store, 'w3', T0 + 500), [], 'e3 waits behind e2’s retry');

        const third = await claimExactly(store, 'w3', T0 + 1_000, [d2 as string], 'e2 again at its retry time');
        assert.equal(third[0]?.attempt, 2);
        await finish(store, 'w3', find(third, d2 as string), { status: 'dead', reason: 'max_attempts' }, T0 + 1_001);
        await claimExactly(store, 'w3', T0 + 1_002, [d3 as string], 'e3 once e2 is dead');
      });

      stest('a retry that ends delivered releases the next delivery of its key', async (store) => {
        const [d1] = await ingest(store, 'evt_1', ['sub_o'], T0, 'k');
        const [d2] = await ingest(store, 'evt_2', ['sub_o'], T0 + 1, 'k');
        const [c1] = await claimExactly(store, 'w1', T0 + 2, [d1 as string], 'e1 first');
        await finish(store, 'w1', c1 as ClaimedDelivery, { status: 'retry', at: T0 + 100 }, T0 + 3);
        assert.deepEqual(await claim(store, 'w1', T0 + 50), []);
        const [c1b] = await claimExactly(store, 'w1', T0 + 100, [d1 as string], 'e1 retried');
        await finish(store, 'w1', c1b as ClaimedDelivery, { status: 'delivered' }, T0 + 101);
        await claimExactly(store, 'w1', T0 + 102, [d2 as string], 'e2 after e1');
      });

      stest('acceptance order holds within one ingest batch', async (store) => {
        const items = ['evt_b1', 'evt_b2', 'evt_b3'].map((e) => ingestItem(e, ['sub_o'], { orderingKey: 'k' }));
        assert.deepEqual(await store.ingest(items, T0), ['created', 'created', 'created']);
        for (const e of ['evt_b1', 'evt_b2', 'evt_b3']) {
          const [c] = await claimExactly(store, 'w1', T0 + 1, [deliveryIdFor(e, 'sub_o')], `${e} next`);
          await finish(store, 'w1', c as ClaimedDelivery, { status: 'delivered' }, T0 + 1);
        }
      });

      stest('a key orders one subscriber’s deliveries only', async (store) => {
        await ingest(store, 'evt_1', ['sub_x', 'sub_y'], T0, 'k');
        await ingest(store, 'evt_2', ['sub_x', 'sub_y'], T0 + 1, 'k');
        await claimExactly(store, 'w1', T0 + 2, [deliveryIdFor('evt_1', 'sub_x'), deliveryIdFor('evt_1', 'sub_y')], 'each subscriber’s head');
      });
    });

    // ── 6. complete ─────────────────────────────────────────────────────────────────────────────────────────

    describe('complete', () => {
      stest('delivered: final, one attempt logged', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [c] = await claimExactly(store, 'w1', T0, [a as string], 'claim');
        const record = attemptFor(c as ClaimedDelivery, 'delivered', T0 + 1);
        await store.complete('w1', [{ attempt: record, next: { status: 'delivered' } }], T0 + 20);
        const d = await mustGet(store, a as string);
        assert.equal(d.status, 'delivered');
        assert.equal(d.attempts, 1);
        assert.equal(d.cycle, 1);
        assert.equal(d.updatedAt, T0 + 20);
        assert.equal(d.lastCode, undefined);
        assert.deepEqual(plain(d.attemptLog), plain([record]));
        assert.deepEqual(await claim(store, 'w2', T0 + 365 * DAY), [], 'never claimed again');
        assert.equal(await letterOf(store, a as string), undefined);
      });

      stest('retry: pending at `at` with the last outcome; claimed from `at` as attempt 2', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [c] = await claimExactly(store, 'w1', T0, [a as string], 'claim');
        const record = attemptFor(c as ClaimedDelivery, 'retryable', T0 + 1);
        await store.complete('w1', [{ attempt: record, next: { status: 'retry', at: T0 + 5_000 } }], T0 + 20);
        const d = await mustGet(store, a as string);
        assert.equal(d.status, 'pending');
        assert.equal(d.attempts, 1);
        assert.equal(d.nextAttemptAt, T0 + 5_000);
        assert.equal(d.lastCode, 'http_5xx');
        assert.equal(d.lastStatus, 503);
        assert.deepEqual(plain(d.attemptLog), plain([record]));
        assert.deepEqual(await claim(store, 'w2', T0 + 4_999), []);
        const [again] = await claimExactly(store, 'w2', T0 + 5_000, [a as string], 'at `at`');
        assert.equal(again?.attempt, 2);
      });

      stest('dead: final, with a dead letter carrying reason, last outcome and attempts', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [c] = await claimExactly(store, 'w1', T0, [a as string], 'claim');
        await store.complete('w1', [{ attempt: attemptFor(c as ClaimedDelivery, 'permanent', T0 + 1), next: { status: 'dead', reason: 'rejected' } }], T0 + 20);
        const d = await mustGet(store, a as string);
        assert.equal(d.status, 'dead');
        assert.equal(d.attempts, 1);
        assert.equal(d.lastCode, 'http_4xx');
        assert.equal(d.lastStatus, 400);
        const letter = await letterOf(store, a as string);
        assert.ok(letter, 'a dead letter exists');
        assert.deepEqual(
          { ...letter, id: '' },
          {
            id: '',
            deliveryId: a,
            eventId: 'evt_1',
            subscriberId: 'sub_a',
            reason: 'rejected',
            lastCode: 'http_4xx',
            lastStatus: 400,
            attempts: 1,
            detail: undefined,
            createdAt: T0 + 20,
          },
        );
        assert.deepEqual(await store.getDeadLetter(letter.id), letter);
        assert.deepEqual(await claim(store, 'w2', T0 + 365 * DAY), [], 'never claimed again');
      });

      stest('several attempts: numbered in order, counted on the dead letter', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        let now = T0;
        for (let i = 1; i <= 3; i++) {
          const [c] = await claimExactly(store, 'w1', now, [a as string], `attempt ${i}`);
          assert.equal(c?.attempt, i);
          await finish(store, 'w1', c as ClaimedDelivery, i < 3 ? { status: 'retry', at: now + 1_000 } : { status: 'dead', reason: 'max_attempts' }, now + 10);
          now += 1_000;
        }
        const d = await mustGet(store, a as string);
        assert.equal(d.attempts, 3);
        assert.deepEqual(
          d.attemptLog.map((x) => x.attempt),
          [1, 2, 3],
        );
        const letter = await letterOf(store, a as string);
        assert.equal(letter?.reason, 'max_attempts');
        assert.equal(letter?.attempts, 3);
      });

      stest('one call completes a mixed batch', async (store) => {
        const [a, b, c] = await ingest(store, 'evt_1', ['sub_a', 'sub_b', 'sub_c'], T0);
        const claimed = await claim(store, 'w1', T0);
        await store.complete(
          'w1',
          [
            { attempt: attemptFor(find(claimed, a as string), 'delivered', T0), next: { status: 'delivered' } },
            { attempt: attemptFor(find(claimed, b as string), 'retryable', T0), next: { status: 'retry', at: T0 + 60_000 } },
            { attempt: attemptFor(find(claimed, c as string), 'permanent', T0), next: { status: 'dead', reason: 'endpoint_gone' } },
          ],
          T0 + 5,
        );
        assert.equal((await mustGet(store, a as string)).status, 'delivered');
        const rb = await mustGet(store, b as string);
        assert.equal(rb.status, 'pending');
        assert.equal(rb.nextAttemptAt, T0 + 60_000);
        assert.equal((await mustGet(store, c as string)).status, 'dead');
        assert.equal((await letterOf(store, c as string))?.reason, 'endpoint_gone');
        for (const id of [a, b, c]) assert.equal((await mustGet(store, id as string)).attemptLog.length, 1, `attempt of ${id}`);
      });

      stest('an owner whose lease was taken over cannot change the delivery (the new holder’s result wins)', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [stale] = await claimExactly(store, 'w1', T0, [a as string], 'w1', 1_000);
        const [fresh] = await claimExactly(store, 'w2', T0 + 1_001, [a as string], 'w2 after the lease', 1_000);

        await finish(store, 'w1', stale as ClaimedDelivery, { status: 'delivered' }, T0 + 1_500);
        let d = await mustGet(store, a as string);
        assert.equal(d.status, 'pending', 'w1’s late "delivered" is ignored');
        assert.equal(d.attempts, 0);
        assert.deepEqual(await claim(store, 'w3', T0 + 1_600), [], 'still leased by w2');

        await finish(store, 'w2', fresh as ClaimedDelivery, { status: 'retry', at: T0 + 90_000 }, T0 + 1_700);
        d = await mustGet(store, a as string);
        assert.equal(d.status, 'pending');
        assert.equal(d.attempts, 1);
        assert.equal(d.nextAttemptAt, T0 + 90_000);
        assert.equal(d.lastCode, 'http_5xx');

        // And the other way round: the holder finishes first, the stale owner's "dead" comes late.
        const [b] = await ingest(store, 'evt_2', ['sub_b'], T0 + 10_000);
        const [stale2] = await claimExactly(store, 'w1', T0 + 10_000, [b as string], 'w1 again', 1_000);
        const [fresh2] = await claimExactly(store, 'w2', T0 + 11_001, [b as string], 'w2 again', 1_000);
        await finish(store, 'w2', fresh2 as ClaimedDelivery, { status: 'delivered' }, T0 + 11_100);
        await finish(store, 'w1', stale2 as ClaimedDelivery, { status: 'dead', reason: 'rejected' }, T0 + 11_200);
        const db = await mustGet(store, b as string);
        assert.equal(db.status, 'delivered');
        assert.equal(db.attempts, 1);
        assert.equal(await letterOf(store, b as string), undefined, 'no dead letter from the stale owner');
      });

      stest('an entry from an owner that lost its lease is skipped entirely: its attempt is not logged', async (store) => {
        // port.ts: "entries whose lease `owner` no longer holds are skipped" — the attempt log then agrees with the
        // delivery's attempt count and never holds two "attempt 1" rows.
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [stale] = await claimExactly(store, 'w1', T0, [a as string], 'w1', 1_000);
        const [fresh] = await claimExactly(store, 'w2', T0 + 1_001, [a as string], 'w2', 1_000);
        await finish(store, 'w1', stale as ClaimedDelivery, { status: 'delivered' }, T0 + 1_500);
        await finish(store, 'w2', fresh as ClaimedDelivery, { status: 'delivered' }, T0 + 1_600);
        const d = await mustGet(store, a as string);
        assert.equal(d.attempts, 1);
        assert.deepEqual(
          d.attemptLog.map((x) => [x.attempt, x.startedAt]),
          [[1, T0 + 1_600 - 12]],
          'only the holder’s attempt is logged',
        );
      });
    });

    // ── 7. release ──────────────────────────────────────────────────────────────────────────────────────────

    describe('release', () => {
      stest('gives a delivery back at the given time without spending an attempt', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [c] = await claimExactly(store, 'w1', T0, [a as string], 'claim');
        await store.release('w1', [a as string], T0 + 500);
        const d = await mustGet(store, a as string);
        assert.equal(d.status, 'pending');
        assert.equal(d.attempts, 0);
        assert.equal(d.nextAttemptAt, T0 + 500);
        assert.deepEqual(await claim(store, 'w2', T0 + 499), []);
        const [again] = await claimExactly(store, 'w2', T0 + 500, [a as string], 'at the release time');
        assert.equal(again?.attempt, c?.attempt);

        // Mid-cycle too: attempt 2 released is attempt 2 again.
        await finish(store, 'w2', again as ClaimedDelivery, { status: 'retry', at: T0 + 1_000 }, T0 + 501);
        const [second] = await claimExactly(store, 'w3', T0 + 1_000, [a as string], 'attempt 2');
        assert.equal(second?.attempt, 2);
        await store.release('w3', [a as string], T0 + 1_001);
        const [still] = await claimExactly(store, 'w4', T0 + 1_001, [a as string], 'after release');
        assert.equal(still?.attempt, 2);
      });

      stest('only the lease holder can release', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        await claimExactly(store, 'w1', T0, [a as string], 'claim');
        await store.release('w2', [a as string], T0 + 1);
        assert.deepEqual(await claim(store, 'w3', T0 + 2), [], 'still leased by w1');
      });
    });

    // ── 8. deferSubscriber ──────────────────────────────────────────────────────────────────────────────────

    describe('deferSubscriber', () => {
      stest('pushes the pending deliveries of one subscriber, in flight ones included, and nothing else', async (store) => {
        const [d1] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [d2] = await ingest(store, 'evt_2', ['sub_a'], T0);
        const [d3] = await ingest(store, 'evt_3', ['sub_a'], T0);
        const [d4] = await ingest(store, 'evt_4', ['sub_a'], T0);
        const [d5] = await ingest(store, 'evt_5', ['sub_b'], T0);
        const claimed = await claim(store, 'w1', T0, { leaseMs: 1_000 });
        await finish(store, 'w1', find(claimed, d2 as string), { status: 'retry', at: T0 + 100 }, T0);
        await finish(store, 'w1', find(claimed, d4 as string), { status: 'retry', at: T0 + 99_999 }, T0);
        await store.release('w1', [d1, d5] as string[], T0);
        // d3 stays in flight with w1 until T0 + 1 000.

        assert.equal(await store.deferSubscriber('sub_a', T0 + 10_000), 3, 'd1, d2 and the in-flight d3 (should its holder die) moved');
        await claimExactly(store, 'w2', T0 + 1, [d5 as string], 'the other subscriber is unaffected');
        await finish(store, 'w1', find(claimed, d3 as string), { status: 'delivered' }, T0 + 2);
        assert.equal((await mustGet(store, d3 as string)).status, 'delivered', 'the in-flight delivery’s holder still completes it');
        assert.deepEqual(await claim(store, 'w2', T0 + 9_999), []);
        await claimExactly(store, 'w2', T0 + 10_000, [d1, d2] as string[], 'due again at `until`');
        assert.equal((await mustGet(store, d4 as string)).nextAttemptAt, T0 + 99_999, 'a later retry is not pulled earlier');
        assert.equal(await store.deferSubscriber('sub_none', T0 + 10_000), 0);
      });
    });

    // ── 9. requeue ──────────────────────────────────────────────────────────────────────────────────────────

    describe('requeue', () => {
      stest('a delivered delivery is pending again: same id, a new cycle, attempts reset', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [c] = await claim(store, 'w1', T0);
        await finish(store, 'w1', c as ClaimedDelivery, { status: 'delivered' }, T0 + 1);
        assert.equal(await store.requeue([a as string, 'msg_unknown'], T0 + 100), 1);
        const d = await mustGet(store, a as string);
        assert.equal(d.status, 'pending');
        assert.equal(d.cycle, 2);
        assert.equal(d.attempts, 0);
        assert.equal(d.nextAttemptAt, T0 + 100);
        assert.deepEqual(await claim(store, 'w1', T0 + 99), []);
        const [again] = await claimExactly(store, 'w1', T0 + 100, [a as string], 'requeued');
        assert.equal(again?.attempt, 1);
      });

      stest('a dead delivery is pending again and its dead letter is gone', async (store) => {
        const a = await deadDelivery(store, 'evt_1', 'sub_a', 'max_attempts', T0);
        assert.ok(await letterOf(store, a));
        assert.equal(await store.requeue([a], T0 + 100), 1);
        const d = await mustGet(store, a);
        assert.equal(d.status, 'pending');
        assert.equal(d.cycle, 2);
        assert.equal(d.attempts, 0);
        assert.equal(await letterOf(store, a), undefined);
        const [again] = await claimExactly(store, 'w1', T0 + 100, [a], 'requeued');
        assert.equal(again?.attempt, 1);
      });

      stest('a delivery in flight stays with its holder', async (store) => {
        const [a] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [c] = await claim(store, 'w1', T0);
        assert.equal(await store.requeue([a as string], T0 + 1), 0);
        assert.deepEqual(await claim(store, 'w2', T0 + 2), [], 'not handed to a second worker');
        await finish(store, 'w1', c as ClaimedDelivery, { status: 'delivered' }, T0 + 3);
        assert.equal((await mustGet(store, a as string)).status, 'delivered');
        assert.equal(await store.requeue([], T0 + 4), 0);
      });
    });

    // ── 10. dead letters ────────────────────────────────────────────────────────────────────────────────────

    describe('dead letters', () => {
      stest('list filters by subscriber, event, reason and time', async (store) => {
        const [a1, b1] = await ingest(store, 'evt_1', ['sub_a', 'sub_b'], T0);
        const claimed = await claim(store, 'w1', T0);
        await finish(store, 'w1', find(claimed, a1 as string), { status: 'dead', reason: 'rejected' }, T0 + 100);
        await finish(store, 'w1', find(claimed, b1 as string), { status: 'dead', reason: 'max_attempts' }, T0 + 200);
        const a2 = await deadDelivery(store, 'evt_2', 'sub_a', 'endpoint_gone', T0 + 300);
        await store.recordPoison('not an envelope', T0 + 400);

        const L1 = a1 as string;
        const L2 = b1 as string;
        const L3 = a2;
        const P = 'poison';
        const keyOf = (l: DeadLetter) => (l.deliveryId === undefined ? P : l.deliveryId);
        const expect = async (filter: DeadLetterFilter, expected: string[]) =>
          assert.deepEqual(sorted((await allLetters(store, filter)).map(keyOf)), sorted(expected), JSON.stringify(filter));

        await expect({}, [L1, L2, L3, P]);
        await expect({ subscriber: 'sub_a' }, [L1, L3]);
        await expect({ event: 'evt_1' }, [L1, L2]);
        await expect({ reason: 'max_attempts' }, [L2]);
        await expect({ reason: 'poison' }, [P]);
        await expect({ since: T0 + 150 }, [L2, L3, P]);
        await expect({ until: T0 + 250 }, [L1, L2]);
        await expect({ since: T0 + 150, until: T0 + 350 }, [L2, L3]);
        await expect({ subscriber: 'sub_a', event: 'evt_1' }, [L1]);
        await expect({ subscriber: 'sub_a', reason: 'max_attempts' }, []);
        await expect({ subscriber: undefined, event: undefined, reason: undefined, since: undefined, until: undefined }, [L1, L2, L3, P]);
      });

      stest('list pages through a cursor, with and without a filter', async (store) => {
        for (let i = 0; i < 5; i++) await store.recordPoison(`poison ${i}`, T0 + i);
        const rejected: string[] = [];
        for (let i = 0; i < 4; i++) rejected.push(await deadDelivery(store, `evt_${i}`, 'sub_a', 'rejected', T0 + 10 + i));

        const walk = async (filter: DeadLetterFilter, limit: number) => {
          const pages: DeadLetter[][] = [];
          let cursor: string | undefined;
          do {
            const page = await store.listDeadLetters(filter, { limit, cursor });
            pages.push(page.items);
            cursor = page.nextCursor;
            assert.ok(pages.length <= 10, 'paging never ends');
          } while (cursor);
          const all = pages.flat();
          assert.equal(new Set(all.map((l) => l.id)).size, all.length, 'no letter twice');
          return { pages, all };
        };

        const everything = await walk({}, 4);
        assert.deepEqual(
          everything.pages.map((p) => p.length),
          [4, 4, 1],
        );
        const filtered = await walk({ reason: 'rejected' }, 3);
        assert.deepEqual(
          filtered.pages.map((p) => p.length),
          [3, 1],
        );
        assert.deepEqual(sorted(filtered.all.map((l) => l.deliveryId as string)), sorted(rejected));
      });

      stest('getDeadLetter returns what list returns; unknown ids are undefined', async (store) => {
        const a = await deadDelivery(store, 'evt_1', 'sub_a', 'ssrf_blocked', T0);
        const letter = await letterOf(store, a);
        assert.ok(letter);
        assert.deepEqual(await store.getDeadLetter(letter.id), letter);
        assert.equal(await store.getDeadLetter('dlq_unknown'), undefined);
      });

      stest('replay: the same delivery id, pending in a new cycle, the letter gone', async (store) => {
        const a = await deadDelivery(store, 'evt_1', 'sub_a', 'max_attempts', T0);
        const letter = await letterOf(store, a);
        assert.ok(letter);
        assert.equal(await store.replayDeadLetters([letter.id], T0 + 1_000), 1);
        assert.equal(await store.getDeadLetter(letter.id), undefined);
        const d = await mustGet(store, a);
        assert.equal(d.status, 'pending');
        assert.equal(d.cycle, 2);
        assert.equal(d.attempts, 0);
        const [again] = await claimExactly(store, 'w1', T0 + 1_000, [a], 'replayed');
        assert.equal(again?.attempt, 1);
        assert.equal(again?.eventId, 'evt_1');
        assert.equal(again?.subscriberId, 'sub_a');

        // Dead again in the new cycle: one letter, describing the new cycle.
        await finish(store, 'w1', again as ClaimedDelivery, { status: 'dead', reason: 'endpoint_gone' }, T0 + 1_001);
        const letters = (await allLetters(store)).filter((l) => l.deliveryId === a);
        assert.equal(letters.length, 1);
        assert.equal(letters[0]?.reason, 'endpoint_gone');
        assert.equal(letters[0]?.attempts, 1);
        assert.equal(letters[0]?.createdAt, T0 + 1_001);
      });

      stest('replay to another subscriber creates that subscriber’s own delivery', async (store) => {
        await store.createSubscriber(newSubscriber('sub_a'), T0);
        await store.createSubscriber(newSubscriber('sub_c'), T0);
        const a = await deadDelivery(store, 'evt_1', 'sub_a', 'endpoint_gone', T0);
        const letter = await letterOf(store, a);
        assert.ok(letter);
        assert.equal(await store.replayDeadLetters([letter.id], T0 + 1_000, { toSubscriber: 'sub_c' }), 1);
        const target = deliveryIdFor('evt_1', 'sub_c');
        assert.notEqual(target, a);
        const d = await mustGet(store, target);
        assert.equal(d.status, 'pending');
        assert.equal(d.subscriberId, 'sub_c');
        assert.equal(d.eventId, 'evt_1');
        const [c] = await claimExactly(store, 'w1', T0 + 1_000, [target], 'only the new delivery is due');
        assert.equal(c?.attempt, 1);
        assert.equal(await store.getDeadLetter(letter.id), undefined, 'the letter was consumed');
        assert.equal((await mustGet(store, a)).status, 'dead', 'the original delivery is not replayed');
      });

      stest('purge removes letters and leaves their deliveries dead', async (store) => {
        const a = await deadDelivery(store, 'evt_1', 'sub_a', 'rejected', T0);
        const b = await deadDelivery(store, 'evt_2', 'sub_a', 'rejected', T0 + 1);
        const c = await deadDelivery(store, 'evt_3', 'sub_a', 'rejected', T0 + 2);
        const la = await letterOf(store, a);
        const lb = await letterOf(store, b);
        assert.ok(la && lb);
        assert.equal(await store.purgeDeadLetters([la.id, lb.id, 'dlq_unknown']), 2);
        assert.equal(await store.purgeDeadLetters([]), 0);
        assert.deepEqual(
          (await allLetters(store)).map((l) => l.deliveryId),
          [c],
        );
        assert.equal((await mustGet(store, a)).status, 'dead');
        assert.deepEqual(await claim(store, 'w1', T0 + DAY), []);
      });

      stest('poison: recorded with reason poison and no delivery; replay skips it', async (store) => {
        await store.recordPoison('envelope metadata is not JSON', T0 + 5);
        const [poison] = await allLetters(store, { reason: 'poison' });
        assert.ok(poison);
        assert.deepEqual(
          { ...poison, id: '' },
          {
            id: '',
            deliveryId: undefined,
            eventId: undefined,
            subscriberId: undefined,
            reason: 'poison',
            lastCode: undefined,
            lastStatus: undefined,
            attempts: 0,
            detail: 'envelope metadata is not JSON',
            createdAt: T0 + 5,
          },
        );
        assert.deepEqual(await store.getDeadLetter(poison.id), poison);

        const a = await deadDelivery(store, 'evt_1', 'sub_a', 'rejected', T0 + 10);
        const letter = await letterOf(store, a);
        assert.ok(letter);
        assert.equal(await store.replayDeadLetters([poison.id, letter.id], T0 + 20), 1, 'only the real one');
        assert.equal(await store.replayDeadLetters([poison.id], T0 + 20, { toSubscriber: 'sub_b' }), 0);
        assert.deepEqual(await store.getDeadLetter(poison.id), poison, 'the poison letter stays');
        assert.equal(await store.purgeDeadLetters([poison.id]), 1);
        assert.deepEqual(await allLetters(store), []);
      });
    });

    // ── 11. deleteSubscriber ────────────────────────────────────────────────────────────────────────────────

    describe('deadLetterPending', () => {
      stest('dead-letters the idle pending deliveries of one subscriber; one in flight stays with its holder', async (store) => {
        const [idle] = await ingest(store, 'evt_1', ['sub_a'], T0);
        const [held] = await ingest(store, 'evt_2', ['sub_a'], T0);
        const [other] = await ingest(store, 'evt_3', ['sub_b'], T0);
        const claimed = await claim(store, 'w1', T0, { leaseMs: 10_000 });
        await store.release('w1', [idle, other] as string[], T0 + 1);
        assert.ok(find(claimed, held as string));

        assert.equal(await store.deadLetterPending('sub_a', 'subscriber_disabled', T0 + 5), 1);
        assert.equal((await mustGet(store, idle as string)).status, 'dead');
        assert.equal((await letterOf(store, idle as string))?.reason, 'subscriber_disabled');
        assert.equal((await mustGet(store, held as string)).status, 'pending', 'the holder finishes it');
        assert.equal((await mustGet(store, other as string)).status, 'pending', 'other subscribers are untouched');
        // Once the holder's lease has run out, it is idle too.
        assert.equal(await store.deadLetterPending('sub_a', 'subscriber_disabled', T0 + 20_000), 1);
        assert.equal((await mustGet(store, held as string)).status, 'dead');
      });
    });

    describe('deleteSubscriber', () => {
      stest('dead-letters pending deliveries as subscriber_deleted and leaves finished ones alone', async (store) => {
        await store.createSubscriber(newSubscriber('sub_d'), T0);
        await store.createSubscriber(newSubscriber('sub_keep'), T0);
        const [pending] = await ingest(store, 'evt_1', ['sub_d'], T0);
        const [retrying] = await ingest(store, 'evt_2', ['sub_d'], T0);
        const [delivered] = await ingest(store, 'evt_3', ['sub_d'], T0);
        const [keep] = await ingest(store, 'evt_4', ['sub_keep'], T0);
        const claimed = await claim(store, 'w1', T0);
        await finish(store, 'w1', find(claimed, retrying as string), { status: 'retry', at: T0 + 60_000 }, T0 + 1);
        await finish(store, 'w1', find(claimed, delivered as string), { status: 'delivered' }, T0 + 1);
        await store.release('w1', [pending, keep] as string[], T0 + 1);
        const rejected = await deadDelivery(store, 'evt_5', 'sub_d', 'rejected', T0 + 2);

        assert.equal(await store.deleteSubscriber('sub_d', T0 + 10), true);

        for (const [id, attempts] of [
          [pending, 0],
          [retrying, 1],
        ] as const) {
          assert.equal((await mustGet(store, id as string)).status, 'dead', `${id} is dead`);
          const letter = await letterOf(store, id as string);
          assert.equal(letter?.reason, 'subscriber_deleted');
          assert.equal(letter?.subscriberId, 'sub_d');
          assert.equal(letter?.attempts, attempts);
          assert.equal(letter?.createdAt, T0 + 10);
        }
        assert.equal((await mustGet(store, delivered as string)).status, 'delivered');
        assert.equal(await letterOf(store, delivered as string), undefined);
        assert.equal((await letterOf(store, rejected))?.reason, 'rejected', 'an earlier dead letter keeps its reason');
        assert.equal((await mustGet(store, keep as string)).status, 'pending', 'other subscribers are untouched');
        await claimExactly(store, 'w2', T0 + DAY, [keep as string], 'nothing of sub_d is claimable');
      });
    });

    // ── 12. sweep ───────────────────────────────────────────────────────────────────────────────────────────

    describe('sweep', () => {
      stest('removes what retention lets go and keeps everything still in use', async (store) => {
        const retention = { eventsDays: 30, dlqDays: 14, dedupeDays: 7 };
        const NOW = T0 + 60 * DAY;

        // Old (at T0): one delivered, one pending, one dead; a poison letter.
        const [oldDone] = await ingest(store, 'evt_old', ['sub_a'], T0);
        const [oldPending] = await ingest(store, 'evt_pending', ['sub_b'], T0);
        const claimed = await claim(store, 'w1', T0);
        await finish(store, 'w1', find(claimed, oldDone as string), { status: 'delivered' }, T0);
        await finish(store, 'w1', find(claimed, oldPending as string), { status: 'retry', at: NOW + DAY }, T0);
        const oldDead = await deadDelivery(store, 'evt_dead', 'sub_a', 'rejected', T0);
        await store.recordPoison('old poison', T0);

        // Recent (a day before NOW): one delivered, one dead.
        const recent = NOW - DAY;
        const [newDone] = await ingest(store, 'evt_recent', ['sub_a'], recent);
        const [c] = await claim(store, 'w2', recent);
        await finish(store, 'w2', c as ClaimedDelivery, { status: 'delivered' }, recent);
        const newDead = await deadDelivery(store, 'evt_recent_dead', 'sub_a', 'rejected', recent);

        const result = await store.sweep(NOW, retention);
        assert.deepEqual({ ...result }, { events: 2, deliveries: 2, deadLetters: 2 });

        assert.deepEqual(
          sorted((await store.loadEvents(['evt_old', 'evt_pending', 'evt_dead', 'evt_recent', 'evt_recent_dead'])).map((e) => e.id)),
          ['evt_pending', 'evt_recent', 'evt_recent_dead'],
        );
        assert.equal(await store.getDelivery(oldDone as string), undefined, 'old delivered delivery and its attempts are gone');
        assert.equal(await store.getDelivery(oldDead), undefined, 'old dead delivery is gone');
        const pending = await mustGet(store, oldPending as string);
        assert.equal(pending.status, 'pending', 'a pending delivery is never swept');
        assert.equal(pending.attemptLog.length, 1, 'nor its attempts');
        const kept = await mustGet(store, newDone as string);
        assert.equal(kept.attemptLog.length, 1, 'recent attempts stay');
        assert.deepEqual(
          (await allLetters(store)).map((l) => l.deliveryId),
          [newDead],
        );

        assert.deepEqual({ ...(await store.sweep(NOW, retention)) }, { events: 0, deliveries: 0, deadLetters: 0 }, 'a second sweep finds nothing');

        // Dedupe after the sweep: a kept event is still known; a swept one whose key expired is new again.
        assert.deepEqual(await store.ingest([ingestItem('evt_pending', ['sub_b'])], NOW), ['duplicate']);
        assert.deepEqual(await store.ingest([ingestItem('evt_recent', ['sub_a'])], NOW), ['duplicate']);
        assert.deepEqual(await store.ingest([ingestItem('evt_old', ['sub_a'])], NOW), ['created']);
        await claimExactly(store, 'w3', NOW + DAY, [oldPending, oldDone] as string[], 'the kept retry and the re-accepted event');
      });

      stest('events kept for less time than dedupe keys: a finished event stays, and dedupes, until its key expires', async (store) => {
        const retention = { eventsDays: 1, dlqDays: 14, dedupeDays: 7 };
        const [done] = await ingest(store, 'evt_short', ['sub_a'], T0);
        const [c] = await claim(store, 'w1', T0);
        await finish(store, 'w1', c as ClaimedDelivery, { status: 'delivered' }, T0);

        // Day 3: past events retention, within the dedupe window. The delivery goes; the event (its key) stays.
        assert.deepEqual({ ...(await store.sweep(T0 + 3 * DAY, retention)) }, { events: 0, deliveries: 1, deadLetters: 0 });
        assert.equal(await store.getDelivery(done as string), undefined);
        assert.deepEqual(await store.ingest([ingestItem('evt_short', ['sub_a'])], T0 + 3 * DAY), ['duplicate'], 'a repeat within the window');

        // Day 8: the key has expired, so the event goes, and the same webhook is new again.
        assert.deepEqual({ ...(await store.sweep(T0 + 8 * DAY, retention)) }, { events: 1, deliveries: 0, deadLetters: 0 });
        assert.deepEqual(await store.ingest([ingestItem('evt_short', ['sub_a'])], T0 + 8 * DAY), ['created']);
      });

      stest('a dead letter kept by DLQ retention stays replayable when events are kept for less time', async (store) => {
        // Retention is configurable: an operator may keep dead letters longer than events. A letter the sweep keeps
        // must still be replayable, so its delivery and event stay with it.
        const a = await deadDelivery(store, 'evt_1', 'sub_a', 'max_attempts', T0);
        const NOW = T0 + 10 * DAY;
        const result = await store.sweep(NOW, { eventsDays: 7, dlqDays: 30, dedupeDays: 7 });
        assert.equal(result.deadLetters, 0);
        const letter = await letterOf(store, a);
        assert.ok(letter, 'the letter is within DLQ retention');
        assert.ok(await store.getDelivery(a), 'the letter’s delivery is kept');
        assert.equal((await store.loadEvents(['evt_1'])).length, 1, 'the letter’s event is kept');
        assert.equal(await store.replayDeadLetters([letter.id], NOW), 1);
        await claimExactly(store, 'w1', NOW, [a], 'replayed after the sweep');
      });
    });
  });
}
