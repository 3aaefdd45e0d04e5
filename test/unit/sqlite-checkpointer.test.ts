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

test('a reader holding an old snapshot: ticks copy up to it, and catch up once it is gone', { timeout: 10_000 }, async () => {
  // With a reader pinning the WAL no PASSIVE checkpoint copies every frame, so SQLite never fsyncs the database file
  // itself: these ticks run the checkpointer's own fdatasync. That the fdatasync happens is not observable from here
  // (it changes no byte of the file); strace showed it (benchmarks/RESULTS.md, 3 December). What this pins is that
  // partial checkpoints, flushed that way, neither fail nor stop the catch-up.
  const w = walFile('c.db');
  const insert = w.prepare('INSERT INTO t VALUES (?)');
  for (let i = 0; i < 16; i++) insert.run(Buffer.alloc(64 * 1024, i));
  const reader = new Database(join(dir, 'c.db'));
  reader.prepare('BEGIN').run();
  reader.prepare('SELECT count(*) FROM t').get(); // the read transaction now holds its snapshot
  for (let i = 0; i < 16; i++) insert.run(Buffer.alloc(64 * 1024, i));

  const errors: Error[] = [];
  const c = startCheckpointer({ path: join(dir, 'c.db'), intervalMs: 10, walLimitBytes: 64 * 1024 * 1024 }, (e) => errors.push(e));
  await c.ready;
  const grows = async (bytes: number) => {
    const until = Date.now() + 5_000;
    while (Date.now() < until && statSync(join(dir, 'c.db')).size < bytes) await new Promise((r) => setTimeout(r, 20));
    return statSync(join(dir, 'c.db')).size;
  };
  const pinned = await grows(16 * 64 * 1024);
  assert.ok(pinned >= 16 * 64 * 1024 && pinned < 32 * 64 * 1024, `copied ${pinned} bytes with the reader's snapshot at half the WAL`);
  reader.prepare('COMMIT').run();
  assert.ok((await grows(32 * 64 * 1024)) >= 32 * 64 * 1024, 'the rest was never copied once the reader was gone');
  await c.stop();
  reader.close();
  w.close();
  assert.deepEqual(errors, []);
});
