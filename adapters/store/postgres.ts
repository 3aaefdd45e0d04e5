/**
 * The PostgreSQL store: the shared SQL store over a pg pool. Due deliveries are claimed with
 * `FOR UPDATE SKIP LOCKED`, so any number of workers share the schedule without waiting on each other; migrations
 * take an advisory lock, so several pods may run `migrate` at once.
 *
 * `schema` selects the PostgreSQL schema (search_path) the tables live in: one database can hold several routers,
 * and tests isolate themselves with a schema each.
 */
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { StoreConfig } from '../../config/schema.ts';
import { RouterError } from '../../src/errors.ts';
import type { Store } from './port.ts';
import { postgresWords } from './sql/migrations.ts';
import { createSqlStore } from './sql/store.ts';

export type PostgresStoreConfig = Extract<StoreConfig, { kind: 'postgres' }>;

export function createPostgresStore(config: PostgresStoreConfig): Store {
  // The pool connects lazily: nothing touches the network before connect().
  const pool = new pg.Pool({
    connectionString: config.url,
    max: config.poolSize,
    connectionTimeoutMillis: config.connectTimeoutMs,
    // Every connection uses the configured schema; quoting keeps odd names literal.
    options: `-c search_path=${JSON.stringify(config.schema)}`,
  });
  // biome-ignore lint: raw SQL needs no table typing.
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  let closing: Promise<void> | undefined;
  const store = createSqlStore({
    kind: 'postgres',
    db,
    words: postgresWords,
    transaction: (fn) => db.transaction().execute(fn),
    relaxed: (fn) =>
      db.transaction().execute(async (trx) => {
        await sql`SET LOCAL synchronous_commit = off`.execute(trx);
        return fn(trx);
      }),
    close: () => (closing ??= db.destroy()),
  });
  return {
    ...store,
    async connect() {
      try {
        const { rows } = await sql`SELECT 1 FROM pg_namespace WHERE nspname = ${config.schema}`.execute(db);
        // Create the schema only when missing, so a role without CREATE on the database works with an existing one.
        if (rows.length === 0) await sql.raw(`CREATE SCHEMA IF NOT EXISTS ${JSON.stringify(config.schema)}`).execute(db);
      } catch (err) {
        // Two processes creating it at once: the loser sees a unique violation, and the schema exists.
        if ((err as { code?: string }).code === '23505') return;
        throw new RouterError('ROUTER_ERR_STORE_UNAVAILABLE', 'cannot reach PostgreSQL', { cause: err });
      }
    },
  };
}
