/**
 * The thread that runs the SQLite store (see sqlite.ts): the SQL store of sql/store.ts over one better-sqlite3
 * connection, driven by the store calls the main thread posts. Each call runs to its end here, transactions and
 * their fsync included, before the next message is taken (better-sqlite3 is synchronous, so Kysely's awaits are
 * only microtasks), and is answered with its result or its error.
 *
 * WAL checkpoints run on the process's checkpointer thread (../sqlite-checkpointer.ts, started by sqlite.ts), as the
 * queue's do. They used to run here between calls, and a checkpoint took 14 ms of every 50 (wall time, mostly the
 * database file's fsync) in the end-to-end benchmark: every ingest, claim and completion waited behind it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { Kysely, type SqliteDatabase, SqliteDialect, type SqliteStatement, sql } from 'kysely';
import { RouterError } from '../../src/errors.ts';
import { type Reply, type ReplyError, replyError } from '../thread-link.ts';
import type { Store } from './port.ts';
import { sqliteWords } from './sql/migrations.ts';
import { createSqlStore } from './sql/store.ts';

export type StoreMethod = Exclude<keyof Store, 'kind'>;
export type ThreadRequest = { readonly id: number; readonly method: StoreMethod; readonly args: readonly unknown[] };

export interface StoreThreadOptions {
  readonly path: string;
  /** When a checkpoint has rewound the WAL, the next commit cuts the file back to this size. */
  readonly walLimitBytes: number;
}

const { path, walLimitBytes } = workerData as StoreThreadOptions;
const port = parentPort;
if (!port) throw new Error('sqlite-thread.ts runs only as a worker thread');

const open = async (): Promise<SqliteDatabase> => {
  try {
    const database = new Database(path);
    database.pragma('busy_timeout = 5000');
    database.pragma('journal_mode = WAL');
    // FULL: an ingest commit must be durable before the queue message it came from is acked.
    database.pragma('synchronous = FULL');
    database.pragma('wal_autocheckpoint = 0');
    database.pragma(`journal_size_limit = ${walLimitBytes}`);
    return withStatementCache(database);
  } catch (err) {
    throw new RouterError('ROUTER_ERR_STORE_UNAVAILABLE', `cannot open sqlite store at ${path}`, { cause: err });
  }
};
/**
 * A guard: the store's lists are cut or padded to a few row counts (sql/store.ts, chunker()), so its texts number
 * well under this and the cache is never cleared in steady state.
 */
const STATEMENT_CACHE_MAX = 500;

/**
 * Kysely's SQLite driver prepares every query anew; preparing a multi-row INSERT costs about as much as running it.
 * The store's SQL is a fixed set of texts (apart from the row counts of batches), so statements are kept by text.
 */
function withStatementCache(database: Database.Database): SqliteDatabase {
  const statements = new Map<string, Database.Statement>();
  return {
    close: () => database.close(),
    prepare: (text: string) => {
      let s = statements.get(text);
      if (!s) {
        if (statements.size >= STATEMENT_CACHE_MAX) statements.clear();
        s = database.prepare(text);
        statements.set(text, s);
      }
      return s as unknown as SqliteStatement;
    },
  };
}

// biome-ignore lint: raw SQL needs no table typing.
const db = new Kysely<any>({ dialect: new SqliteDialect({ database: open }) });

const store = createSqlStore({
  kind: 'sqlite',
  db,
  words: sqliteWords,
  // BEGIN IMMEDIATE: a second process on the same file (the `dlq` CLI beside a running worker) then waits for the
  // write lock (busy_timeout) instead of failing on a stale read snapshot.
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
  close: async () => {
    // The checkpointer's last checkpoint (TRUNCATE) left a small WAL behind (sqlite.ts stops it first).
    await db.destroy();
  },
});

port.on('message', async ({ id, method, args }: ThreadRequest) => {
  let reply: Reply;
  try {
    const fn = store[method] as (...a: readonly unknown[]) => Promise<unknown>;
    reply = { id, ok: true, value: await fn(...args) };
  } catch (err) {
    reply = { id, ok: false, error: describe(err) };
  }
  port.postMessage(reply);
  if (method === 'close' && reply.ok) port.close();
});

function describe(err: unknown): ReplyError {
  // A RouterError's own message names the operation; its cause says what SQLite said.
  const cause = (err as { cause?: { message?: unknown } })?.cause?.message;
  const routerError = err instanceof RouterError;
  const e = replyError(err, routerError);
  return routerError && cause !== undefined ? { ...e, message: `${e.message}: ${String(cause)}` } : e;
}
