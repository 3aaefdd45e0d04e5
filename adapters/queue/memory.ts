/**
 * In-process queue for tests and demos. Same semantics as the durable adapters (leases, redelivery of unsettled
 * messages, receive counts, delayed publish) and the same contract suite, but nothing survives the process: it
 * warns at start-up so nobody runs it in production by accident.
 */
import type { QueueConfig } from '../../config/schema.ts';
import { RouterError } from '../../src/errors.ts';
import { type Logger, silentLogger } from '../../src/logger.ts';
import type { QueueAdapter, QueueCapabilities, QueueConsumer, QueueDelivery, QueueMessage, ReceiveOptions } from './port.ts';
import { Waiters } from './waiters.ts';

export type MemoryQueueConfig = Extract<QueueConfig, { kind: 'memory' }>;

interface Entry {
  seq: number;
  message: QueueMessage;
  visibleAt: number;
  lease: number | undefined;
  receiveCount: number;
}

export function createMemoryQueue(config: MemoryQueueConfig, deps: { logger?: Logger } = {}): QueueAdapter {
  const logger = deps.logger ?? silentLogger;
  const capabilities: QueueCapabilities = {
    maxBatch: 1_000,
    maxMessageBytes: 64 * 1024 * 1024,
    delayedPublish: true,
    nackRedelivery: 'immediate',
    orderingKey: false,
    durability: 'none',
  };
  // Insertion-ordered by seq; a Map keeps deletes O(1).
  const entries = new Map<number, Entry>();
  const waiters = new Waiters();
  let seq = 0;
  let leases = 0;
  let open = false;
  let closed = false;

  const requireOpen = () => {
    if (!open || closed) throw new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'memory queue is not open');
  };

  function publishOne(message: QueueMessage): void {
    requireOpen();
    const now = Date.now();
    seq += 1;
    // Copy, as a broker stores the bytes as they were when the publish was confirmed, whatever the caller does next.
    const stored = { ...message, body: Uint8Array.from(message.body) };
    entries.set(seq, { seq, message: stored, visibleAt: now + (message.delayMs ?? 0), lease: undefined, receiveCount: 0 });
  }

  function settleCheck(entry: Entry, lease: number): Entry {
    requireOpen();
    const current = entries.get(entry.seq);
    if (!current || current.lease !== lease) {
      throw new RouterError('ROUTER_ERR_LEASE_LOST', `lease on message ${entry.seq} expired and was taken over`);
    }
    return current;
  }

  function delivery(entry: Entry, lease: number): QueueDelivery {
    let settled = false;
    const once = async (fn: () => void) => {
      if (settled) throw new RouterError('ROUTER_ERR_ALREADY_SETTLED', `message ${entry.seq} was already settled`);
      settled = true;
      fn();
    };
    return {
      body: entry.message.body.slice(), // each delivery its own copy, as from a real broker
      key: entry.message.key,
      brokerId: String(entry.seq),
      receiveCount: entry.receiveCount,
      ack: () => once(() => entries.delete(settleCheck(entry, lease).seq)),
      nack: (options) =>
        once(() => {
          const current = settleCheck(entry, lease);
          current.lease = undefined;
          current.visibleAt = Date.now() + (options?.delayMs ?? 0);
          waiters.wakeAll();
        }),
      extendDeadline: async (ms) => {
        if (settled) throw new RouterError('ROUTER_ERR_ALREADY_SETTLED', `message ${entry.seq} was already settled`);
        settleCheck(entry, lease).visibleAt = Date.now() + ms;
      },
    };
  }

  function claim(max: number): QueueDelivery[] {
    const now = Date.now();
    const out: QueueDelivery[] = [];
    for (const entry of entries.values()) {
      if (out.length >= max) break;
      if (entry.visibleAt > now) continue;
      leases += 1;
      entry.lease = leases;
      entry.visibleAt = now + config.visibilityTimeoutMs;
      entry.receiveCount += 1;
      out.push(delivery(entry, leases));
    }
    return out;
  }

  return {
    kind: 'memory',
    capabilities,
    async connect() {
      if (open) return;
      open = true;
      logger.warn('memory queue: for tests and demos only; accepted webhooks are lost when this process stops');
    },
    async ping() {
      requireOpen();
    },
    producer() {
      return {
        async publish(message) {
          publishOne(message);
          waiters.wakeAll();
        },
        async publishBatch(messages) {
          for (const m of messages) publishOne(m);
          waiters.wakeAll();
        },
      };
    },
    consumer(): QueueConsumer {
      let consumerClosed = false;
      return {
        async receive(options: ReceiveOptions) {
          const deadline = Date.now() + options.waitMs;
          const max = Math.max(1, Math.min(options.max, capabilities.maxBatch));
          for (;;) {
            if (consumerClosed || closed || options.signal?.aborted) return [];
            requireOpen();
            const got = claim(max);
            const left = deadline - Date.now();
            if (got.length > 0 || left <= 0) return got;
            // Leases expire without an event, so re-check at least every 50 ms.
            await waiters.wait(Math.min(left, 50), options.signal);
          }
        },
        async close() {
          consumerClosed = true;
        },
      };
    },
    async close() {
      closed = true;
      waiters.wakeAll();
    },
  };
}
