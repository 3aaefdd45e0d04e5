/**
 * Worker thread of the SQLite queue: checkpoints the WAL from its own connection so that the fsync-heavy copy into
 * the main database file never runs on the event loop that commits publishes. PASSIVE never blocks writers; on stop
 * a TRUNCATE checkpoint leaves a small WAL behind.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const { path, intervalMs } = workerData as { path: string; intervalMs: number };
const db = new Database(path);
db.pragma('busy_timeout = 5000');
// After a checkpoint has reset the WAL, shrink the file back rather than keep its high-water size on disk.
db.pragma('journal_size_limit = 67108864'); // 64 MiB

const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch {
    // SQLITE_BUSY and friends: the next tick tries again; the WAL only grows meanwhile.
  }
}, intervalMs);

parentPort?.on('message', (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
  } catch {
    // Another process may still be writing; its own close or the next start checkpoints.
  }
  db.close();
  parentPort?.close();
});
