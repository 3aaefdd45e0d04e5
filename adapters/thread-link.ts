/**
 * The main-thread end of a worker thread that answers requests: the SQLite queue's and the SQLite store's
 * connections each live on one (adapters/queue/sqlite-thread.ts, adapters/store/sqlite-thread.ts).
 *
 * Every request carries an id that its reply echoes; errors come back as data. The thread keeps the process alive
 * only while a request is out, so an idle adapter never holds a finished CLI command or a shutdown open. A thread
 * that dies rejects every waiting request, and every later one, with the error `gone` makes of the cause.
 */
import type { Transferable, Worker } from 'node:worker_threads';

export interface ReplyError {
  readonly message: string;
  /** A RouterError code when `routerError`, else the driver's (`SQLITE_BUSY` …). */
  readonly code?: string | undefined;
  readonly routerError?: boolean;
}

export type Reply = { readonly id: number; readonly ok: true; readonly value: unknown } | { readonly id: number; readonly ok: false; readonly error: ReplyError };

/** What a thread posts back for an error it caught. */
export function replyError(err: unknown, routerError = false): ReplyError {
  const e = err as { message?: unknown; code?: unknown };
  return { message: String(e?.message ?? err), code: typeof e?.code === 'string' ? e.code : undefined, routerError };
}

export class ThreadLink {
  readonly #worker: Worker;
  readonly #toError: (e: ReplyError) => Error;
  readonly #waiting = new Map<number, PromiseWithResolvers<unknown>>();
  #next = 1;
  #gone: Error | undefined;

  constructor(worker: Worker, options: { toError: (e: ReplyError) => Error; gone: (cause: Error) => Error }) {
    this.#worker = worker;
    this.#toError = options.toError;
    worker.on('message', (reply: Reply) => {
      const w = this.#waiting.get(reply.id);
      this.#waiting.delete(reply.id);
      if (this.#waiting.size === 0) worker.unref();
      if (reply.ok) w?.resolve(reply.value);
      else w?.reject(this.#toError(reply.error));
    });
    const fail = (cause: Error) => {
      this.#gone ??= options.gone(cause);
      for (const w of this.#waiting.values()) w.reject(this.#gone);
      this.#waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the thread exited (code ${code})`)));
    worker.unref();
  }

  call<T>(request: object, transfer: readonly Transferable[] = []): Promise<T> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#next++;
    const w = Promise.withResolvers<unknown>();
    this.#waiting.set(id, w);
    if (this.#waiting.size === 1) this.#worker.ref();
    this.#worker.postMessage({ ...request, id }, transfer);
    return w.promise as Promise<T>;
  }

  /** Sends the thread's own close request, then waits for the thread to end. */
  async close(request: object): Promise<void> {
    if (this.#gone) return;
    const exited = new Promise((resolve) => this.#worker.once('exit', resolve));
    await this.call(request);
    this.#worker.ref(); // the reply unref'd it; the process must live until the thread is gone
    await exited;
  }
}
