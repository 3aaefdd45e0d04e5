/**
 * Small helpers for tests that drive a queue adapter only through its port (adapters/queue/port.ts). Every loop here
 * is bounded by a deadline and waits on `receive({ waitMs })`, never on a fixed sleep.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import type { QueueConsumer, QueueDelivery } from '../../adapters/queue/port.ts';
import { isRouterError, type RouterErrorCode } from '../../src/errors.ts';

const encoder = new TextEncoder();

export function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

/** The body as UTF-8 text (for bodies the test wrote as text). */
export function text(body: Uint8Array): string {
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
}

/** Byte equality that ignores the view type (a Buffer from SQLite, a Uint8Array from memory). */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, message?: string): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(e)) return;
  const first = Array.from({ length: Math.min(a.length, e.length) }, (_, i) => i).find((i) => a[i] !== e[i]);
  assert.fail(
    `${message ?? 'bodies differ'}: ${a.length} bytes received, ${e.length} expected` +
      (first === undefined ? '' : `, first difference at byte ${first} (${a[first]} ≠ ${e[first]})`),
  );
}

/** A monotonic stopwatch: `elapsed()` in ms since it was made. */
export function stopwatch(): { readonly start: number; elapsed(): number } {
  const start = performance.now();
  return { start, elapsed: () => performance.now() - start };
}

/**
 * Receives without settling until `count` deliveries arrived or `timeoutMs` passed; returns what it got (the caller
 * asserts the length, so a shortfall shows up as a readable diff rather than a timeout).
 */
export async function receiveN(
  consumer: QueueConsumer,
  count: number,
  options: { timeoutMs: number; max?: number },
): Promise<QueueDelivery[]> {
  const out: QueueDelivery[] = [];
  const deadline = performance.now() + options.timeoutMs;
  while (out.length < count) {
    const left = Math.floor(deadline - performance.now());
    if (left <= 0) break;
    const max = Math.min(options.max ?? count, count - out.length);
    const got = await consumer.receive({ max, waitMs: left });
    assert.ok(got.length <= max, `receive({ max: ${max} }) returned ${got.length} deliveries`);
    out.push(...got);
  }
  return out;
}

/**
 * Receives and acks until one receive of `idleMs` comes back empty, or `timeoutMs` passes. Returns every delivery
 * (already acked) in arrival order.
 */
export async function drain(
  consumer: QueueConsumer,
  options: { idleMs: number; timeoutMs: number; max?: number },
): Promise<QueueDelivery[]> {
  const out: QueueDelivery[] = [];
  const deadline = performance.now() + options.timeoutMs;
  while (performance.now() < deadline) {
    const got = await consumer.receive({ max: options.max ?? 100, waitMs: options.idleMs });
    if (got.length === 0) return out;
    await Promise.all(got.map((d) => d.ack()));
    out.push(...got);
  }
  assert.fail(`drain: the queue was still delivering after ${options.timeoutMs} ms (${out.length} so far)`);
}

/** Asserts that one receive of `waitMs` hands out nothing; names what it got otherwise. */
export async function expectNothing(consumer: QueueConsumer, waitMs: number, message: string): Promise<void> {
  const got = await consumer.receive({ max: 100, waitMs });
  assert.deepEqual(
    got.map((d) => ({ body: preview(d.body), receiveCount: d.receiveCount })),
    [],
    `${message}: receive({ waitMs: ${waitMs} }) returned deliveries`,
  );
}

/** Asserts that `promise` rejects with a RouterError carrying `code` (never classified by message text). */
export async function rejectsWithCode(promise: Promise<unknown>, code: RouterErrorCode, message?: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isRouterError(err), `${message ?? 'expected a RouterError'}; got ${String(err)}`);
    assert.equal(err.code, code, message);
    return true;
  });
}

/** Resolves to what the promise settled with, so a test can assert "resolved to []" or "rejected with code X". */
export async function outcome<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    return { ok: false, error };
  }
}

function preview(body: Uint8Array): string {
  const t = text(body.subarray(0, 40));
  return body.byteLength > 40 ? `${t}… (${body.byteLength} bytes)` : t;
}
