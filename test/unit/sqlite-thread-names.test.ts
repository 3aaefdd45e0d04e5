/**
 * The SQLite adapters name their threads, so that `top -H`, each task's `comm` under /proc (and the ingest benchmark's
 * CPU by thread) tell the queue's, the store's and the checkpointer's apart (README, "The store").
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Queue } from '../../config/schema.ts';
import { createSqliteQueue } from '../../adapters/queue/sqlite.ts';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';

const dir = mkdtempSync(join(tmpdir(), 'thread-names-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function threadNames(): string[] {
  return readdirSync('/proc/self/task').flatMap((tid) => {
    try {
      return [readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim()];
    } catch {
      return []; // the thread ended between the listing and the read
    }
  });
}

test('the queue, store and checkpointer threads carry their names', { timeout: 10_000, skip: process.platform !== 'linux' && 'reads /proc' }, async () => {
  const config = Queue.parse({ kind: 'sqlite', path: join(dir, 'queue.db') });
  if (config.kind !== 'sqlite') throw new Error('unreachable');
  const queue = createSqliteQueue(config);
  const store = createSqliteStore({ kind: 'sqlite', path: join(dir, 'store.db') });
  try {
    await queue.connect();
    await store.connect();
    const names = threadNames();
    for (const name of ['sqlite-queue', 'sqlite-store', 'sqlite-checkpt']) assert.ok(names.includes(name), `${name} not among ${names.join(', ')}`);
  } finally {
    await queue.close();
    await store.close();
  }
});
