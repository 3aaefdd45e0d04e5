/**
 * Checkpointing for the SQLite files of this process (the queue's, the store's): one checkpointer thread
 * (sqlite-checkpointer-thread.ts) serves them all, started with the first file and ended with the last. The
 * connections that write have automatic checkpoints turned off.
 */
import { Worker } from 'node:worker_threads';
import type { CheckpointerOptions, CheckpointerReply, CheckpointerRequest } from './sqlite-checkpointer-thread.ts';

/**
 * Where the checkpointer rewinds a file's WAL, and what the writing connection cuts the file back to afterwards
 * (its `journal_size_limit`): the same for the queue and the store.
 */
export const WAL_LIMIT_BYTES = 64 * 1024 * 1024;

export interface Checkpointer {
  /** Resolves once the thread has the file open; rejects when it could not open it. */
  readonly ready: Promise<void>;
  /** Stops checkpointing the file, leaves a small WAL behind (TRUNCATE) and resolves once that is done. */
  stop(): Promise<void>;
}

interface Shared {
  readonly worker: Worker;
  readonly waiting: Map<number, PromiseWithResolvers<void>>;
  files: number;
  exited: boolean;
}

let shared: Shared | undefined;
let nextId = 1;

function thread(onError: (err: Error) => void): Shared {
  if (shared) return shared;
  const worker = new Worker(new URL('./sqlite-checkpointer-thread.ts', import.meta.url), { name: 'sqlite-checkpt' });
  const current: Shared = { worker, waiting: new Map(), files: 0, exited: false };
  worker.on('message', (reply: CheckpointerReply) => {
    const w = current.waiting.get(reply.id);
    current.waiting.delete(reply.id);
    if (current.waiting.size === 0) worker.unref();
    if (reply.error === undefined) w?.resolve();
    else w?.reject(new Error(`cannot checkpoint: ${reply.error}`));
  });
  // The thread's own failure goes to whoever started it; each file's failure to open goes to its own caller.
  worker.on('error', onError);
  worker.on('exit', () => {
    current.exited = true;
    if (shared === current) shared = undefined;
    // A thread that is gone checkpoints nothing more: nothing is left to wait for.
    for (const w of current.waiting.values()) w.resolve();
    current.waiting.clear();
  });
  // Unref'd so that idle files never keep the process alive; a request waiting for its answer refs it.
  worker.unref();
  shared = current;
  return current;
}

function ask(t: Shared, request: CheckpointerRequest): Promise<void> {
  if (t.exited) return Promise.resolve(); // a thread that died (its error was reported) has nothing left to stop
  const w = Promise.withResolvers<void>();
  t.waiting.set(request.id, w);
  // Until the answer comes the process must live, or it could exit first and the caller would wait forever.
  t.worker.ref();
  t.worker.postMessage(request);
  return w.promise;
}

/** Call once the file exists in WAL mode: the thread reads its page size when it opens it. */
export function startCheckpointer(options: CheckpointerOptions, onError: (err: Error) => void): Checkpointer {
  const t = thread(onError);
  t.files += 1;
  const id = nextId++;
  const ready = ask(t, { op: 'watch', id, ...options });
  ready.catch(onError);
  let stopped: Promise<void> | undefined;
  return {
    ready,
    stop: () =>
      (stopped ??= ready
        .catch(() => {})
        .then(() => ask(t, { op: 'release', id }))
        .then(async () => {
          t.files -= 1;
          if (t.files > 0) return;
          if (shared === t) shared = undefined;
          await t.worker.terminate();
        })),
  };
}
