/**
 * The embedded default queue: one SQLite file in WAL mode, written through better-sqlite3.
 *
 * Writes (publishes and acks) go through a group commit: they gather for `batchWindowMs` (or until `batchMaxItems`)
 * and commit in one transaction, so one fsync confirms hundreds of publishes. A publish resolves only after its
 * commit. With `synchronous: full` that commit survives power loss; with `normal`, a process crash.
 *
 * SQLite's automatic WAL checkpoint runs on the committing connection, i.e. on our event loop, and measured at 30–50 %
 * of ingest throughput (shared/reference/performance.md). It is turned off here and a worker thread with its own
 * connection checkpoints instead (sqlite-checkpointer.ts).
 *
 * Message states, all in one row:
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
import Database from 'better-sqlite3';
import type { QueueConfig } from '../../config/schema.ts';
import { RouterError } from '../../src/errors.ts';
import { type Logger, silentLogger } from '../../src/logger.ts';
import type { QueueAdapter, QueueCapabilities, QueueConsumer, QueueDelivery, QueueMessage, ReceiveOptions } from './port.ts';
import { Waiters } from './waiters.ts';

export type SqliteQueueConfig = Extract<QueueConfig, { kind: 'sqlite' }>;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS queue_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT,
    body          BLOB NOT NULL,
    visible_at    INTEGER NOT NULL,
    lease         TEXT,
    receive_count INTEGER NOT NULL DEFAULT 0,
    published_at  INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages (visible_at, seq);
`;

type WriteOp =
  | { op: 'publish'; message: QueueMessage }
  | { op: 'ack'; seq: number; lease: string }
  | { op: 'nack'; seq: number; lease: string; delayMs: number }
  | { op: 'extend'; seq: number; lease: string; ms: number };

interface PendingWrite {
  write: WriteOp;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface ClaimedRow {
  seq: number;
  key: string | null;
  body: Buffer;
  receive_count: number;
}

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

  let db: Database.Database | undefined;
  let statements: ReturnType<typeof prepare> | undefined;
  let checkpointer: Worker | undefined;
  let pending: PendingWrite[] = [];
  let flushTimer: NodeJS.Timeout | undefined;
  let flushScheduled = false;
  let closing: Promise<void> | undefined;
  const consumers = new Set<SqliteConsumer>();
  const waiters = new Waiters();
  // Lease tokens only need to be unique per claim; a process prefix plus a counter is cheap and collision-free.
  const leasePrefix = randomBytes(6).toString('hex');
  let leaseCounter = 0;

  function prepare(d: Database.Database) {
    return {
      insert: d.prepare('INSERT INTO queue_messages (key, body, visible_at, published_at) VALUES (?, ?, ?, ?)'),
      ack: d.prepare('DELETE FROM queue_messages WHERE seq = ? AND lease = ?'),
      nack: d.prepare('UPDATE queue_messages SET lease = NULL, visible_at = ? WHERE seq = ? AND lease = ?'),
      extend: d.prepare('UPDATE queue_messages SET visible_at = ? WHERE seq = ? AND lease = ?'),
      claim: d.prepare(
        `UPDATE queue_messages SET lease = @lease, visible_at = @until, receive_count = receive_count + 1
         WHERE seq IN (SELECT seq FROM queue_messages WHERE visible_at <= @now ORDER BY visible_at, seq LIMIT @max)
         RETURNING seq, key, body, receive_count`,
      ),
      ping: d.prepare('SELECT 1'),
      syncOff: d.prepare('PRAGMA synchronous = OFF'),
      syncFull: d.prepare('PRAGMA synchronous = FULL'),
    };
  }

  /**
   * A claim need not wait for the disk: lost in a power cut, it only leaves the message visible again (delivered
   * once more, which at-least-once allows). The next durable commit (FULL) flushes it with everything else.
   */
  function claimRelaxed(s: NonNullable<typeof statements>, params: Record<string, number | string>): ClaimedRow[] {
    if (config.synchronous === 'normal') return s.claim.all(params) as ClaimedRow[];
    s.syncOff.run();
    try {
      return s.claim.all(params) as ClaimedRow[];
    } finally {
      s.syncFull.run();
    }
  }

  function requireOpen(): { d: Database.Database; s: NonNullable<typeof statements> } {
    if (!db || !statements || closing) throw new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'sqlite queue is not open');
    return { d: db, s: statements };
  }

  /** Runs every gathered write in one transaction; each write learns its own outcome. */
  function flush(): void {
    flushScheduled = false;
    if (flushTimer) clearTimeout(flushTimer);
    flushTimer = undefined;
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    const d = db;
    const s = statements;
    if (!d || !s) {
      for (const p of batch) p.reject(new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'sqlite queue is closed'));
      return;
    }
    const results: (RouterError | undefined)[] = [];
    try {
      d.transaction(() => {
        const now = Date.now();
        for (const { write } of batch) results.push(apply(s, write, now));
      })();
    } catch (err) {
      const failure = new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', 'sqlite queue commit failed', { cause: err });
      logger.error({ err, batch: batch.length }, 'sqlite queue commit failed');
      for (const p of batch) p.reject(failure);
      return;
    }
    batch.forEach((p, i) => (results[i] ? p.reject(results[i]) : p.resolve()));
    if (batch.some((p) => p.write.op === 'publish' || p.write.op === 'nack')) waiters.wakeAll();
  }

  function apply(s: NonNullable<typeof statements>, write: WriteOp, now: number): RouterError | undefined {
    switch (write.op) {
      case 'publish': {
        const { message } = write;
        s.insert.run(message.key ?? null, message.body, now + (message.delayMs ?? 0), now);
        return undefined;
      }
      case 'ack':
        return s.ack.run(write.seq, write.lease).changes === 1 ? undefined : leaseLost(write.seq);
      case 'nack':
        return s.nack.run(now + write.delayMs, write.seq, write.lease).changes === 1 ? undefined : leaseLost(write.seq);
      case 'extend':
        return s.extend.run(now + write.ms, write.seq, write.lease).changes === 1 ? undefined : leaseLost(write.seq);
    }
  }

  function enqueueWrite(write: WriteOp): Promise<void> {
    if (!db || closing) return Promise.reject(new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'sqlite queue is closed'));
    if (write.op === 'publish' && pending.length >= config.maxPendingPublishes) {
      return Promise.reject(new RouterError('ROUTER_ERR_QUEUE_OVERLOADED', `${pending.length} writes are waiting for a commit`));
    }
    return new Promise<void>((resolve, reject) => {
      pending.push({ write, resolve, reject });
      if (pending.length >= config.batchMaxItems) {
        if (!flushScheduled) {
          flushScheduled = true;
          setImmediate(flush);
        }
      } else if (!flushTimer && !flushScheduled) {
        flushTimer = setTimeout(flush, config.batchWindowMs);
      }
    });
  }

  class SqliteConsumer implements QueueConsumer {
    #closed = false;

    async receive(options: ReceiveOptions): Promise<QueueDelivery[]> {
      const deadline = Date.now() + options.waitMs;
      const max = Math.max(1, Math.min(options.max, capabilities.maxBatch));
      for (;;) {
        if (this.#closed || closing || options.signal?.aborted) return [];
        const { s } = requireOpen();
        const now = Date.now();
        const lease = `${leasePrefix}.${(leaseCounter++).toString(36)}`;
        let rows: ClaimedRow[];
        try {
          rows = claimRelaxed(s, { lease, until: now + config.visibilityTimeoutMs, now, max });
        } catch (err) {
          throw new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', 'sqlite queue claim failed', { cause: err });
        }
        if (rows.length > 0) return rows.map((row) => delivery(row, lease));
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

  function delivery(row: ClaimedRow, lease: string): QueueDelivery {
    let settled = false;
    const settle = (write: WriteOp) => {
      if (settled) return Promise.reject(new RouterError('ROUTER_ERR_ALREADY_SETTLED', `message ${row.seq} was already settled`));
      settled = true;
      return enqueueWrite(write);
    };
    return {
      body: row.body,
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

  return {
    kind: 'sqlite',
    capabilities,

    async connect() {
      if (db) return;
      try {
        mkdirSync(dirname(config.path), { recursive: true });
        const d = new Database(config.path);
        d.pragma('journal_mode = WAL');
        d.pragma(`synchronous = ${config.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
        d.pragma('wal_autocheckpoint = 0'); // checkpoints happen on the checkpointer thread
        d.pragma('busy_timeout = 5000'); // other processes sharing the file hold the write lock only briefly
        d.exec(SCHEMA);
        db = d;
        statements = prepare(d);
      } catch (err) {
        throw new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', `cannot open sqlite queue at ${config.path}`, { cause: err });
      }
      checkpointer = new Worker(new URL('./sqlite-checkpointer.ts', import.meta.url), {
        workerData: { path: config.path, intervalMs: config.checkpointIntervalMs },
      });
      checkpointer.on('error', (err) => logger.error({ err }, 'sqlite queue checkpointer failed'));
      checkpointer.unref();
      logger.info({ path: config.path, synchronous: config.synchronous }, 'sqlite queue open');
    },

    async ping() {
      const { s } = requireOpen();
      s.ping.get();
    },

    producer() {
      return {
        publish: (message) => enqueueWrite({ op: 'publish', message }),
        publishBatch: (messages) => Promise.all(messages.map((message) => enqueueWrite({ op: 'publish', message }))).then(() => {}),
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
        flush();
        if (checkpointer) {
          const worker = checkpointer;
          // Unref'd so an idle queue never keeps the process alive; while close() waits for it, it must, or the
          // process could exit first and close() would never resolve.
          worker.ref();
          const done = new Promise((resolve) => worker.once('exit', resolve));
          worker.postMessage('stop');
          await done;
        }
        db?.close();
        db = undefined;
        statements = undefined;
      })();
      return closing;
    },
  };
}

function leaseLost(seq: number): RouterError {
  return new RouterError('ROUTER_ERR_LEASE_LOST', `lease on message ${seq} expired and was taken over`);
}
