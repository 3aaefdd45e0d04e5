/**
 * The worker role: the ingest loop (queue → store), the dispatcher (store → subscribers) and the retention sweeper,
 * sharing one subscriber cache. `close()` stops intake first, then lets the dispatcher drain within the deadline.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { QueueAdapter } from '../../adapters/queue/port.ts';
import type { Store } from '../../adapters/store/port.ts';
import type { Config } from '../../config/schema.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { createDispatcher } from './dispatcher.ts';
import { createIngestLoop } from './ingest.ts';
import { type CreateSender, createSenderPool } from './senders.ts';
import { createSubscriberCache } from './subscriber-cache.ts';

export interface WorkerDeps {
  readonly config: Readonly<Config>;
  readonly queue: QueueAdapter;
  readonly store: Store;
  readonly createSender: CreateSender;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly now?: () => number;
  readonly rng?: () => number;
}

/** How often the subscriber cache asks the store whether anything changed. */
const SUBSCRIBER_REFRESH_MS = 1_000;

export function createWorker(deps: WorkerDeps) {
  const { config, store, metrics, logger } = deps;
  const now = deps.now ?? Date.now;
  const owner = `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  const cache = createSubscriberCache(store, SUBSCRIBER_REFRESH_MS);
  const senders = createSenderPool(deps.createSender, logger);
  const dispatcher = createDispatcher({
    store,
    cache,
    senders,
    config,
    metrics,
    logger: logger.child({ component: 'dispatcher' }),
    owner,
    now,
    rng: deps.rng ?? Math.random,
  });
  const ingest = createIngestLoop({
    consumer: deps.queue.consumer(),
    store,
    cache,
    config,
    metrics,
    logger: logger.child({ component: 'ingest' }),
    now,
    onIngested: () => dispatcher.wake(),
  });
  let sweeper: NodeJS.Timeout | undefined;

  async function sweep(): Promise<void> {
    try {
      const removed = await store.sweep(now(), config.retention);
      logger.info({ removed }, 'retention sweep');
    } catch (err) {
      logger.error({ err }, 'retention sweep failed');
    }
  }

  return {
    owner,
    start(): void {
      ingest.start();
      dispatcher.start();
      sweeper = setInterval(() => void sweep(), config.worker.sweepIntervalMs);
      sweeper.unref();
    },
    async close(deadline: number): Promise<void> {
      clearInterval(sweeper);
      await ingest.close();
      await dispatcher.close(deadline);
      await senders.close();
    },
  };
}
