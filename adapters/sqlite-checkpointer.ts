/**
 * Starts and stops the checkpointer thread of one SQLite file (sqlite-checkpointer-thread.ts). The queue and the store
 * each run one beside the thread that owns their writing connection, with automatic checkpoints turned off there.
 */
import { Worker } from 'node:worker_threads';
import type { CheckpointerOptions } from './sqlite-checkpointer-thread.ts';

export interface Checkpointer {
  /** Stops the ticks, leaves a small WAL behind (TRUNCATE) and resolves once the thread is gone. */
  stop(): Promise<void>;
}

/** Call once the file exists in WAL mode: the thread reads its page size when it opens. */
export function startCheckpointer(options: CheckpointerOptions, onError: (err: Error) => void): Checkpointer {
  const worker = new Worker(new URL('./sqlite-checkpointer-thread.ts', import.meta.url), { workerData: options satisfies CheckpointerOptions });
  worker.on('error', onError);
  // Unref'd so an idle file never keeps the process alive.
  worker.unref();
  let stopped: Promise<void> | undefined;
  return {
    stop: () =>
      (stopped ??= new Promise<void>((resolve) => {
        // While stop() waits, the process must live, or it could exit first and stop() would never resolve.
        worker.ref();
        worker.once('exit', () => resolve());
        worker.postMessage('stop');
      })),
  };
}
