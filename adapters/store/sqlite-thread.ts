/**
 * The thread that runs the SQLite store (see sqlite.ts): the SQL store of sql/store.ts over one better-sqlite3
 * connection, driven by the store calls the main thread posts. Each call runs to its end here, transactions and
 * their fsync included, before the next message is taken (better-sqlite3 is synchronous, so Kysely's awaits are
 * only microtasks), and is answered with its result or its error.
 *
 * WAL checkpoints run on the process's checkpointer thread (../sqlite-checkpointer.ts, started by sqlite.ts), as the
 * queue's do. They used to run here between calls, and a checkpoint took 14 ms of every 50 (wall time, mostly the
 * database file's fsync) in the end-to-end benchmark: every ingest, claim and completion waited behind it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { RouterError } from '../../src/errors.ts';
import { type Reply, type ReplyError, replyError } from '../thread-link.ts';
import type { Store } from './port.ts';
import { createSqliteSqlStore, openSqliteStoreFile } from './sqlite-sql.ts';

export type StoreMethod = Exclude<keyof Store, 'kind'>;
export type ThreadRequest = { readonly id: number; readonly method: StoreMethod; readonly args: readonly unknown[] };

export interface StoreThreadOptions {
  readonly path: string;
}

const { path } = workerData as StoreThreadOptions;
const port = parentPort;
if (!port) throw new Error('sqlite-thread.ts runs only as a worker thread');

const store = createSqliteSqlStore(() => {
  try {
    return openSqliteStoreFile(path);
  } catch (err) {
    throw new RouterError('ROUTER_ERR_STORE_UNAVAILABLE', `cannot open sqlite store at ${path}`, { cause: err });
  }
});

port.on('message', async ({ id, method, args }: ThreadRequest) => {
  let reply: Reply;
  try {
    const fn = store[method] as (...a: readonly unknown[]) => Promise<unknown>;
    reply = { id, ok: true, value: await fn(...args) };
  } catch (err) {
    reply = { id, ok: false, error: describe(err) };
  }
  port.postMessage(reply);
  if (method === 'close' && reply.ok) port.close();
});

function describe(err: unknown): ReplyError {
  // A RouterError's own message names the operation; its cause says what SQLite said.
  const cause = (err as { cause?: { message?: unknown } })?.cause?.message;
  const routerError = err instanceof RouterError;
  const e = replyError(err, routerError);
  return routerError && cause !== undefined ? { ...e, message: `${e.message}: ${String(cause)}` } : e;
}
