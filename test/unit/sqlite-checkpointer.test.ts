/**
 * The process's SQLite checkpointer (adapters/sqlite-checkpointer.ts): one thread for several files, each let go on
 * its own, and a file it cannot open reported without holding anyone up.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { startCheckpointer } from '../../adapters/sqlite-checkpointer.ts';

const dir = mkdtempSync(join(tmpdir(), 'checkpointer-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function walFile(name: string): Database.Database {
  const db = new Database(join(dir, name));
  db.pragma('journal_mode = WAL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE t (v BLOB)');
  return db;
}

test('two files on one thread: each is checkpointed, and letting one go leaves the other checkpointed', { timeout: 10_000 }, async () => {
  const a = walFile('a.db');
  const b = walFile('b.db');
  const errors: Error[] = [];
  const ca = startCheckpointer({ path: join(dir, 'a.db'), intervalMs: 10, walLimitBytes: 1024 * 1024 }, (e) => errors.push(e));
  const cb = startCheckpointer({ path: join(dir, 'b.db'), intervalMs: 10, walLimitBytes: 1024 * 1024 }, (e) => errors.push(e));
  await Promise.all([ca.ready, cb.ready]);
  await ca.stop();
  // a is let go: its last checkpoint was a TRUNCATE, so its WAL is empty until the next write.
  assert.equal(statSync(join(dir, 'a.db-wal')).size, 0);
  b.prepare('INSERT INTO t VALUES (?)').run(Buffer.alloc(64 * 1024));
  const until = Date.now() + 5_000;
  // b is still served: what was written gets copied into the database file without this connection's help.
  while (Date.now() < until && statSync(join(dir, 'b.db')).size < 64 * 1024) await new Promise((r) => setTimeout(r, 20));
  assert.ok(statSync(join(dir, 'b.db')).size >= 64 * 1024, 'b.db was never checkpointed');
  await cb.stop();
  a.close();
  b.close();
  assert.deepEqual(errors, []);
});

test('a file it cannot open rejects ready and reports it; stop() still resolves', { timeout: 10_000 }, async () => {
  const errors: Error[] = [];
  const c = startCheckpointer({ path: join(dir, 'missing', 'x.db'), intervalMs: 10, walLimitBytes: 1024 }, (e) => errors.push(e));
  await assert.rejects(c.ready, /cannot checkpoint/);
  await c.stop();
  assert.equal(errors.length, 1);
});
