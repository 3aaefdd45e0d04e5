/**
 * The thread that checkpoints SQLite files' WALs, each from a connection of its own (started by
 * sqlite-checkpointer.ts), so that the fsync-heavy copy into the database file never holds up the connection that
 * commits: the queue's, whose commits webhook senders wait for, and the store's, whose calls every delivery waits for.
 * One thread per process serves every file (a thread costs some 20 MB of RSS); each file has its own timer.
 *
 * Every tick a PASSIVE checkpoint copies what it can without blocking anyone. That alone never bounds the WAL under
 * a steady write load: SQLite rewinds the WAL only when a checkpoint has copied every frame and no frame was added
 * since, which continuous commits never allow (a 100,000-event run left a 1.7 GB WAL). So once the WAL is past
 * `walLimitBytes`, more PASSIVE passes shrink the part not yet copied to a short tail, and a RESTART checkpoint
 * copies that tail and makes the next commit start the WAL from the beginning. RESTART holds writers back while it
 * runs; the short tail keeps that to milliseconds (one RESTART right after a single PASSIVE pass stalled commits for
 * 60–200 ms at 9,000 publishes/s), and writers wait on their own threads (busy_timeout), never on an event loop.
 * When a file is let go, a TRUNCATE leaves a small WAL behind.
 *
 * SQLite fsyncs the database file only when a checkpoint has copied the whole WAL, which under a steady load is only
 * the RESTART: that one fsync then wrote out everything copied since the last RESTART (some 60 MB at 4,000
 * publishes/s) while writers were held, and a RESTART held them for 7 ms typically and up to 70 ms. This thread
 * therefore fdatasyncs the database file itself after every tick that copied frames, while nobody waits for it, so
 * the RESTART's own fsync finds little left to write: 2 ms typically, 8 ms at most (benchmarks/RESULTS.md, 3 December).
 */
import { closeSync, fdatasyncSync, openSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import Database from 'better-sqlite3';

export interface CheckpointerOptions {
  readonly path: string;
  readonly intervalMs: number;
  /** Past this size the WAL is rewound (see above). */
  readonly walLimitBytes: number;
}

/** Each watch has an id of its own: two adapters on one file (two queues in a test) each get a connection. */
export type CheckpointerRequest = ({ readonly op: 'watch'; readonly id: number } & CheckpointerOptions) | { readonly op: 'release'; readonly id: number };
/** Answers a request with its id: `error` is set when a watch could not open the file. */
export interface CheckpointerReply {
  readonly id: number;
  readonly error?: string;
}

/** PASSIVE passes per tick, each copying what was appended during the one before: copying outruns writing. */
const MAX_PASSES = 8;

const pause = new Int32Array(new SharedArrayBuffer(4));

function watch({ path, intervalMs, walLimitBytes }: CheckpointerOptions): () => void {
  const db = new Database(path);
  db.pragma('busy_timeout = 5000');
  // After a checkpoint has reset the WAL, shrink the file back rather than keep its high-water size on disk.
  db.pragma(`journal_size_limit = ${walLimitBytes}`);

  /** A WAL frame is a page plus its 24-byte header; what the WAL holds is what a checkpoint reports as `log`. */
  const frameBytes = (db.pragma('page_size', { simple: true }) as number) + 24;
  /** What a RESTART may still have to copy while writers wait, in frames: about 1 MiB. */
  const shortTailFrames = Math.ceil((1024 * 1024) / frameBytes);

  const passive = () => (db.pragma('wal_checkpoint(PASSIVE)') as { log: number; checkpointed: number }[])[0] ?? { log: 0, checkpointed: 0 };

  /**
   * While a RESTART waits for the write lock, new writers wait behind it, so it must not wait in SQLite's busy
   * handler (whose sleeps grow to 100 ms: stalls of 440 ms were measured). It asks without waiting, and between tries
   * this thread, not SQLite, sleeps 1 ms, leaving the lock to the writers meanwhile.
   */
  function restart(): void {
    db.pragma('busy_timeout = 0');
    try {
      for (let attempt = 0; attempt < 50; attempt++) {
        try {
          const r = (db.pragma('wal_checkpoint(RESTART)') as { busy: number }[])[0];
          if (r?.busy === 0) return;
        } catch {
          // SQLITE_BUSY: a writer holds the lock right now
        }
        Atomics.wait(pause, 0, 0, 1);
      }
    } finally {
      db.pragma('busy_timeout = 5000');
    }
  }

  /** For fdatasync only: fsync on a read-only descriptor flushes the file all the same. */
  const fd = openSync(path, 'r');
  /**
   * Frames copied as of the last fdatasync. A checkpoint that copied nothing new needs none, and neither does one that
   * copied the whole WAL: SQLite fsynced the file itself then.
   */
  let flushed = 0;
  const flush = ({ log, checkpointed }: { log: number; checkpointed: number }) => {
    if (checkpointed === flushed || checkpointed === log) return;
    fdatasyncSync(fd);
    flushed = checkpointed;
  };

  const timer = setInterval(() => {
    try {
      let r = passive();
      if (r.log * frameBytes <= walLimitBytes) return flush(r);
      for (let pass = 1; r.log - r.checkpointed > shortTailFrames && pass < MAX_PASSES; pass++) r = passive();
      flush(r);
      restart();
      flushed = 0; // the WAL starts over, and so does the count of frames copied from it
    } catch {
      // SQLITE_BUSY and friends: the next tick tries again; the WAL only grows meanwhile.
    }
  }, intervalMs);

  return () => {
    clearInterval(timer);
    try {
      db.pragma('wal_checkpoint(TRUNCATE)');
    } catch {
      // Another process may still be writing; its own close or the next start checkpoints.
    }
    db.close();
    closeSync(fd);
  };
}

const port = parentPort;
if (!port) throw new Error('sqlite-checkpointer-thread.ts runs only as a worker thread');
const releases = new Map<number, () => void>();
port.on('message', (req: CheckpointerRequest) => {
  let error: string | undefined;
  if (req.op === 'watch') {
    try {
      releases.set(req.id, watch(req));
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
    }
  } else {
    releases.get(req.id)?.();
    releases.delete(req.id);
  }
  port.postMessage({ id: req.id, ...(error === undefined ? {} : { error }) } satisfies CheckpointerReply);
});
