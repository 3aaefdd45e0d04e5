/**
 * Live transport senders, one per subscriber configuration version, in an LRU that closes what it evicts (outpost's
 * publisher cache). A changed subscriber gets a new sender; the old one drains its in-flight sends and closes.
 */
import { LRUCache } from 'lru-cache';
import type { Subscriber } from '../subscribers/model.ts';
import type { TransportSender } from '../../transports/port.ts';
import type { Logger } from '../logger.ts';

export type CreateSender = (subscriber: Subscriber) => TransportSender;

export function createSenderPool(create: CreateSender, logger: Logger, max = 1_000) {
  const closeQuietly = (sender: TransportSender) => {
    sender.close().catch((err: unknown) => logger.warn({ err }, 'closing a transport sender failed'));
  };
  const cache = new LRUCache<string, { version: number; sender: TransportSender }>({
    max,
    dispose: (entry) => closeQuietly(entry.sender),
  });
  return {
    /** Throws when the subscriber's transport config is invalid for its provider. */
    get(subscriber: Subscriber): TransportSender {
      const cached = cache.get(subscriber.id);
      if (cached && cached.version === subscriber.version) return cached.sender;
      const sender = create(subscriber);
      cache.set(subscriber.id, { version: subscriber.version, sender }); // replacing disposes the old one
      return sender;
    },
    async close(): Promise<void> {
      const senders = [...cache.values()].map((e) => e.sender);
      cache.clear(); // dispose() starts each close; wait for them below
      await Promise.allSettled(senders.map((s) => s.close()));
    },
  };
}

export type SenderPool = ReturnType<typeof createSenderPool>;
