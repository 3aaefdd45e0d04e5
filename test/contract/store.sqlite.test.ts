/**
 * The store contract over the SQLite store: every store gets its own temp dir (one database file, its WAL and SHM),
 * so tests share nothing. The dirs are removed once the whole suite passed and kept (their parent printed) when it
 * failed.
 *
 * `writeSchemaVersion` opens a second better-sqlite3 connection on the same file, as a newer release's
 * `webhook-router migrate` would, and records a version this release does not know.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { Store } from '../../adapters/store/port.ts';
import { latestVersion, migrations, render, sqliteWords } from '../../adapters/store/sql/migrations.ts';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import { T0 } from '../helpers/store.ts';
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

  async close({ passed }) {
    if (passed) rmSync(root, { recursive: true, force: true });
    else process.stderr.write(`store contract (sqlite): failing state kept in ${root}\n`);
  },
};

runStoreContract(harness);

describe('sqlite store specifics', () => {
  test('a v1 database with data migrates to the latest schema and keeps finding deliveries by event and attempts by delivery', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'store-upgrade-'));
    const path = join(dir, 'router.db');
    const v1 = new Database(path);
    v1.pragma('journal_mode = WAL');
    v1.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    for (const statement of migrations[0]?.statements ?? []) v1.exec(render(statement, sqliteWords));
    v1.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (1, ?)').run(T0);
    v1.prepare(
      `INSERT INTO events (id, source, source_kind, dedupe_key, received_at, headers, routing, body, created_at)
       VALUES ('evt_old', 'github', 'github', 'k', ?, '{}', '{"event":"push"}', x'7b7d', ?)`,
    ).run(T0, T0);
    v1.prepare(
      `INSERT INTO deliveries (id, event_id, event_seq, subscriber_id, status, attempts, cycle, next_attempt_at, created_at, updated_at)
       VALUES ('dlv_old', 'evt_old', (SELECT seq FROM events WHERE id = 'evt_old'), 'sub_a', 'pending', 0, 1, ?, ?, ?)`,
    ).run(T0, T0, T0);
    v1.prepare(
      `INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, outcome, code, status, response)
       VALUES ('dlv_old', 1, ?, 12, 'retryable', 'http_5xx', 503, 'busy')`,
    ).run(T0);
    v1.close();

    const store = createSqliteStore({ kind: 'sqlite', path });
    try {
      await store.connect();
      assert.deepEqual(await store.schemaStatus(), { current: 1, latest: latestVersion });
      await store.migrate();
      assert.deepEqual(await store.schemaStatus(), { current: latestVersion, latest: latestVersion });
      assert.deepEqual((await store.listDeliveries({ event: 'evt_old' }, { limit: 10 })).items.map((d) => d.id), ['dlv_old']);
      // The attempt recorded under v1 is found through the seq the migration gave it.
      assert.deepEqual(
        (await store.getDelivery('dlv_old'))?.attemptLog.map((a) => [a.attempt, a.status, a.response]),
        [[1, 503, 'busy']],
      );
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
