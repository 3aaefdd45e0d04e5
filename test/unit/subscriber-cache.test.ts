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

  /**
   * The real store, with the first load's read of the subscribers held back until `release()`: the window in which
   * other callers come while a load is running, made as wide as a test needs. Only the reading is held.
   */
  function holdFirstRead() {
    const read = Promise.withResolvers<void>();
    const released = Promise.withResolvers<void>();
    let loads = 0;
    let heldRows: string[] = [];
    const held: Pick<Store, 'allSubscribers' | 'subscribersVersion'> = {
      subscribersVersion: () => store.subscribersVersion(),
      allSubscribers: async () => {
        const rows = await store.allSubscribers();
        if (++loads === 1) {
          heldRows = rows.map((r) => r.id);
          read.resolve();
          await released.promise;
        }
        return rows;
      },
    };
    return { held, read: read.promise, release: () => released.resolve(), heldRows: () => heldRows };
  }

  test('every caller during the first load waits for it: none gets the empty start-up snapshot', async () => {
    const h = holdFirstRead();
    const cache = createSubscriberCache(h.held, 60_000);
    const seen: string[][] = [];
    const record = (p: Promise<{ all: readonly { subscriber: { id: string } }[] }>) => p.then((s) => seen.push(s.all.map((c) => c.subscriber.id)));
    const first = record(cache.get());
    await h.read; // the version is read, the subscribers are being read: the ingest loop and the dispatcher ask now
    const during = [record(cache.get()), record(cache.get()), record(cache.get())];
    h.release();
    await Promise.all([first, ...during]);
    assert.ok(seen.length > 1, 'no second caller came while the load ran');
    for (const ids of seen) assert.deepEqual(ids, ['sub_a']);
  });

  test('after invalidate(), callers get what the store holds now, not an older load still running, which never overwrites it', async () => {
    // The first load reads the subscribers before the change below and is held back until the end, so it is the
    // stale one and finishes last.
    const h = holdFirstRead();
    const cache = createSubscriberCache(h.held, 60_000);
    const stale = cache.get();
    await h.read;
    await store.createSubscriber(newSubscriber('sub_b'), T0);
    cache.invalidate();
    const waitedForStale = delay(2_000, undefined, { ref: false }).then(() => {
      throw new Error('get() after invalidate() waited for the load that started before it');
    });
    const fresh = await Promise.race([cache.get(), waitedForStale]);
    assert.deepEqual(fresh.all.map((c) => c.subscriber.id).sort(), ['sub_a', 'sub_b']);
    h.release();
    await stale;
    assert.deepEqual(h.heldRows(), ['sub_a'], 'the held load did read before the change');
    assert.deepEqual((await cache.get()).all.map((c) => c.subscriber.id).sort(), ['sub_a', 'sub_b'], 'the older load did not overwrite it');
  });
});
