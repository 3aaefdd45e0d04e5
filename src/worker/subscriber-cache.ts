/**
 * The worker's view of subscribers: all of them, filters compiled, reloaded only when the store's
 * subscribersVersion changes (checked at most every `refreshMs`). A subscriber created through the API starts
 * receiving events within about a second, without a query per event.
 */
import type { Store } from '../../adapters/store/port.ts';
import { type CompiledFilter, compileFilter } from '../subscribers/match.ts';
import type { Subscriber } from '../subscribers/model.ts';

export interface CachedSubscriber {
  readonly subscriber: Subscriber;
  readonly filter: CompiledFilter;
}

export interface SubscriberSnapshot {
  readonly all: readonly CachedSubscriber[];
  readonly byId: ReadonlyMap<string, CachedSubscriber>;
}

export function createSubscriberCache(store: Pick<Store, 'allSubscribers' | 'subscribersVersion'>, refreshMs: number) {
  let version: string | undefined;
  let snapshot: SubscriberSnapshot = { all: [], byId: new Map() };
  /** When the snapshot was last confirmed current; set only once a load has finished (see get()). */
  let checkedAt = Number.NEGATIVE_INFINITY;
  /**
   * Bumped by invalidate(). A load started before the bump may have read the old rows: it is not shared with callers
   * after the bump, and should it finish last, it does not overwrite what a newer load found.
   */
  let generation = 0;
  let applied = -1;
  let loading: { promise: Promise<SubscriberSnapshot>; generation: number } | undefined;

  async function load(gen: number): Promise<SubscriberSnapshot> {
    const current = await store.subscribersVersion();
    if (current !== version) {
      const all = (await store.allSubscribers()).map((subscriber) => ({ subscriber, filter: compileFilter(subscriber.filter) }));
      if (gen < applied) return snapshot;
      snapshot = { all, byId: new Map(all.map((c) => [c.subscriber.id, c])) };
      version = current;
    }
    if (gen < applied) return snapshot;
    applied = gen;
    checkedAt = Date.now();
    return snapshot;
  }

  return {
    /**
     * The current snapshot. While a load runs, callers wait for it rather than take the previous snapshot: at start
     * that one is empty, and an event matched against it would get no deliveries at all. Throws when the store
     * cannot be read (the caller treats that as our fault).
     */
    get(): Promise<SubscriberSnapshot> {
      if (Date.now() - checkedAt < refreshMs) return Promise.resolve(snapshot);
      if (loading?.generation === generation) return loading.promise;
      const entry = { generation, promise: load(generation) };
      entry.promise
        .finally(() => {
          if (loading === entry) loading = undefined;
        })
        .catch(() => {});
      loading = entry;
      return entry.promise;
    },
    /** Forces the next get() to read the store (after this process changed a subscriber). */
    invalidate(): void {
      checkedAt = Number.NEGATIVE_INFINITY;
      generation += 1;
    },
  };
}

export type SubscriberCache = ReturnType<typeof createSubscriberCache>;
