/**
 * Queue registry: one factory per `queue.kind`. `satisfies` makes a kind without a factory, or a factory without a
 * kind, a compile error.
 */
import type { QueueConfig } from '../../config/schema.ts';
import type { Logger } from '../../src/logger.ts';
import { createKafkaQueue } from './kafka.ts';
import { createMemoryQueue } from './memory.ts';
import type { QueueAdapter } from './port.ts';
import { createRedisStreamsQueue } from './redis-streams.ts';
import { createSqliteQueue } from './sqlite.ts';

export interface QueueDeps {
  logger?: Logger;
}

export const queueAdapters = {
  sqlite: createSqliteQueue,
  memory: createMemoryQueue,
  redis: createRedisStreamsQueue,
  kafka: createKafkaQueue,
} satisfies { [K in QueueConfig['kind']]: (config: Extract<QueueConfig, { kind: K }>, deps: QueueDeps) => QueueAdapter };

export function createQueue(config: QueueConfig, deps: QueueDeps): QueueAdapter {
  const factory = queueAdapters[config.kind] as (config: QueueConfig, deps: QueueDeps) => QueueAdapter;
  return factory(config, deps);
}
