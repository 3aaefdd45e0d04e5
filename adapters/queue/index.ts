/**
 * Queue registry: one factory per `queue.kind`. `satisfies` makes a kind without a factory, or a factory without a
 * kind, a compile error. Each adapter module, with its SDK, is imported only when its kind is configured: kafkajs and
 * ioredis alone cost a process about 40 MB of memory it would never use on the embedded defaults.
 */
import type { QueueConfig } from '../../config/schema.ts';
import type { Logger } from '../../src/logger.ts';
import type { QueueAdapter } from './port.ts';

export interface QueueDeps {
  logger?: Logger;
}

export const queueAdapters = {
  sqlite: async () => (await import('./sqlite.ts')).createSqliteQueue,
  memory: async () => (await import('./memory.ts')).createMemoryQueue,
  redis: async () => (await import('./redis-streams.ts')).createRedisStreamsQueue,
  kafka: async () => (await import('./kafka.ts')).createKafkaQueue,
} satisfies { [K in QueueConfig['kind']]: () => Promise<(config: Extract<QueueConfig, { kind: K }>, deps: QueueDeps) => QueueAdapter> };

export async function createQueue(config: QueueConfig, deps: QueueDeps): Promise<QueueAdapter> {
  const load = queueAdapters[config.kind] as () => Promise<(config: QueueConfig, deps: QueueDeps) => QueueAdapter>;
  return (await load())(config, deps);
}
