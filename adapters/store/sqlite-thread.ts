/**
 * The thread that runs the SQLite store (see sqlite.ts): the SQL store of sql/store.ts over one better-sqlite3
 * connection, driven by the store calls the main thread posts. Each call runs to its end here, transactions and
 * their fsync included, before the next message is taken (better-sqlite3 is synchronous, so Kysely's awaits are
 * only microtasks), and is answered with its result or its error.
 *
 * WAL checkpoints run on a second thread with their own connection (the queue's checkpointer): automatic
 * checkpoints on this connection would stall every store call behind a copy of the WAL into the database file.
 */
import { parentPort, Worker, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { Kysely, type SqliteDatabase, SqliteDialect, type SqliteStatement, sql } from 'kysely';
import { RouterError } from '../../src/errors.ts';
import type { Store } from './port.ts';
import { sqliteWords } from './sql/migrations.ts';
import { createSqlStore } from './sql/store.ts';

export type StoreMethod = Exclude<keyof Store, 'kind'>;
export type ThreadRequest = { readonly id: number; readonly method: StoreMethod; readonly args: readonly unknown[] };
export type ThreadReply =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly error: ThreadError };
export interface ThreadError {
  readonly message: string;
  /** A RouterError code, or SQLite's (`SQLITE_BUSY` …). */
  readonly code: string | undefined;
  readonly routerError: boolean;
}

/** As the queue's default: short, so that each checkpoint's fsync of the database file stays small. */
const CHECKPOINT_INTERVAL_MS = 50;

const { path } = workerData as { path: string };
const port = parentPort;
if (!port) throw new Error('sqlite-thread.ts runs only as a worker thread');

let checkpointer: Worker | undefined;
const open = async (): Promise<SqliteDatabase> => {
  try {
    const database = new Database(path);
    database.pragma('busy_timeout = 5000');
    database.pragma('journal_mode = WAL');
    // FULL: an ingest commit must be durable before the queue message it came from is acked.
    database.pragma('synchronous = FULL');
    database.pragma('wal_autocheckpoint = 0');
    // When a checkpoint has rewound the WAL, this connection's next commit cuts the file back to this size.
    database.pragma('journal_size_limit = 67108864'); // 64 MiB, the checkpointer's default walLimitBytes
    checkpointer = new Worker(new URL('../queue/sqlite-checkpointer.ts', import.meta.url), {
      workerData: { path, intervalMs: CHECKPOINT_INTERVAL_MS },
    });
    return withStatementCache(database);
  } catch (err) {
    throw new RouterError('ROUTER_ERR_STORE_UNAVAILABLE', `cannot open sqlite store at ${path}`, { cause: err });
  }
};
/** Past this many cached statements the cache starts over (multi-row statements come in many lengths). */
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
    await db.destroy();
    const worker = checkpointer;
    if (!worker) return;
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    worker.postMessage('stop'); // a last checkpoint, then it exits
    await exited;
  },
});

port.on('message', async ({ id, method, args }: ThreadRequest) => {
  let reply: ThreadReply;
  try {
    const fn = store[method] as (...a: readonly unknown[]) => Promise<unknown>;
    reply = { id, ok: true, value: await fn(...args) };
  } catch (err) {
    reply = { id, ok: false, error: describe(err) };
  }
  port.postMessage(reply);
  if (method === 'close' && reply.ok) port.close();
});

function describe(err: unknown): ThreadError {
  const e = err as { message?: unknown; code?: unknown; cause?: { message?: unknown } };
  const routerError = err instanceof RouterError;
  // A RouterError's own message names the operation; its cause says what SQLite said.
  const cause = routerError && e.cause?.message !== undefined ? `: ${String(e.cause.message)}` : '';
  return { message: `${String(e?.message ?? err)}${cause}`, code: typeof e?.code === 'string' ? e.code : undefined, routerError };
}
