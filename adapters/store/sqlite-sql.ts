/**
 * The SQL store of sql/store.ts over one better-sqlite3 connection: how the file is opened, the statement cache and
 * the two kinds of transaction. The store thread (sqlite-thread.ts) runs it; benchmarks/store/wal.ts drives it
 * directly, to measure the store's own statements.
 */
import Database from 'better-sqlite3';
import { Kysely, type SqliteDatabase, SqliteDialect, type SqliteStatement, sql } from 'kysely';
import { WAL_LIMIT_BYTES } from '../sqlite-checkpointer.ts';
import type { Store } from './port.ts';
import { sqliteWords } from './sql/migrations.ts';
import { createSqlStore } from './sql/store.ts';

/** Opens the store's file as the store thread needs it: WAL, durable commits, checkpoints left to the checkpointer. */
export function openSqliteStoreFile(path: string): Database.Database {
  const database = new Database(path);
  database.pragma('busy_timeout = 5000');
  database.pragma('journal_mode = WAL');
  // FULL: an ingest commit must be durable before the queue message it came from is acked.
  database.pragma('synchronous = FULL');
  database.pragma('wal_autocheckpoint = 0');
  // When a checkpoint has rewound the WAL, the next commit cuts the file back to this size.
  database.pragma(`journal_size_limit = ${WAL_LIMIT_BYTES}`);
  return database;
}

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

/** `open` runs at the first query (Kysely opens lazily); a throw there fails that query. */
export function createSqliteSqlStore(open: () => Database.Database): Store {
  // biome-ignore lint: raw SQL needs no table typing.
  const db = new Kysely<any>({ dialect: new SqliteDialect({ database: async () => withStatementCache(open()) }) });
  return createSqlStore({
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
    // The checkpointer's last checkpoint (TRUNCATE) left a small WAL behind (sqlite.ts stops it first).
    close: () => db.destroy(),
  });
}
