/**
 * The embedded default store: one SQLite file (WAL) through better-sqlite3, run on a worker thread of its own
 * (sqlite-thread.ts). This side only forwards each store call and hands back its answer.
 *
 * Why a thread: better-sqlite3 is synchronous, so on the event loop every statement, and above all every durable
 * COMMIT (an fsync, 1–2 ms on the machines measured), stalls the receiver and the dispatcher sharing that loop. In
 * the end-to-end benchmark COMMIT alone took a quarter of the main thread. A whole call, transaction included, runs
 * on the thread in one go; the event loop only pays for the message and a structured copy of the data.
 *
 * The WAL is checkpointed by the process's checkpointer thread (../sqlite-checkpointer.ts), from the moment the
 * store thread has opened the file (its first ping is answered) until close().
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { StoreConfig } from '../../config/schema.ts';
import { type RouterErrorCode, RouterError } from '../../src/errors.ts';
import type { Store } from './port.ts';
import { type Checkpointer, startCheckpointer, WAL_LIMIT_BYTES } from '../sqlite-checkpointer.ts';
import { type ReplyError, ThreadLink } from '../thread-link.ts';
import type { StoreMethod, StoreThreadOptions, ThreadRequest } from './sqlite-thread.ts';

export type SqliteStoreConfig = Extract<StoreConfig, { kind: 'sqlite' }>;

/** As the queue's default: short, so that each checkpoint's copy and fsync of the database file stay small. */
const CHECKPOINT_INTERVAL_MS = 50;

/** Every method of the port, forwarded as is; a record, so a method missing here is a compile error. */
const methods = Object.keys({
  connect: 1, migrate: 1, schemaStatus: 1, ping: 1, close: 1,
  createSubscriber: 1, getSubscriber: 1, listSubscribers: 1, allSubscribers: 1, subscribersVersion: 1, updateSubscriber: 1, deleteSubscriber: 1,
  ingest: 1, claimDue: 1, loadEvents: 1, complete: 1, release: 1, deferSubscriber: 1, deadLetterPending: 1, requeue: 1,
  getDelivery: 1, listDeliveries: 1, getEvent: 1,
  recordPoison: 1, listDeadLetters: 1, getDeadLetter: 1, replayDeadLetters: 1, purgeDeadLetters: 1,
  sweep: 1,
} satisfies Record<StoreMethod, 1>) as StoreMethod[];

export function createSqliteStore(config: SqliteStoreConfig): Store {
  let link: ThreadLink | undefined;
  let checkpointer: Checkpointer | undefined;
  let closed: Promise<void> | undefined;

  // Started by the first call (connect()), never in this factory.
  function start(): ThreadLink {
    if (link) return link;
    mkdirSync(dirname(config.path), { recursive: true });
    const workerData: StoreThreadOptions = { path: config.path };
    link = new ThreadLink(new Worker(new URL('./sqlite-thread.ts', import.meta.url), { name: 'sqlite-store', workerData }), {
      toError: threadError,
      gone: (cause) => new RouterError('ROUTER_ERR_STORE_UNAVAILABLE', `sqlite store thread stopped: ${cause.message}`, { cause }),
    });
    // The checkpointer reads the file's page size when it opens it, so it starts once the thread has the file open.
    void link.call({ method: 'ping', args: [] } satisfies Omit<ThreadRequest, 'id'>).then(
      () => {
        if (closed) return;
        // A checkpointer that cannot open the file only lets the WAL grow; the store itself goes on.
        checkpointer = startCheckpointer({ path: config.path, intervalMs: CHECKPOINT_INTERVAL_MS, walLimitBytes: WAL_LIMIT_BYTES }, (err) =>
          process.emitWarning(`sqlite store checkpointer: ${err.message}`),
        );
      },
      () => {}, // the same failure reaches the caller of the first call
    );
    return link;
  }

  function call(method: StoreMethod, args: unknown[]): Promise<unknown> {
    let l: ThreadLink;
    try {
      l = start();
    } catch (err) {
      return Promise.reject(new RouterError('ROUTER_ERR_STORE_UNAVAILABLE', `cannot open sqlite store at ${config.path}`, { cause: err }));
    }
    return l.call({ method, args } satisfies Omit<ThreadRequest, 'id'>);
  }

  const store = { kind: 'sqlite' } as Record<string, unknown>;
  for (const m of methods) store[m] = (...args: unknown[]) => call(m, args);
  store.close = () =>
    (closed ??= (async () => {
      await checkpointer?.stop();
      await link?.close({ method: 'close', args: [] } satisfies Omit<ThreadRequest, 'id'>);
    })());
  return store as unknown as Store;
}

/** Errors cross the thread as data; RouterErrors come back as RouterErrors, with the same code. */
function threadError(e: ReplyError): Error {
  if (e.routerError && e.code) return new RouterError(e.code as RouterErrorCode, e.message);
  return Object.assign(new Error(e.message), e.code ? { code: e.code } : {});
}
