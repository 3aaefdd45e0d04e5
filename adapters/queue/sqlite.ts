/**
 * The embedded default queue: one SQLite file in WAL mode, written through better-sqlite3 on a worker thread of its
 * own (sqlite-thread.ts), so that no statement and no fsync ever blocks the event loop that receives webhooks.
 *
 * Writes (publishes and acks) go through a group commit: they gather for `batchWindowMs` (or until `batchMaxItems`)
 * and commit in one transaction, so one fsync confirms hundreds of publishes. One commit is in flight at a time;
 * what arrives meanwhile forms the next one. A publish resolves only after its commit. With `synchronous: full` that
 * commit survives power loss; with `normal`, a process crash.
 *
 * SQLite's automatic WAL checkpoint would run on the committing connection and hold every commit (measured at 30–50 %
 * of ingest throughput, shared/reference/performance.md). It is turned off, and the process's checkpointer thread
 * checkpoints instead, from a connection of its own (../sqlite-checkpointer.ts), keeping the WAL near
 * `WAL_LIMIT_BYTES`.
 *
 * Message states, all in one row of `queue_entries` (the body sits in `queue_bodies`, see sqlite-thread.ts):
 *
 *   published ──claim──▶ leased (visible_at = now + visibilityTimeout, lease = token)
 *       ▲                   │ ack ─────────▶ deleted
 *       │                   │ nack ────────▶ visible again (visible_at = now + delay, lease cleared)
 *       └──lease expires────┘ (consumer died: visible_at passes, any consumer may claim it; receive_count grows)
 *
 * Settling checks the lease token, so a consumer whose lease expired and whose message was taken over cannot ack the
 * new holder's copy (ROUTER_ERR_LEASE_LOST). Claims are single UPDATE … RETURNING statements; SQLite serialises
 * writers, so two consumers, in one process or several sharing the file, never claim the same row at once.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { QueueConfig } from '../../config/schema.ts';
import { RouterError } from '../../src/errors.ts';
import { type Logger, silentLogger } from '../../src/logger.ts';
import type { QueueAdapter, QueueCapabilities, QueueConsumer, QueueDelivery, ReceiveOptions } from './port.ts';
import { type Packed, pack } from './pack.ts';
import { type Checkpointer, startCheckpointer, WAL_LIMIT_BYTES } from '../sqlite-checkpointer.ts';
import { ThreadLink } from '../thread-link.ts';
import type { Claimed, ClaimedRow, PostedWrite, ThreadOptions, ThreadRequest, WriteOp } from './sqlite-thread.ts';
import { Waiters } from './waiters.ts';

export type SqliteQueueConfig = Extract<QueueConfig, { kind: 'sqlite' }>;

interface PendingWrite {
  write: WriteOp;
  resolve: () => void;
  reject: (err: unknown) => void;
}


type Request = ThreadRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export function createSqliteQueue(config: SqliteQueueConfig, deps: { logger?: Logger } = {}): QueueAdapter {
  const logger = deps.logger ?? silentLogger;
  const capabilities: QueueCapabilities = {
    maxBatch: 1_000,
    maxMessageBytes: 64 * 1024 * 1024, // 64 MiB: far above GitHub's 25 MB, below SQLite's 1 GB blob limit
    delayedPublish: true,
    nackRedelivery: 'immediate',
    orderingKey: false,
    durability: config.synchronous === 'full' ? 'power-loss' : 'process-crash',
  };

  let thread: ThreadLink | undefined;
  let checkpointer: Checkpointer | undefined;
  const pending: PendingWrite[] = [];
  let flushTimer: NodeJS.Timeout | undefined;
  /** The commit the thread is working on; writes arriving meanwhile wait for the next one. */
  let committing: Promise<void> | undefined;
  let closing: Promise<void> | undefined;
  const consumers = new Set<SqliteConsumer>();
  const waiters = new Waiters();
  // Lease tokens only need to be unique per claim; a process prefix plus a counter is cheap and collision-free.
  const leasePrefix = randomBytes(6).toString('hex');
  let leaseCounter = 0;

  function call<T>(request: Request, transfer: ArrayBuffer[] = []): Promise<T> {
    if (!thread) return Promise.reject(new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'sqlite queue is not open'));
    return thread.call<T>(request, transfer);
  }

  function requireOpen(): void {
    if (!thread || closing) throw new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'sqlite queue is not open');
  }

  /** Commits every gathered write in one transaction; each write learns its own outcome. */
  function flush(): void {
    if (flushTimer) clearTimeout(flushTimer);
    flushTimer = undefined;
    if (committing || pending.length === 0) return;
    // At most batchMaxItems per commit: writes pile up while the thread is slow, and one commit of all of them
    // would pack every body into one buffer at once.
    const batch = pending.splice(0, config.batchMaxItems);
    const packed = pack(batch.flatMap((p) => (p.write.op === 'publish' ? [p.write.body] : [])));
    let next = 0;
    const writes = batch.map(({ write: w }): PostedWrite => {
      if (w.op !== 'publish') return w;
      const place = packed.places[next++] as Packed['places'][number];
      return { op: 'publish', key: w.key, delayMs: w.delayMs, ...place };
    });
    committing = call<boolean[]>({ op: 'commit', writes, bodies: packed.buffer }, [packed.buffer]).then(
      (applied) => {
        // Only a settle can fail to apply: its lease was taken over.
        batch.forEach((p, i) => (applied[i] || p.write.op === 'publish' ? p.resolve() : p.reject(leaseLost(p.write.seq))));
        if (batch.some((p) => p.write.op === 'publish' || p.write.op === 'nack')) waiters.wakeAll();
      },
      (err: unknown) => {
        const failure = err instanceof RouterError ? err : new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', 'sqlite queue commit failed', { cause: err });
        logger.error({ err, batch: batch.length }, 'sqlite queue commit failed');
        for (const p of batch) p.reject(failure);
      },
    );
    void committing.finally(() => {
      committing = undefined;
      // What gathered during this commit goes at once: it has already waited at least one commit's time.
      if (pending.length > 0) flush();
    });
  }

  function enqueueWrite(write: WriteOp): Promise<void> {
    if (!thread || closing) return Promise.reject(new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'sqlite queue is closed'));
    if (write.op === 'publish' && pending.length >= config.maxPendingPublishes) {
      return Promise.reject(new RouterError('ROUTER_ERR_QUEUE_OVERLOADED', `${pending.length} writes are waiting for a commit`));
    }
    return new Promise<void>((resolve, reject) => {
      pending.push({ write, resolve, reject });
      if (committing) return; // the running commit's end starts the next one
      if (pending.length >= config.batchMaxItems) flush();
      else flushTimer ??= setTimeout(flush, config.batchWindowMs);
    });
  }

  class SqliteConsumer implements QueueConsumer {
    #closed = false;

    async receive(options: ReceiveOptions): Promise<QueueDelivery[]> {
      const deadline = Date.now() + options.waitMs;
      const max = Math.max(1, Math.min(options.max, capabilities.maxBatch));
      for (;;) {
        if (this.#closed || closing || options.signal?.aborted) return [];
        requireOpen();
        const lease = `${leasePrefix}.${(leaseCounter++).toString(36)}`;
        let claimed: Claimed;
        try {
          claimed = await call<Claimed>({ op: 'claim', lease, visibilityMs: config.visibilityTimeoutMs, max });
        } catch (err) {
          throw new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', 'sqlite queue claim failed', { cause: err });
        }
        if (claimed.rows.length > 0) return claimed.rows.map((row) => delivery(row, Buffer.from(claimed.bodies, row.offset, row.length), lease));
        const left = deadline - Date.now();
        if (left <= 0) return [];
        // Publishes from this process wake us at once; other processes sharing the file are seen by polling.
        await waiters.wait(Math.min(left, config.pollIntervalMs), options.signal);
      }
    }

    async close(): Promise<void> {
      this.#closed = true;
      consumers.delete(this);
    }
  }

  function delivery(row: ClaimedRow, body: Uint8Array, lease: string): QueueDelivery {
    let settled = false;
    const settle = (write: WriteOp) => {
      if (settled) return Promise.reject(new RouterError('ROUTER_ERR_ALREADY_SETTLED', `message ${row.seq} was already settled`));
      settled = true;
      return enqueueWrite(write);
    };
    return {
      body,
      key: row.key ?? undefined,
      brokerId: String(row.seq),
      receiveCount: row.receive_count,
      ack: () => settle({ op: 'ack', seq: row.seq, lease }),
      nack: (options) => settle({ op: 'nack', seq: row.seq, lease, delayMs: options?.delayMs ?? 0 }),
      extendDeadline: (ms) => {
        if (settled) return Promise.reject(new RouterError('ROUTER_ERR_ALREADY_SETTLED', `message ${row.seq} was already settled`));
        return enqueueWrite({ op: 'extend', seq: row.seq, lease, ms });
      },
    };
  }

  async function open(): Promise<void> {
    mkdirSync(dirname(config.path), { recursive: true });
    const worker = new Worker(new URL('./sqlite-thread.ts', import.meta.url), {
      name: 'sqlite-queue',
      workerData: { path: config.path, synchronous: config.synchronous, walLimitBytes: WAL_LIMIT_BYTES } satisfies ThreadOptions,
    });
    const link = new ThreadLink(worker, {
      toError: (e) => new Error(e.message),
      gone: (cause) => new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', `sqlite queue thread stopped: ${cause.message}`, { cause }),
    });
    await link.call({ op: 'ping' } satisfies Request); // the thread opened the file, or it is gone saying why
    thread = link;
  }

  return {
    kind: 'sqlite',
    capabilities,

    async connect() {
      if (thread) return;
      try {
        await open();
      } catch (err) {
        throw new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', `cannot open sqlite queue at ${config.path}`, { cause: err });
      }
      checkpointer = startCheckpointer({ path: config.path, intervalMs: config.checkpointIntervalMs, walLimitBytes: WAL_LIMIT_BYTES }, (err) =>
        logger.error({ err }, 'sqlite queue checkpointer failed'),
      );
      logger.info({ path: config.path, synchronous: config.synchronous }, 'sqlite queue open');
    },

    async ping() {
      requireOpen();
      await call({ op: 'ping' });
    },

    producer() {
      return {
        publish: (message) => enqueueWrite({ op: 'publish', key: message.key ?? null, body: message.body, delayMs: message.delayMs ?? 0 }),
        publishBatch: (messages) =>
          Promise.all(messages.map((m) => enqueueWrite({ op: 'publish', key: m.key ?? null, body: m.body, delayMs: m.delayMs ?? 0 }))).then(() => {}),
      };
    },

    consumer() {
      const consumer = new SqliteConsumer();
      consumers.add(consumer);
      return consumer;
    },

    close() {
      closing ??= (async () => {
        for (const c of consumers) await c.close();
        waiters.wakeAll();
        // Commit what was accepted before close() was called; `closing` is set, so nothing new joins.
        while (committing || pending.length > 0) {
          flush();
          await committing;
        }
        await checkpointer?.stop();
        await thread?.close({ op: 'close' } satisfies Request);
        thread = undefined;
      })();
      return closing;
    },
  };
}

function leaseLost(seq: number): RouterError {
  return new RouterError('ROUTER_ERR_LEASE_LOST', `lease on message ${seq} expired and was taken over`);
}
