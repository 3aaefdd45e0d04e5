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

  test('after invalidate(), callers get what the store holds now, also while an older load is still running', async () => {
    const cache = createSubscriberCache(store, 60_000);
    const first = cache.get(); // a load that started before the change below
    await store.createSubscriber(newSubscriber('sub_b'), T0);
    cache.invalidate();
    const [, fresh, again] = await Promise.all([first, cache.get(), cache.get()]);
    assert.deepEqual(fresh.all.map((c) => c.subscriber.id).sort(), ['sub_a', 'sub_b']);
    assert.deepEqual(again.all.map((c) => c.subscriber.id).sort(), ['sub_a', 'sub_b']);
    assert.deepEqual((await cache.get()).all.map((c) => c.subscriber.id).sort(), ['sub_a', 'sub_b'], 'the older load did not overwrite it');
  });
});
