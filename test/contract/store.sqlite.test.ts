/**
 * The store contract over the SQLite store: every store gets its own temp dir (one database file, its WAL and SHM),
 * so tests share nothing. The dirs are removed once the whole suite passed and kept (their parent printed) when it
 * failed.
 *
 * `writeSchemaVersion` opens a second better-sqlite3 connection on the same file, as a newer release's
 * `webhook-router migrate` would, and records a version this release does not know.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { Store } from '../../adapters/store/port.ts';
import { sqliteWords } from '../../adapters/store/sql/migrations.ts';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import { sqlSchemaV1 } from '../helpers/store.ts';
import { runStoreContract, type StoreHarness } from './store.contract.ts';

const root = mkdtempSync(join(tmpdir(), 'store-contract-sqlite-'));
const paths = new WeakMap<Store, string>();

const harness: StoreHarness = {
  name: 'sqlite',

  async make(options) {
    const path = join(mkdtempSync(join(root, 'store-')), 'router.db');
    const store = createSqliteStore({ kind: 'sqlite', path });
    paths.set(store, path);
    await store.connect();
    if (options?.migrated ?? true) await store.migrate();
    return store;
  },

  async writeSchemaVersion(store, version) {
    const path = paths.get(store);
    if (!path) throw new Error('not a store from this harness');
    const database = new Database(path);
    try {
      database.pragma('busy_timeout = 5000');
      database.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(version, Date.now());
    } finally {
      database.close();
    }
  },

  async writeSchemaV1(store) {
    const path = paths.get(store);
    if (!path) throw new Error('not a store from this harness');
    const database = new Database(path);
    try {
      database.pragma('busy_timeout = 5000');
      database.transaction(() => {
        for (const statement of sqlSchemaV1(sqliteWords)) database.exec(statement);
      })();
    } finally {
      database.close();
    }
  },

  async close({ passed }) {
    if (passed) rmSync(root, { recursive: true, force: true });
    else process.stderr.write(`store contract (sqlite): failing state kept in ${root}\n`);
  },
};

runStoreContract(harness);

