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
  let checkedAt = Number.NEGATIVE_INFINITY;
  let loading: Promise<SubscriberSnapshot> | undefined;

  async function load(): Promise<SubscriberSnapshot> {
    const current = await store.subscribersVersion();
    checkedAt = Date.now();
    if (current !== version) {
      const all = (await store.allSubscribers()).map((subscriber) => ({ subscriber, filter: compileFilter(subscriber.filter) }));
      snapshot = { all, byId: new Map(all.map((c) => [c.subscriber.id, c])) };
      version = current;
    }
    return snapshot;
  }

  return {
    /** Throws when the store cannot be read (the caller treats that as our fault). */
    get(): Promise<SubscriberSnapshot> {
      if (Date.now() - checkedAt < refreshMs) return Promise.resolve(snapshot);
      loading ??= load().finally(() => {
        loading = undefined;
      });
      return loading;
    },
    /** Forces the next get() to check the store (after this process changed a subscriber). */
    invalidate(): void {
      checkedAt = Number.NEGATIVE_INFINITY;
    },
  };
}

export type SubscriberCache = ReturnType<typeof createSubscriberCache>;
