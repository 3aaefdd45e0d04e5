/**
 * The queue contract over the in-process memory adapter. Nothing survives close(), and each adapter is its own queue,
 * so the persistence and shared-namespace tests are skipped (with that reason in the output).
 */
import { createMemoryQueue } from '../../adapters/queue/memory.ts';
import { Queue } from '../../config/schema.ts';
import { type QueueHarness, runQueueContract } from './queue.contract.ts';

const harness: QueueHarness = {
  name: 'memory',
  capabilities: {
    maxBatch: 1_000,
    maxMessageBytes: 64 * 1024 * 1024,
    delayedPublish: true,
    nackRedelivery: 'immediate',
    orderingKey: false,
    durability: 'none',
  },
  persistent: false,
  sharedAcrossAdapters: false,
  countsReceives: true,
  nackDelay: true,
  extendDeadline: true,
  visibilityTimeoutMs: 400,
  slackMs: 400,

  async open(_ns, overrides) {
    // Through the real schema, so defaults are the ones production sees.
    const config = Queue.parse({ kind: 'memory', visibilityTimeoutMs: overrides?.visibilityTimeoutMs ?? 400 });
    if (config.kind !== 'memory') throw new Error('unreachable');
    const adapter = createMemoryQueue(config);
    await adapter.connect();
    return adapter;
  },

  async close() {},
};

runQueueContract(harness);
