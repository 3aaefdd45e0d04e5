/**
 * A loopback HTTP sink standing in for subscribers (reliability.md §5 "Sink"): one node:http server on 127.0.0.1,
 * one path per fake subscriber, and a behaviour per path that a test can change while the router runs.
 *
 * Behaviours: `ok` (2xx), `status` (any status, optional Retry-After), `hang` (never answers; the connection stays
 * open until the client gives up or the sink closes), `slow` (answers after `ms`), `gone` (410). A path can be given
 * a script (`behave(path, a, b, c)`): each request takes the next step and the last one sticks, so "500 twice, then
 * 200" is `behave(path, status(500), status(500), ok())`. A function behaviour decides per request.
 *
 * Every request is recorded (path, headers, the raw body bytes, arrival time) before it is answered, and
 * `waitFor(predicate, timeoutMs)` resolves when a recorded request makes the predicate true: it is re-checked on each
 * arrival and on each finished response, never on a timer loop. A timeout rejects with a summary of what did arrive.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

export type Behaviour =
  | { readonly kind: 'ok'; readonly status?: number }
  | { readonly kind: 'status'; readonly status: number; readonly retryAfter?: string | number }
  | { readonly kind: 'hang' }
  | { readonly kind: 'slow'; readonly ms: number; readonly status?: number }
  | { readonly kind: 'gone' };

/** Decides the behaviour for one request; `n` is its 1-based index on this path. */
export type BehaviourFn = (request: SinkRequest, n: number) => Behaviour;

export const ok = (status = 200): Behaviour => ({ kind: 'ok', status });
export const status = (code: number, retryAfter?: string | number): Behaviour =>
  retryAfter === undefined ? { kind: 'status', status: code } : { kind: 'status', status: code, retryAfter };
export const hang = (): Behaviour => ({ kind: 'hang' });
export const slow = (ms: number, code = 200): Behaviour => ({ kind: 'slow', ms, status: code });
export const gone = (): Behaviour => ({ kind: 'gone' });

export interface SinkRequest {
  /** Order of arrival over the whole sink, from 0. */
  readonly seq: number;
  readonly method: string;
  /** The URL path without the query. */
  readonly path: string;
  /** Lower-cased names, as node:http gives them. */
  readonly headers: IncomingHttpHeaders;
  /** The exact bytes received. */
  readonly body: Buffer;
  /** performance.now() when the body was complete (monotonic, same clock as the test). */
  readonly at: number;
  /** Date.now() at the same moment (for comparing with timestamps the router stores). */
  readonly wallAt: number;
  /** What the sink decided to answer: a status, or 'hang'. */
  readonly answer: number | 'hang';
  /** performance.now() when the response was fully written; undefined while pending (or for hang). */
  readonly answeredAt: number | undefined;
  /** Convenience: one header as a string (first value), or undefined. */
  header(name: string): string | undefined;
}

export interface Sink {
  /** http://127.0.0.1:<port> */
  readonly origin: string;
  /** `${origin}${path}` */
  url(path: string): string;
  /** Sets the behaviour script of a path (replaces the previous one). Unknown paths answer 200. */
  behave(path: string, ...script: (Behaviour | BehaviourFn)[]): void;
  /** Every request so far, in arrival order; with a path, only that path's. */
  requests(path?: string): SinkRequest[];
  /**
   * Resolves with all requests (arrival order) once `predicate` holds; rejects after `timeoutMs` with a summary.
   * The predicate runs now and again after every arrival and every finished response.
   */
  waitFor(predicate: (requests: readonly SinkRequest[]) => boolean, timeoutMs: number, what?: string): Promise<SinkRequest[]>;
  /** Shorthand: resolves with the path's requests once it has at least `count`. */
  waitForCount(path: string, count: number, timeoutMs: number): Promise<SinkRequest[]>;
  /** Requests on this path that are still waiting for an answer (hang, slow). */
  pending(path?: string): number;
  /** Cuts every open connection (hanging ones too), rejects pending waitFor calls and stops listening. Idempotent. */
  close(): Promise<void>;
}

interface Waiter {
  readonly predicate: (requests: readonly SinkRequest[]) => boolean;
  readonly resolve: (requests: SinkRequest[]) => void;
  readonly reject: (err: Error) => void;
}

export async function startSink(): Promise<Sink> {
  const scripts = new Map<string, { steps: (Behaviour | BehaviourFn)[]; used: number }>();
  const all: SinkRequest[] = [];
  const waiters = new Set<Waiter>();
  const timers = new Set<NodeJS.Timeout>();
  /** Requests whose response is neither finished nor cut (hang, slow). */
  const unanswered = new Map<SinkRequest, ServerResponse>();
  let seq = 0;

  function check(): void {
    for (const w of waiters) {
      let done = false;
      try {
        done = w.predicate(all);
      } catch {
        done = false;
      }
      if (done) {
        waiters.delete(w);
        w.resolve([...all]);
      }
    }
  }

  function next(path: string, request: SinkRequest, n: number): Behaviour {
    const script = scripts.get(path);
    if (!script || script.steps.length === 0) return ok();
    const step = script.steps[Math.min(script.used, script.steps.length - 1)]!;
    script.used += 1;
    return typeof step === 'function' ? step(request, n) : step;
  }

  function respond(res: ServerResponse, code: number, headers: Record<string, string>, record: SinkRequest & { answeredAt: number | undefined }): void {
    if (res.destroyed || res.writableEnded) return;
    const body = code >= 200 && code < 300 ? 'ok' : `status ${code}`;
    res.writeHead(code, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body, () => {
      record.answeredAt = performance.now();
      unanswered.delete(record);
      check();
    });
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      const n = all.filter((r) => r.path === path).length + 1;
      const headers = req.headers;
      const record = {
        seq: seq++,
        method: req.method ?? 'GET',
        path,
        headers,
        body: Buffer.concat(chunks),
        at: performance.now(),
        wallAt: Date.now(),
        answer: 200 as number | 'hang',
        answeredAt: undefined as number | undefined,
        header(name: string): string | undefined {
          const v = headers[name.toLowerCase()];
          return Array.isArray(v) ? v[0] : v;
        },
      };
      const behaviour = next(path, record, n);
      unanswered.set(record, res);
      res.on('close', () => unanswered.delete(record));
      switch (behaviour.kind) {
        case 'ok':
          record.answer = behaviour.status ?? 200;
          break;
        case 'status':
          record.answer = behaviour.status;
          break;
        case 'gone':
          record.answer = 410;
          break;
        case 'slow':
          record.answer = behaviour.status ?? 200;
          break;
        case 'hang':
          record.answer = 'hang';
          break;
      }
      all.push(record);
      check();
      switch (behaviour.kind) {
        case 'ok':
        case 'gone':
          respond(res, record.answer as number, {}, record);
          break;
        case 'status':
          respond(res, behaviour.status, behaviour.retryAfter === undefined ? {} : { 'retry-after': String(behaviour.retryAfter) }, record);
          break;
        case 'slow': {
          const timer = setTimeout(() => {
            timers.delete(timer);
            respond(res, record.answer as number, {}, record);
          }, behaviour.ms);
          timers.add(timer);
          break;
        }
        case 'hang':
          break; // never answered; the client's deadline or close() ends it
      }
    });
  });
  server.keepAliveTimeout = 5_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let closing: Promise<void> | undefined;

  const summary = (what: string) => {
    const byPath = new Map<string, number>();
    for (const r of all) byPath.set(r.path, (byPath.get(r.path) ?? 0) + 1);
    return `${what}: ${all.length} request(s) arrived${byPath.size ? ` (${[...byPath].map(([p, c]) => `${p}: ${c}`).join(', ')})` : ''}`;
  };

  const sink: Sink = {
    origin,
    url: (path) => `${origin}${path}`,
    behave(path, ...script) {
      scripts.set(path, { steps: script, used: 0 });
    },
    requests: (path) => (path === undefined ? [...all] : all.filter((r) => r.path === path)),
    waitFor(predicate, timeoutMs, what = 'sink.waitFor timed out') {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`${summary(what)} within ${timeoutMs} ms`));
        }, timeoutMs);
        const waiter: Waiter = {
          predicate,
          resolve: (requests) => {
            clearTimeout(timer);
            resolve(requests);
          },
          reject: (err) => {
            clearTimeout(timer);
            reject(err);
          },
        };
        waiters.add(waiter);
        check();
      });
    },
    async waitForCount(path, count, timeoutMs) {
      await sink.waitFor((rs) => rs.filter((r) => r.path === path).length >= count, timeoutMs, `waiting for ${count} request(s) on ${path}`);
      return sink.requests(path);
    },
    pending: (path) => [...unanswered.keys()].filter((r) => path === undefined || r.path === path).length,
    close() {
      closing ??= (async () => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        for (const w of waiters) w.reject(new Error(summary('the sink closed while waiting')));
        waiters.clear();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
      })();
      return closing;
    },
  };

  return sink;
}
