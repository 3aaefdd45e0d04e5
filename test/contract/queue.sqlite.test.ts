/**
 * The queue contract over the SQLite adapter: one database file per namespace in a fresh temp dir, removed once the
 * suite passed and kept (its path printed) when it failed. Two adapters on one file behave as two worker processes.
 *
 * After the contract, SQLite-only checks that the generic suite cannot express.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { QueueAdapter } from '../../adapters/queue/port.ts';
import { createSqliteQueue } from '../../adapters/queue/sqlite.ts';
import { startCheckpointer } from '../../adapters/sqlite-checkpointer.ts';
import { Queue } from '../../config/schema.ts';
import { type QueueHarness, runQueueContract } from './queue.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'queue-contract-sqlite-'));
const opened = new Set<QueueAdapter>();

function sqliteConfig(path: string, visibilityTimeoutMs: number) {
  // Through the real schema: synchronous 'full', group commit, poll interval and checkpointer as in production.
  const config = Queue.parse({ kind: 'sqlite', path, visibilityTimeoutMs });
  if (config.kind !== 'sqlite') throw new Error('unreachable');
  return config;
}

const harness: QueueHarness = {
  name: 'sqlite',
  capabilities: {
    maxBatch: 1_000,
    maxMessageBytes: 64 * 1024 * 1024,
    delayedPublish: true,
    nackRedelivery: 'immediate',
    orderingKey: false,
    durability: 'power-loss',
  },
  persistent: true,
  sharedAcrossAdapters: true,
  countsReceives: true,
  nackDelay: true,
  extendDeadline: true,
  visibilityTimeoutMs: 400,
  slackMs: 400,

  async open(ns, overrides) {
    const adapter = createSqliteQueue(sqliteConfig(join(dir, `${ns}.db`), overrides?.visibilityTimeoutMs ?? 400));
    opened.add(adapter);
    await adapter.connect();
    return adapter;
  },

  async close({ passed }) {
    await Promise.all([...opened].map((a) => a.close()));
    opened.clear();
    if (passed) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`queue contract (sqlite): failing state kept in ${dir}\n`);
  },
};

runQueueContract(harness);

describe('sqlite queue specifics', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'queue-sqlite-close-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  test('close() resolves even when nothing else keeps the event loop alive', { timeout: 15_000 }, async () => {
    // In a child process nothing but the adapter holds the event loop, as at the end of a CLI command or a shutdown.
    const moduleUrl = new URL('../../adapters/queue/sqlite.ts', import.meta.url).href;
    const config = sqliteConfig(join(scratch, 'q.db'), 1_000);
    const script = `
      const { createSqliteQueue } = await import(${JSON.stringify(moduleUrl)});
      const queue = createSqliteQueue(${JSON.stringify(config)});
      await queue.connect();
      await queue.producer().publish({ body: new Uint8Array([1, 2, 3]) });
      await queue.close();
      process.stdout.write('closed\\n');
    `;
    // A file, not --eval: `--input-type` would be inherited by the adapter's worker threads, which load files.
    const file = join(scratch, 'close-check.mjs');
    writeFileSync(file, script);
    const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(stdout, 'closed\n', `close() never resolved; the process exited with code ${code}: ${stderr.trim()}`);
    assert.equal(code, 0);
  });

  test('a file written with bodies inline (one table) is moved to the two-table layout and loses nothing', async () => {
    const path = join(scratch, 'one-table.db');
    const old = new Database(path);
    old.pragma('journal_mode = WAL');
    // The layout of releases up to 2 December 2026, with one message due and one leased by a consumer that died.
    old.exec(`CREATE TABLE queue_messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, body BLOB NOT NULL,
      visible_at INTEGER NOT NULL, lease TEXT, receive_count INTEGER NOT NULL DEFAULT 0, published_at INTEGER NOT NULL)`);
    const insert = old.prepare('INSERT INTO queue_messages (key, body, visible_at, lease, receive_count, published_at) VALUES (?, ?, ?, ?, ?, ?)');
    insert.run('o/r', Buffer.from('first'), 0, null, 0, 1);
    insert.run(null, Buffer.from('second'), Date.now() - 1, 'gone.1', 2, 2);
    old.close();

    const queue = createSqliteQueue(sqliteConfig(path, 1_000));
    await queue.connect();
    try {
      const got = await queue.consumer().receive({ max: 10, waitMs: 0 });
      assert.deepEqual(
        got.map((d) => [Buffer.from(d.body).toString(), d.key, d.receiveCount]),
        [['first', 'o/r', 1], ['second', undefined, 3]],
      );
      await Promise.all(got.map((d) => d.ack()));
      await queue.producer().publish({ body: new Uint8Array([9]) });
      const [next] = await queue.consumer().receive({ max: 10, waitMs: 1_000 });
      assert.equal(next?.brokerId, '3', 'sequence numbers go on after the moved messages');
      await next?.ack();
    } finally {
      await queue.close();
    }
    const db = new Database(path, { readonly: true });
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'queue_%' ORDER BY name").pluck().all();
    const left = db.prepare('SELECT (SELECT count(*) FROM queue_entries) + (SELECT count(*) FROM queue_bodies)').pluck().get();
    db.close();
    assert.deepEqual(tables, ['queue_bodies', 'queue_entries']);
    assert.equal(left, 0, 'an ack deletes the entry and its body');
  });

  test('a new file gets 8 KiB pages; a file written with 4 KiB pages keeps them and works as before', async () => {
    const pageSize = (path: string) => {
      const db = new Database(path, { readonly: true });
      try {
        return db.pragma('page_size', { simple: true });
      } finally {
        db.close();
      }
    };
    const older = join(scratch, 'pages-4k.db');
    const old = new Database(older);
    old.pragma('journal_mode = WAL'); // what releases before 8 KiB pages left behind: SQLite's default page size
    old.close();
    for (const [path, expected] of [[join(scratch, 'pages-new.db'), 8_192], [older, 4_096]] as const) {
      const queue = createSqliteQueue(sqliteConfig(path, 1_000));
      await queue.connect();
      try {
        await queue.producer().publish({ body: new Uint8Array(20_000).fill(7) });
        const [got] = await queue.consumer().receive({ max: 10, waitMs: 1_000 });
        assert.equal(got?.body.byteLength, 20_000);
        await got?.ack();
      } finally {
        await queue.close();
      }
      assert.equal(pageSize(path), expected, path);
    }
  });

  test('a message whose body row is missing is handed out with an empty body (poison to the consumer), not a failed claim', async () => {
    const path = join(scratch, 'no-body.db');
    const queue = createSqliteQueue(sqliteConfig(path, 1_000));
    await queue.connect();
    try {
      await queue.producer().publish({ body: new Uint8Array([1, 2, 3]) });
      await queue.producer().publish({ body: new Uint8Array([4]) });
      const other = new Database(path);
      other.pragma('busy_timeout = 5000');
      other.prepare('DELETE FROM queue_bodies WHERE seq = (SELECT MIN(seq) FROM queue_bodies)').run();
      other.close();
      const got = await queue.consumer().receive({ max: 10, waitMs: 1_000 });
      assert.deepEqual(got.map((d) => [...d.body]), [[], [4]]);
      await Promise.all(got.map((d) => d.ack()));
    } finally {
      await queue.close();
    }
  });

  test('the checkpointer keeps the WAL bounded under a write load that never pauses', { timeout: 30_000 }, async () => {
    // A PASSIVE checkpoint alone never lets SQLite rewind the WAL while commits keep coming; the checkpointer must.
    const path = join(scratch, 'wal-bound.db');
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('wal_autocheckpoint = 0');
    db.pragma('busy_timeout = 5000');
    const limit = 2 * 1024 * 1024;
    db.pragma(`journal_size_limit = ${limit}`); // as the queue's and the store's writer connections set it
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)');
    const checkpointer = startCheckpointer({ path, intervalMs: 20, walLimitBytes: limit }, (err) => assert.fail(err));
    const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
    const commit = db.transaction((rows: number) => {
      for (let i = 0; i < rows; i++) insert.run(Buffer.alloc(8_192, i));
    });
    const walBytes = () => statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0;
    let peak = 0;
    let written = 0;
    let last = 0;
    let shrank = false;
    try {
      // The thread's first tick can come late on a loaded machine (it loads TypeScript and opens the file): the WAL
      // grows until then, so the peak counts from the first half second on.
      await checkpointer.ready;
      const start = Date.now();
      const until = start + 2_000;
      while (Date.now() < until) {
        commit(16); // 128 KiB per commit, one commit per turn of the event loop
        written += 16 * 8_192;
        const bytes = walBytes();
        if (bytes < last) shrank = true;
        last = bytes;
        if (Date.now() - start > 500) peak = Math.max(peak, bytes);
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      await checkpointer.stop();
      db.close();
    }
    assert.ok(written > 10 * limit, `only ${written} bytes written; the load was too light to tell`);
    // Never rewound, the WAL file only grows: a rewind lets the next commit cut it back to the limit. How far it
    // grows in between depends on how much CPU the checkpointer gets (a loaded CI machine gives it little), so the
    // size bound is loose: never rewound, the WAL would be as large as everything written.
    assert.ok(shrank, `the WAL never shrank: it reached ${peak} bytes after ${written} bytes written (limit ${limit})`);
    assert.ok(peak < written / 2, `the WAL reached ${peak} bytes after ${written} bytes written (limit ${limit})`);
  });
});
