/**
 * The ingest loop: takes envelopes off the internal queue, matches subscribers, and records the event with one
 * delivery per matching subscriber, then acks. The ack comes only after the store committed, so from then on the
 * store owns the event (at-least-once). A repeat (same event id) records nothing and is acked.
 *
 * Faults: a store failure nacks the whole batch (with a short delay) and records nothing, so the queue redelivers;
 * a poison message (undecodable, or handed out more than `worker.maxReceives` times) is dead-lettered and acked.
 */
import type { QueueConsumer, QueueDelivery } from '../../adapters/queue/port.ts';
import { deliveryIdFor } from '../../adapters/store/ids.ts';
import type { IngestItem, Store } from '../../adapters/store/port.ts';
import type { Config } from '../../config/schema.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { parsePayload } from '../payload.ts';
import { renderTemplate } from '../subscribers/template.ts';
import { intake } from './intake.ts';
import type { SubscriberCache } from './subscriber-cache.ts';

export interface IngestDeps {
  readonly consumer: QueueConsumer;
  readonly store: Store;
  readonly cache: SubscriberCache;
  readonly config: Readonly<Pick<Config, 'worker' | 'retention'>>;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly now: () => number;
  /** Called after new deliveries were committed. */
  readonly onIngested: () => void;
}

const NACK_DELAY_MS = 1_000;

export function createIngestLoop(deps: IngestDeps) {
  const { consumer, store, cache, metrics, logger } = deps;
  const stop = new AbortController();
  let loop: Promise<void> | undefined;

  async function handle(batch: QueueDelivery[]): Promise<void> {
    const items: IngestItem[] = [];
    const poison: { delivery: QueueDelivery; reason: string }[] = [];
    let snapshot: Awaited<ReturnType<SubscriberCache['get']>>;
    try {
      snapshot = await cache.get();
    } catch (err) {
      logger.error({ err }, 'cannot read subscribers; handing the batch back');
      await settleAll(batch, (d) => d.nack({ delayMs: NACK_DELAY_MS }));
      return;
    }
    for (const delivery of batch) {
      const taken = intake(delivery, deps.config.worker.maxReceives);
      if (taken.kind === 'poison') {
        poison.push(taken);
        continue;
      }
      const env = taken.envelope;
      let payload: unknown;
      let parsed = false;
      const input = {
        source: env.source,
        routing: env.routing,
        payload: () => {
          if (!parsed) {
            payload = parsePayload(env.body, env.headers['content-type']);
            parsed = true;
          }
          return payload;
        },
      };
      const deliveries = snapshot.all
        .filter(({ subscriber, filter }) => subscriber.enabled && filter.matches(input))
        .map(({ subscriber }) => ({
          id: deliveryIdFor(env.id, subscriber.id, env.receivedAt),
          subscriberId: subscriber.id,
          orderingKey: subscriber.ordering ? renderTemplate(subscriber.ordering.key, env.source, env.routing) : undefined,
        }));
      items.push({
        event: {
          id: env.id,
          source: env.source,
          sourceKind: env.sourceKind,
          dedupeKey: env.dedupeKey,
          receivedAt: env.receivedAt,
          headers: env.headers,
          routing: env.routing,
          body: env.body,
        },
        deliveries,
      });
    }

    const now = deps.now();
    try {
      for (const p of poison) {
        await store.recordPoison(`queue message ${p.delivery.brokerId}: ${p.reason}`, now);
        metrics.dlq.inc({ reason: 'poison' });
        logger.error({ brokerId: p.delivery.brokerId, reason: p.reason }, 'poison message dead-lettered');
      }
      const results = await store.ingest(items, now);
      results.forEach((r, i) => {
        if (r === 'duplicate') metrics.dedupeHits.inc({ source: items[i]?.event.source ?? '', stage: 'worker' });
      });
    } catch (err) {
      logger.error({ err, batch: batch.length }, 'recording events failed; handing the batch back');
      await settleAll(batch, (d) => d.nack({ delayMs: NACK_DELAY_MS }));
      return;
    }
    await settleAll(batch, (d) => d.ack());
    deps.onIngested();
  }

  async function settleAll(batch: QueueDelivery[], settle: (d: QueueDelivery) => Promise<void>): Promise<void> {
    const results = await Promise.allSettled(batch.map(settle));
    for (const r of results) {
      // A lost lease means another consumer holds the message now; it will be (or was) recorded once either way.
      if (r.status === 'rejected') logger.warn({ err: r.reason }, 'settling a queue message failed');
    }
  }

  async function run(): Promise<void> {
    while (!stop.signal.aborted) {
      let batch: QueueDelivery[];
      try {
        batch = await consumer.receive({ max: deps.config.worker.ingestBatch, waitMs: 1_000, signal: stop.signal });
      } catch (err) {
        logger.error({ err }, 'receiving from the queue failed');
        await new Promise((r) => setTimeout(r, NACK_DELAY_MS));
        continue;
      }
      if (batch.length > 0) await handle(batch);
    }
  }

  return {
    start(): void {
      loop ??= run();
    },
    /** Stops receiving; the batch in hand is finished (recorded and acked) before this resolves. */
    async close(): Promise<void> {
      stop.abort();
      await loop;
      await consumer.close();
    },
  };
}
