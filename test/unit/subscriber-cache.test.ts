/**
 * The worker's subscriber cache over the real SQLite store (whose calls cross to its thread, so a load takes a real
 * round trip). Regression: callers that came while the first load was running got the empty start-up snapshot, and a
 * worker restarted under load recorded events with no deliveries at all (found by test/e2e/worker-crash.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import type { Store } from '../../adapters/store/port.ts';
import { createSubscriberCache } from '../../src/worker/subscriber-cache.ts';
import { T0, newSubscriber } from '../helpers/store.ts';

describe('subscriber cache', () => {
  const dir = mkdtempSync(join(tmpdir(), 'wr-cache-'));
  let store: Store;
  before(async () => {
    store = createSqliteStore({ kind: 'sqlite', path: join(dir, 'router.db') });
    await store.connect();
    await store.migrate();
    await store.createSubscriber(newSubscriber('sub_a'), T0);
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('every caller during the first load waits for it: none gets the empty start-up snapshot', async () => {
    const cache = createSubscriberCache(store, 60_000);
    let done = false;
    const calls: Promise<unknown>[] = [];
    const seen: string[][] = [];
    const first = cache.get().finally(() => (done = true));
    // Ask again at every turn of the event loop until the first load is over, as the ingest loop and the dispatcher do.
    while (!done) {
      calls.push(cache.get().then((s) => seen.push(s.all.map((c) => c.subscriber.id))));
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all([first, ...calls]);
    assert.ok(seen.length > 1, 'the load finished before a second caller came');
    for (const ids of seen) assert.deepEqual(ids, ['sub_a']);
  });

  test('after invalidate(), callers get what the store holds now, not an older load still running, which never overwrites it', async () => {
    // The first load reads the subscribers before the change below and is held back until the end, so it is the
    // stale one and finishes last. Only the reading is held; the store is the real one.
    const read = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    let loads = 0;
    let heldRows: string[] = [];
    const held: Pick<Store, 'allSubscribers' | 'subscribersVersion'> = {
      subscribersVersion: () => store.subscribersVersion(),
      allSubscribers: async () => {
        const rows = await store.allSubscribers();
        if (++loads === 1) {
          heldRows = rows.map((r) => r.id);
          read.resolve();
          await release.promise;
        }
        return rows;
      },
    };
    const cache = createSubscriberCache(held, 60_000);
    const stale = cache.get();
    await read.promise;
    await store.createSubscriber(newSubscriber('sub_b'), T0);
    cache.invalidate();
    const waitedForStale = delay(2_000, undefined, { ref: false }).then(() => {
      throw new Error('get() after invalidate() waited for the load that started before it');
    });
    const fresh = await Promise.race([cache.get(), waitedForStale]);
    assert.deepEqual(fresh.all.map((c) => c.subscriber.id).sort(), ['sub_a', 'sub_b']);
    release.resolve();
    await stale;
    assert.deepEqual(heldRows, ['sub_a'], 'the held load did read before the change');
    assert.deepEqual((await cache.get()).all.map((c) => c.subscriber.id).sort(), ['sub_a', 'sub_b'], 'the older load did not overwrite it');
  });
});
