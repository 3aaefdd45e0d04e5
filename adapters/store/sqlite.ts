/**
 * The embedded default store: one SQLite file (WAL) through better-sqlite3, behind Kysely's raw `sql` templates.
 * Kysely serialises access to the single connection; writes run in BEGIN IMMEDIATE transactions so that a second
 * process on the same file (the `dlq` CLI next to a running worker) waits for the write lock (busy_timeout) instead
 * of failing on a stale read snapshot.
 *
 * As in the SQLite queue, WAL checkpoints run on a worker thread with its own connection (the queue's checkpointer),
 * never on the event loop that commits: automatic checkpoints there cost a third of the worker's throughput.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import type { StoreConfig } from '../../config/schema.ts';
import { RouterError } from '../../src/errors.ts';
import type { Store } from './port.ts';
import { sqliteWords } from './sql/migrations.ts';
import { createSqlStore } from './sql/store.ts';

export type SqliteStoreConfig = Extract<StoreConfig, { kind: 'sqlite' }>;

const CHECKPOINT_INTERVAL_MS = 1_000;

export function createSqliteStore(config: SqliteStoreConfig): Store {
  let checkpointer: Worker | undefined;
  // Opened on the first query (connect()), never in this factory.
  const open = async (): Promise<Database.Database> => {
    try {
      mkdirSync(dirname(config.path), { recursive: true });
      const database = new Database(config.path);
      database.pragma('journal_mode = WAL');
      // FULL: an ingest commit must be durable before the queue message it came from is acked.
      database.pragma('synchronous = FULL');
      database.pragma('busy_timeout = 5000');
      database.pragma('wal_autocheckpoint = 0');
      checkpointer = new Worker(new URL('../queue/sqlite-checkpointer.ts', import.meta.url), {
        workerData: { path: config.path, intervalMs: CHECKPOINT_INTERVAL_MS },
      });
      checkpointer.unref();
      return database;
    } catch (err) {
      throw new RouterError('ROUTER_ERR_STORE_UNAVAILABLE', `cannot open sqlite store at ${config.path}`, { cause: err });
    }
  };
  // biome-ignore lint: raw SQL needs no table typing.
  const db = new Kysely<any>({ dialect: new SqliteDialect({ database: open }) });
  let closing: Promise<void> | undefined;
  return createSqlStore({
    kind: 'sqlite',
    db,
    words: sqliteWords,
    transaction: (fn) =>
      db.connection().execute(async (conn) => {
        await sql`BEGIN IMMEDIATE`.execute(conn);
        try {
          const result = await fn(conn);
          await sql`COMMIT`.execute(conn);
          return result;
        } catch (err) {
          await sql`ROLLBACK`.execute(conn).catch(() => {});
          throw err;
        }
      }),
    relaxed: (fn) =>
      db.connection().execute(async (conn) => {
        await sql`PRAGMA synchronous = OFF`.execute(conn);
        try {
          return await fn(conn);
        } finally {
          await sql`PRAGMA synchronous = FULL`.execute(conn);
        }
      }),
    close: () =>
      (closing ??= (async () => {
        await db.destroy();
        const worker = checkpointer;
        if (!worker) return;
        worker.ref(); // keep the process alive until the final checkpoint is done
        const exited = new Promise((resolve) => worker.once('exit', resolve));
        worker.postMessage('stop');
        await exited;
      })()),
  });
}
