/**
 * The thread that owns the SQLite queue's connection (see sqlite.ts). The main thread posts a group commit (every
 * write gathered in one window), a claim or a ping; each runs to its end here, fsync included, and is answered with
 * its outcome. Messages are taken in order, so commits land in the order they were posted.
 *
 * Bodies cross the thread boundary packed end to end in one ArrayBuffer that is transferred, not cloned: cloning
 * each body (and the object around it) cost a fifth of the receiver's event loop in the ingest benchmark.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { type Reply, replyError } from '../thread-link.ts';
import { pack } from './pack.ts';

type Settle =
  | { readonly op: 'ack'; readonly seq: number; readonly lease: string }
  | { readonly op: 'nack'; readonly seq: number; readonly lease: string; readonly delayMs: number }
  | { readonly op: 'extend'; readonly seq: number; readonly lease: string; readonly ms: number };

export type WriteOp = { readonly op: 'publish'; readonly key: string | null; readonly body: Uint8Array; readonly delayMs: number } | Settle;

/** A write as posted: a publish names its body's place in the commit's `bodies` buffer. */
export type PostedWrite = { readonly op: 'publish'; readonly key: string | null; readonly offset: number; readonly length: number; readonly delayMs: number } | Settle;

export type ThreadRequest =
  | { readonly id: number; readonly op: 'commit'; readonly writes: readonly PostedWrite[]; readonly bodies: ArrayBuffer }
  | { readonly id: number; readonly op: 'claim'; readonly lease: string; readonly visibilityMs: number; readonly max: number }
  | { readonly id: number; readonly op: 'ping' }
  | { readonly id: number; readonly op: 'close' };

export interface ClaimedRow {
  readonly seq: number;
  readonly key: string | null;
  readonly receive_count: number;
  /** Where its body sits in the claim's `bodies` buffer. */
  readonly offset: number;
  readonly length: number;
}

export interface Claimed {
  readonly rows: readonly ClaimedRow[];
  readonly bodies: ArrayBuffer;
}

export interface ThreadOptions {
  readonly path: string;
  readonly synchronous: 'full' | 'normal';
  /** When a checkpoint has rewound the WAL, the next commit cuts the file back to this size. */
  readonly walLimitBytes: number;
}

/**
 * A message's state and its body live in two tables. A claim rewrites its row (lease, visible_at, receive_count),
 * and SQLite rewrites a changed row whole, overflow pages included: with the body inline, every claim wrote the 8 KB
 * body to the WAL again and the checkpointer copied it again (the queue thread wrote 21 KB per event end to end).
 * Bodies are written once and deleted once.
 */
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS queue_entries (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT,
    visible_at    INTEGER NOT NULL,
    lease         TEXT,
    receive_count INTEGER NOT NULL DEFAULT 0,
    published_at  INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS queue_entries_visible ON queue_entries (visible_at, seq);
  CREATE TABLE IF NOT EXISTS queue_bodies (
    seq  INTEGER PRIMARY KEY,
    body BLOB NOT NULL
  );
`;

const NO_BODY = new Uint8Array(0);

/**
 * The page size of a file this thread creates: twice SQLite's default. An 8.3 KB push body then takes one full 8 KiB
 * overflow page and a kilobyte of a shared leaf instead of two 4 KiB overflow pages and a leaf share, so a commit
 * writes, and the checkpointer copies, about half the WAL frames (two `pwrite`s and a copy each): ingest went from
 * about 100 to 89-90 µs per request (benchmarks/RESULTS.md, 4 December 2026, third session). Larger pages were
 * measured too. 64 KiB pages, seven bodies to a page, cost 84-87 µs, but every small commit rewrites the partly
 * filled last page and every claim and ack a 64 KiB page of small rows: end to end the disk took 74 KB per event
 * against 45 KB at 4 KiB, and 46 KB at 8 KiB. 16 KiB pages hold one such body and leave the rest unused: slower than
 * 4 KiB.
 */
const PAGE_BYTES = 8_192;

/** A file written by a release that kept bodies inline (one table, queue_messages) is moved over once, at open. */
const FROM_ONE_TABLE = `
  INSERT INTO queue_entries (seq, key, visible_at, lease, receive_count, published_at)
    SELECT seq, key, visible_at, lease, receive_count, published_at FROM queue_messages;
  INSERT INTO queue_bodies (seq, body) SELECT seq, body FROM queue_messages;
  DROP TABLE queue_messages;
`;

const { path, synchronous, walLimitBytes } = workerData as ThreadOptions;
const port = parentPort;
if (!port) throw new Error('sqlite-thread.ts runs only as a worker thread');

// A failure to open ends the thread with that error; the main side's first request (a ping) learns it.
const db = new Database(path);
db.pragma(`page_size = ${PAGE_BYTES}`); // takes effect only while the file is new: an existing file keeps its own
db.pragma('busy_timeout = 5000'); // other processes sharing the file hold the write lock only briefly
db.pragma('journal_mode = WAL');
db.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
db.pragma('wal_autocheckpoint = 0'); // checkpoints happen on the checkpointer thread
db.pragma(`journal_size_limit = ${walLimitBytes}`);
db.transaction(() => {
  db.exec(SCHEMA);
  if (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queue_messages'").get()) db.exec(FROM_ONE_TABLE);
}).immediate();

const s = {
  insert: db.prepare('INSERT INTO queue_entries (key, visible_at, published_at) VALUES (?, ?, ?)'),
  insertBody: db.prepare('INSERT INTO queue_bodies (seq, body) VALUES (?, ?)'),
  ack: db.prepare('DELETE FROM queue_entries WHERE seq = ? AND lease = ?'),
  deleteBody: db.prepare('DELETE FROM queue_bodies WHERE seq = ?'),
  nack: db.prepare('UPDATE queue_entries SET lease = NULL, visible_at = ? WHERE seq = ? AND lease = ?'),
  extend: db.prepare('UPDATE queue_entries SET visible_at = ? WHERE seq = ? AND lease = ?'),
  claim: db.prepare(
    `UPDATE queue_entries SET lease = @lease, visible_at = @until, receive_count = receive_count + 1
     WHERE seq IN (SELECT seq FROM queue_entries WHERE visible_at <= @now ORDER BY visible_at, seq LIMIT @max)
     RETURNING seq, key, receive_count`,
  ),
  body: db.prepare('SELECT body FROM queue_bodies WHERE seq = ?').pluck(),
  ping: db.prepare('SELECT 1'),
  syncOff: db.prepare('PRAGMA synchronous = OFF'),
  syncFull: db.prepare('PRAGMA synchronous = FULL'),
};

/** All writes in one transaction; per write, whether it took effect (a settle whose lease was lost did not). */
const commit = db.transaction((writes: readonly PostedWrite[], bodies: ArrayBuffer): boolean[] => {
  const now = Date.now();
  return writes.map((w) => {
    switch (w.op) {
      case 'publish': {
        const { lastInsertRowid } = s.insert.run(w.key, now + w.delayMs, now);
        s.insertBody.run(lastInsertRowid, Buffer.from(bodies, w.offset, w.length));
        return true;
      }
      case 'ack': {
        if (s.ack.run(w.seq, w.lease).changes !== 1) return false;
        s.deleteBody.run(w.seq);
        return true;
      }
      case 'nack':
        return s.nack.run(now + w.delayMs, w.seq, w.lease).changes === 1;
      case 'extend':
        return s.extend.run(now + w.ms, w.seq, w.lease).changes === 1;
    }
  });
});

/**
 * A claim need not wait for the disk: lost in a power cut, it only leaves the message visible again (delivered
 * once more, which at-least-once allows). The next durable commit (FULL) flushes it with everything else.
 */
function claim(lease: string, visibilityMs: number, max: number): Claimed {
  const now = Date.now();
  const params = { lease, until: now + visibilityMs, now, max };
  let found: { seq: number; key: string | null; receive_count: number }[];
  if (synchronous === 'normal') found = s.claim.all(params) as typeof found;
  else {
    s.syncOff.run();
    try {
      found = s.claim.all(params) as typeof found;
    } finally {
      s.syncFull.run();
    }
  }
  // RETURNING gives rows in no promised order; consumers get them in publish order.
  found.sort((a, b) => a.seq - b.seq);
  // Entries and bodies are written and deleted together; should a body be missing all the same (a damaged file),
  // the empty one fails to decode and the consumer dead-letters it as poison instead of the claim failing forever.
  const { buffer, places } = pack(found.map((r) => (s.body.get(r.seq) as Buffer | undefined) ?? NO_BODY));
  return { rows: found.map((r, i) => ({ seq: r.seq, key: r.key, receive_count: r.receive_count, ...places[i]! })), bodies: buffer };
}

port.on('message', (req: ThreadRequest) => {
  let reply: Reply;
  try {
    switch (req.op) {
      case 'commit':
        reply = { id: req.id, ok: true, value: commit(req.writes, req.bodies) };
        break;
      case 'claim': {
        const claimed = claim(req.lease, req.visibilityMs, req.max);
        port.postMessage({ id: req.id, ok: true, value: claimed } satisfies Reply, [claimed.bodies]);
        return;
      }
      case 'ping':
        s.ping.get();
        reply = { id: req.id, ok: true, value: undefined };
        break;
      case 'close':
        db.close();
        port.postMessage({ id: req.id, ok: true, value: undefined } satisfies Reply);
        port.close();
        return;
    }
  } catch (err) {
    reply = { id: req.id, ok: false, error: replyError(err) };
  }
  port.postMessage(reply);
});
