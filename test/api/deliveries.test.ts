/**
 * /v1/deliveries, /v1/dlq and /v1/events through real HTTP, once per store harness. Traffic is seeded through the
 * store port as the worker writes it: one delivered delivery (with an attempt whose response snippet must stay
 * hidden), one dead-lettered, one pending.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { deliveryIdFor } from '../../adapters/store/ids.ts';
import type { EventRecord } from '../../adapters/store/port.ts';
import { type Reply, type Seeded, type StoreHarness, type TestApi, seedTraffic, startApi, storeHarnesses, subscriberBody, tokens } from './harness.ts';

function assertError(r: Reply, httpStatus: number, code: string): void {
  assert.equal(r.status, httpStatus, `expected ${httpStatus} ${code}, got ${r.status}: ${r.text}`);
  assert.equal(r.json?.error?.code, code, r.text);
}

for (const harness of storeHarnesses) suite(harness);

function suite(harness: StoreHarness): void {
  describe(`deliveries, DLQ and events API (${harness.name})`, () => {
    let t: TestApi;
    let subscriberId: string;
    let seeded: Seeded;
    before(async () => {
      t = await startApi(harness);
      subscriberId = (await t.call('POST', '/v1/subscribers', { body: subscriberBody('https://hooks.example.com/a') })).json.id;
      seeded = await seedTraffic(t.store, subscriberId);
    });
    after(() => t.close());

    /** A fresh subscriber with its own three deliveries, for tests that change state. */
    async function fresh(): Promise<{ subscriberId: string; seeded: Seeded }> {
      const id = (await t.call('POST', '/v1/subscribers', { body: subscriberBody('https://hooks.example.com/b') })).json.id;
      return { subscriberId: id, seeded: await seedTraffic(t.store, id) };
    }

    test('list deliveries newest first, filtered by subscriber, status and event', async () => {
      const all = await t.call('GET', `/v1/deliveries?subscriber=${subscriberId}`, { token: tokens.deliveriesRead });
      assert.equal(all.status, 200, all.text);
      assert.deepEqual(
        all.json.items.map((d: { id: string }) => d.id),
        [seeded.pending, seeded.dead, seeded.delivered],
      );
      const byStatus = (s: string) => t.call('GET', `/v1/deliveries?subscriber=${subscriberId}&status=${s}`);
      assert.deepEqual((await byStatus('dead')).json.items.map((d: { id: string }) => d.id), [seeded.dead]);
      assert.deepEqual((await byStatus('delivered')).json.items.map((d: { id: string }) => d.id), [seeded.delivered]);
      const pending = (await byStatus('pending')).json.items[0];
      assert.equal(pending.id, seeded.pending);
      assert.equal(typeof pending.nextAttemptAt, 'string');
      const event = seeded.events[1]?.id as string;
      assert.deepEqual((await t.call('GET', `/v1/deliveries?event=${event}`)).json.items.map((d: { id: string }) => d.id), [seeded.dead]);
      assert.equal((await t.call('GET', `/v1/deliveries?subscriber=${subscriberId}&since=1h`)).json.items.length, 3);
      assert.equal((await t.call('GET', `/v1/deliveries?subscriber=${subscriberId}&until=2000-01-01`)).json.items.length, 0);
      assertError(await t.call('GET', '/v1/deliveries?status=lost'), 400, 'ROUTER_ERR_BAD_REQUEST');
      assertError(await t.call('GET', '/v1/deliveries?since=yesterday'), 400, 'ROUTER_ERR_BAD_REQUEST');
      assertError(await t.call('GET', '/v1/deliveries', { token: tokens.subscribersRead }), 403, 'ROUTER_ERR_FORBIDDEN');
    });

    test('delivery pages are stable while new deliveries arrive', async () => {
      const { subscriberId: sub } = await fresh();
      const first = await t.call('GET', `/v1/deliveries?subscriber=${sub}&limit=2`);
      assert.equal(first.json.items.length, 2);
      assert.ok(first.json.nextCursor);
      await seedTraffic(t.store, sub); // three newer deliveries land before the next page is read
      const second = await t.call('GET', `/v1/deliveries?subscriber=${sub}&limit=2&cursor=${first.json.nextCursor}`);
      assert.equal(second.json.items.length, 1);
      assert.equal(second.json.nextCursor, null);
      const ids = [...first.json.items, ...second.json.items].map((d: { id: string }) => d.id);
      assert.equal(new Set(ids).size, 3);
    });

    test('a delivery with its attempts; response snippets only on ?include=response', async () => {
      const r = await t.call('GET', `/v1/deliveries/${seeded.delivered}`, { token: tokens.deliveriesRead });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.status, 'delivered');
      assert.equal(r.json.attemptLog.length, 1);
      assert.deepEqual(Object.keys(r.json.attemptLog[0]).sort(), ['attempt', 'code', 'durationMs', 'outcome', 'startedAt', 'status']);
      assert.ok(!r.text.includes('internal snippet'), 'attempt responses are not reflected by default');
      const withResponse = await t.call('GET', `/v1/deliveries/${seeded.delivered}?include=response`, { token: tokens.deliveriesRead });
      assert.equal(withResponse.json.attemptLog[0].response, `internal snippet of ${seeded.delivered}`);
      const dead = await t.call('GET', `/v1/deliveries/${seeded.dead}`);
      assert.deepEqual({ status: dead.json.status, lastCode: dead.json.lastCode, lastStatus: dead.json.lastStatus }, { status: 'dead', lastCode: 'http_4xx', lastStatus: 400 });
      assertError(await t.call('GET', '/v1/deliveries/msg_nope'), 404, 'ROUTER_ERR_NOT_FOUND');
      assertError(await t.call('GET', `/v1/deliveries/${seeded.delivered}?include=everything`), 400, 'ROUTER_ERR_BAD_REQUEST');
    });

    test('retry: a finished delivery goes back to pending with the same id; in-flight and orphaned ones are 409', async () => {
      const { subscriberId: sub, seeded: s } = await fresh();
      assertError(await t.call('POST', `/v1/deliveries/${s.delivered}/retry`, { token: tokens.deliveriesRead }), 403, 'ROUTER_ERR_FORBIDDEN');
      const r = await t.call('POST', `/v1/deliveries/${s.delivered}/retry`, { token: tokens.dlqWrite });
      assert.equal(r.status, 202, r.text);
      assert.deepEqual(r.json, { id: s.delivered, status: 'pending' });
      const after = await t.call('GET', `/v1/deliveries/${s.delivered}`);
      assert.equal(after.json.status, 'pending');
      assert.equal(after.json.cycle, 2);

      const dead = await t.call('POST', `/v1/deliveries/${s.dead}/retry`);
      assert.equal(dead.status, 202);
      const letters = await t.call('GET', `/v1/dlq?subscriber=${sub}`);
      assert.equal(letters.json.items.length, 0, 'retrying a dead delivery takes it out of the DLQ');

      const claimed = await t.store.claimDue({ owner: 'other-worker', now: Date.now() + 7_200_000, leaseMs: 60_000, limit: 100, exclude: [] });
      const inFlight = claimed.find((c) => c.subscriberId === sub);
      assert.ok(inFlight, 'something of this subscriber is due');
      assertError(await t.call('POST', `/v1/deliveries/${inFlight.id}/retry`), 409, 'ROUTER_ERR_CONFLICT');
      await t.store.release('other-worker', claimed.map((c) => c.id), Date.now());

      await t.call('DELETE', `/v1/subscribers/${sub}`);
      assertError(await t.call('POST', `/v1/deliveries/${s.delivered}/retry`), 409, 'ROUTER_ERR_CONFLICT');
      assertError(await t.call('POST', '/v1/deliveries/msg_nope/retry'), 404, 'ROUTER_ERR_NOT_FOUND');
    });

    test('DLQ list with filters; poison entries are listed too', async () => {
      await t.store.recordPoison('undecodable bytes', Date.now());
      const mine = await t.call('GET', `/v1/dlq?subscriber=${subscriberId}`, { token: tokens.deliveriesRead });
      assert.equal(mine.status, 200, mine.text);
      assert.equal(mine.json.items.length, 1);
      assert.deepEqual(
        { deliveryId: mine.json.items[0].deliveryId, reason: mine.json.items[0].reason, attempts: mine.json.items[0].attempts },
        { deliveryId: seeded.dead, reason: 'rejected', attempts: 1 },
      );
      const poison = await t.call('GET', '/v1/dlq?reason=poison');
      assert.ok(poison.json.items.some((l: { deliveryId: string | null }) => l.deliveryId === null));
      assert.equal((await t.call('GET', '/v1/dlq?reason=max_attempts')).json.items.filter((l: { subscriberId: string }) => l.subscriberId === subscriberId).length, 0);
      assertError(await t.call('GET', '/v1/dlq?reason=whatever'), 400, 'ROUTER_ERR_BAD_REQUEST');
      assertError(await t.call('GET', '/v1/dlq', { token: tokens.dlqWrite }), 403, 'ROUTER_ERR_FORBIDDEN');
    });

    test('DLQ replay: dry run, then a new cycle with the same webhook-id; poison entries are never selected', async () => {
      const { subscriberId: sub, seeded: s } = await fresh();
      const dry = await t.call('POST', '/v1/dlq/replay', { token: tokens.dlqWrite, body: { filter: { subscriber: sub }, dryRun: true } });
      assert.equal(dry.status, 200, dry.text);
      assert.equal(dry.json.dryRun, true);
      assert.equal(dry.json.selected, 1);
      assert.equal(dry.json.replayed, 0);
      assert.equal((await t.call('GET', `/v1/deliveries/${s.dead}`)).json.status, 'dead', 'a dry run changes nothing');

      const replay = await t.call('POST', '/v1/dlq/replay', { token: tokens.dlqWrite, body: { filter: { subscriber: sub, reason: 'rejected', since: '1h' }, ratePerSec: 50 } });
      assert.deepEqual({ selected: replay.json.selected, replayed: replay.json.replayed }, { selected: 1, replayed: 1 });
      const d = await t.call('GET', `/v1/deliveries/${s.dead}`);
      assert.equal(d.json.status, 'pending');
      assert.equal(d.json.id, s.dead, 'same webhook-id');
      assert.equal((await t.call('GET', `/v1/dlq?subscriber=${sub}`)).json.items.length, 0);

      const poisonOnly = await t.call('POST', '/v1/dlq/replay', { body: { filter: { reason: 'poison' } } });
      assert.equal(poisonOnly.json.selected, 0);
      assertError(await t.call('POST', '/v1/dlq/replay', { token: tokens.deliveriesRead, body: {} }), 403, 'ROUTER_ERR_FORBIDDEN');
      assertError(await t.call('POST', '/v1/dlq/replay', { body: { filter: { colour: 'red' } } }), 422, 'ROUTER_ERR_VALIDATION');
      assertError(await t.call('POST', '/v1/dlq/replay', { body: { limit: 0 } }), 422, 'ROUTER_ERR_VALIDATION');
      assertError(await t.call('POST', '/v1/dlq/replay', { body: { toSubscriber: 'sub_missing' } }), 422, 'ROUTER_ERR_VALIDATION');
    });

    test('DLQ replay to another subscriber creates a delivery for it; slow paced replays are refused up front', async () => {
      const { subscriberId: from, seeded: s } = await fresh();
      const to = (await t.call('POST', '/v1/subscribers', { body: subscriberBody('https://hooks.example.com/c') })).json.id;
      const r = await t.call('POST', '/v1/dlq/replay', { body: { filter: { subscriber: from }, toSubscriber: to } });
      assert.equal(r.json.replayed, 1, r.text);
      const deadEvent = s.events[1] as EventRecord;
      const created = await t.call('GET', `/v1/deliveries/${deliveryIdFor(deadEvent.id, to, deadEvent.receivedAt)}`);
      assert.equal(created.status, 200);
      assert.equal(created.json.subscriberId, to);

      const { subscriberId: slow } = await fresh();
      for (let i = 0; i < 6; i++) await seedTraffic(t.store, slow); // 7 dead letters: 70 s at 0.1/s
      const tooSlow = await t.call('POST', '/v1/dlq/replay', { body: { filter: { subscriber: slow }, ratePerSec: 0.1, limit: 10 } });
      assertError(tooSlow, 422, 'ROUTER_ERR_VALIDATION');
      assert.equal(tooSlow.json.error.details[0].path, 'ratePerSec');
    });

    test('DLQ purge removes one entry (404 for an unknown id)', async () => {
      const { subscriberId: sub } = await fresh();
      const [letter] = (await t.call('GET', `/v1/dlq?subscriber=${sub}`)).json.items;
      assertError(await t.call('DELETE', `/v1/dlq/${letter.id}`, { token: tokens.deliveriesRead }), 403, 'ROUTER_ERR_FORBIDDEN');
      const r = await t.call('DELETE', `/v1/dlq/${letter.id}`, { token: tokens.dlqWrite });
      assert.equal(r.status, 204);
      assert.equal((await t.call('GET', `/v1/dlq?subscriber=${sub}`)).json.items.length, 0);
      assertError(await t.call('DELETE', `/v1/dlq/${letter.id}`), 404, 'ROUTER_ERR_NOT_FOUND');
    });

    test('dead letters page by cursor', async () => {
      const { subscriberId: sub } = await fresh();
      await seedTraffic(t.store, sub);
      await seedTraffic(t.store, sub);
      const ids: string[] = [];
      let cursor: string | null = null;
      do {
        const r: Reply = await t.call('GET', `/v1/dlq?subscriber=${sub}&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
        ids.push(...r.json.items.map((l: { id: string }) => l.id));
        cursor = r.json.nextCursor;
      } while (cursor);
      assert.equal(ids.length, 3);
      assert.equal(new Set(ids).size, 3);
    });

    test('an event: metadata, credential-free headers, and the exact body as base64 on request', async () => {
      const event = seeded.events[0];
      assert.ok(event);
      const r = await t.call('GET', `/v1/events/${event.id}`, { token: tokens.deliveriesRead });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(
        { source: r.json.source, routing: r.json.routing, bodyBytes: r.json.bodyBytes, body: r.json.body },
        { source: 'github', routing: event.routing, bodyBytes: event.body.byteLength, body: undefined },
      );
      const withBody = await t.call('GET', `/v1/events/${event.id}?include=body`);
      assert.ok(Buffer.from(withBody.json.body, 'base64').equals(Buffer.from(event.body)));
      assertError(await t.call('GET', '/v1/events/evt_nope'), 404, 'ROUTER_ERR_NOT_FOUND');
      assertError(await t.call('GET', `/v1/events/${event.id}`, { token: tokens.subscribersWrite }), 403, 'ROUTER_ERR_FORBIDDEN');
    });
  });
}
