/**
 * The store contract over PostgreSQL: every store gets a schema of its own (search_path), dropped once the whole
 * suite passed and kept (names printed) when it failed. Needs a server at POSTGRES_URL
 * (default postgres://postgres@127.0.0.1:5432/test).
 */
import pg from 'pg';
import type { Store } from '../../adapters/store/port.ts';
import { createPostgresStore } from '../../adapters/store/postgres.ts';
import { postgresWords } from '../../adapters/store/sql/migrations.ts';
import { Store as StoreConfig } from '../../config/schema.ts';
import { backendAvailable, env } from '../helpers/backends.ts';
import { sqlSchemaV1 } from '../helpers/store.ts';
import { runStoreContract, type StoreHarness } from './store.contract.ts';

const prefix = `wr_store_${process.pid}_`;
const schemas = new WeakMap<Store, string>();
const created: string[] = [];
let n = 0;

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: env.postgresUrl, connectionTimeoutMillis: 3_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function config(schema: string) {
  const parsed = StoreConfig.parse({ kind: 'postgres', url: env.postgresUrl, schema, poolSize: 4 });
  if (parsed.kind !== 'postgres') throw new Error('unreachable');
  return parsed;
}

const harness: StoreHarness = {
  name: 'postgres',

  async make(options) {
    const schema = `${prefix}${++n}`;
    created.push(schema);
    const store = createPostgresStore(config(schema));
    schemas.set(store, schema);
    await store.connect();
    if (options?.migrated ?? true) await store.migrate();
    return store;
  },

  async writeSchemaVersion(store, version) {
    const schema = schemas.get(store);
    if (!schema) throw new Error('not a store from this harness');
    await admin((c) => c.query(`INSERT INTO "${schema}".schema_migrations (version, applied_at) VALUES ($1, $2)`, [version, Date.now()]));
  },

  async writeSchemaV1(store) {
    const schema = schemas.get(store);
    if (!schema) throw new Error('not a store from this harness');
    await admin(async (c) => {
      await c.query('BEGIN');
      await c.query(`SET LOCAL search_path TO "${schema}"`);
      for (const statement of sqlSchemaV1(postgresWords)) await c.query(statement);
      await c.query('COMMIT');
    });
  },

  async close({ passed }) {
    if (passed) await admin(async (c) => {
      for (const schema of created) await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    });
    else process.stderr.write(`store contract (postgres): failing state kept in schemas ${prefix}*\n`);
  },
};

if (await backendAvailable('postgres', () => admin((c) => c.query('SELECT 1')).then(() => {}))) runStoreContract(harness);
