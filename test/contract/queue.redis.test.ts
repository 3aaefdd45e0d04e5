/**
 * The queue contract over Redis Streams, against the Redis at REDIS_URL (default redis://127.0.0.1:6379). Every
 * namespace gets a stream and group of its own (`${pid}:${ns}`), deleted once the suite passed.
 *
 * The shared Redis runs without persistence (`--save "" --appendonly no`), so the adapter reports durability 'none'
 * here; the restart test below starts its own Redis with `appendfsync always` on another port.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { QueueAdapter } from '../../adapters/queue/port.ts';
import { createRedisStreamsQueue } from '../../adapters/queue/redis-streams.ts';
import { Queue } from '../../config/schema.ts';
import { isRouterError } from '../../src/errors.ts';
import { backendAvailable, env } from '../helpers/backends.ts';
import { outcome, rejectsWithCode, stopwatch } from '../helpers/queue.ts';
import { type QueueHarness, runQueueContract } from './queue.contract.ts';

const prefix = `wr-test:${process.pid}`;
const opened = new Set<QueueAdapter>();

function redisConfig(url: string, ns: string, visibilityTimeoutMs: number) {
  const config = Queue.parse({ kind: 'redis', url, stream: `${prefix}:${ns}`, group: `${prefix}:${ns}:g`, visibilityTimeoutMs });
  if (config.kind !== 'redis') throw new Error('unreachable');
  return config;
}

const harness: QueueHarness = {
  name: 'redis',
  capabilities: {
    maxBatch: 1_000,
    maxMessageBytes: 64 * 1024 * 1024,
    delayedPublish: false,
    nackRedelivery: 'immediate',
    orderingKey: false,
    durability: 'none',
  },
  persistent: true,
  sharedAcrossAdapters: true,
  countsReceives: true,
  nackDelay: true,
  extendDeadline: true,
  visibilityTimeoutMs: 400,
  slackMs: 500,

  async open(ns, overrides) {
    const adapter = createRedisStreamsQueue(redisConfig(env.redisUrl, ns, overrides?.visibilityTimeoutMs ?? 400));
    opened.add(adapter);
    await adapter.connect();
    return adapter;
  },

  async close({ passed }) {
    await Promise.all([...opened].map((a) => a.close()));
    opened.clear();
    if (!passed) {
      process.stderr.write(`queue contract (redis): failing state kept in keys ${prefix}:*\n`);
      return;
    }
    const redis = new Redis(env.redisUrl);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  },
};

async function probe(): Promise<void> {
  const redis = new Redis(env.redisUrl, { lazyConnect: true, connectTimeout: 2_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    await redis.connect();
    await redis.ping();
  } finally {
    redis.disconnect();
  }
}

if (await backendAvailable('redis', probe)) {
  runQueueContract(harness);

  describe('redis streams: server restarts', () => {
    const dir = mkdtempSync(join(tmpdir(), 'wr-redis-'));
    const port = 6390 + (process.pid % 50);
    const url = `redis://127.0.0.1:${port}`;
    const start = () => {
      const r = spawnSync('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--daemonize', 'yes', '--pidfile', join(dir, 'redis.pid')]);
      assert.equal(r.status, 0, String(r.stderr));
    };
    const stop = () => spawnSync('redis-cli', ['-p', String(port), 'shutdown', 'nosave']);
    /** Tests that stop the server start it again; a test that failed half-way may have left it stopped. */
    const ensureUp = async () => {
      if (await isUp(url)) return;
      start();
      await waitForRedis(url);
    };
    after(() => {
      stop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('with appendfsync always, confirmed publishes survive a restart; a flushed server is recovered from (NOGROUP)', async () => {
      start();
      await waitForRedis(url);
      const q = createRedisStreamsQueue(redisConfig(url, 'restart', 1_000));
      await q.connect();
      try {
        assert.equal(q.capabilities.durability, 'power-loss');
        const producer = q.producer();
        for (let i = 0; i < 20; i++) await producer.publish({ body: Buffer.from(`m${i}`) });
        stop();
        start();
        await waitForRedis(url);
        const consumer = q.consumer();
        const got = await receiveAll(consumer, 20, 10_000);
        assert.deepEqual(got.map((d) => d.body.toString()).sort(), Array.from({ length: 20 }, (_, i) => `m${i}`).sort());
        for (const d of got) await d.ack();

        // The stream and its group vanish (FLUSHALL, or a restart without persistence): consuming recovers.
        const admin = new Redis(url);
        await admin.flushall();
        await admin.quit();
        assert.deepEqual(await consumer.receive({ max: 10, waitMs: 200 }), []);
        await producer.publish({ body: Buffer.from('after-flush') });
        const again = await receiveAll(consumer, 1, 5_000);
        assert.equal(again[0]?.body.toString(), 'after-flush');
        await again[0]?.ack();
        await consumer.close();
      } finally {
        await q.close();
      }
    });

    test('while redis is down, publish and ping fail fast and close() does not hang; the consumer recovers when it is back', async () => {
      await ensureUp();
      const q = createRedisStreamsQueue(redisConfig(url, 'down', 1_000));
      await q.connect();
      try {
        const producer = q.producer();
        const consumer = q.consumer();
        await producer.publish({ body: Buffer.from('before') });
        const [first] = await receiveAll(consumer, 1, 5_000);
        assert.equal(first?.body.toString(), 'before');
        await first?.ack();

        const parked = outcome(consumer.receive({ max: 1, waitMs: 3_000 })); // blocked in XREADGROUP when redis dies
        await new Promise((r) => setTimeout(r, 100));
        stop();
        let sw = stopwatch();
        const parkedResult = await parked;
        assert.ok(sw.elapsed() < 1_000, `a receive blocked when redis went away returned after ${Math.round(sw.elapsed())} ms`);
        assert.ok(parkedResult.ok ? parkedResult.value.length === 0 : isRouterError(parkedResult.error, 'ROUTER_ERR_QUEUE_UNAVAILABLE'));

        for (let i = 0; i < 3; i++) {
          sw = stopwatch();
          await rejectsWithCode(producer.publish({ body: Buffer.from('while-down') }), 'ROUTER_ERR_QUEUE_UNAVAILABLE', 'publish while down');
          assert.ok(sw.elapsed() < 500, `a publish while redis is down took ${Math.round(sw.elapsed())} ms to fail`);
          sw = stopwatch();
          await rejectsWithCode(q.ping(), 'ROUTER_ERR_QUEUE_UNAVAILABLE', 'ping while down');
          assert.ok(sw.elapsed() < 500, `a ping while redis is down took ${Math.round(sw.elapsed())} ms to fail`);
          await new Promise((r) => setTimeout(r, 300)); // across reconnect attempts
        }

        start();
        await waitForRedis(url);
        // The adapter reconnects by itself (backoff capped at about 2 s); no new adapter, no new consumer.
        const deadline = stopwatch();
        for (;;) {
          const r = await outcome(producer.publish({ body: Buffer.from('after') }));
          if (r.ok) break;
          assert.ok(deadline.elapsed() < 5_000, `publishing after the restart still fails: ${String(r.error)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        await q.ping();
        const got = await receiveAll(consumer, 1, 5_000);
        assert.deepEqual(got.map((d) => d.body.toString()), ['after']);
        await got[0]?.ack();

        // close() with the server gone again: bounded, not stuck behind reconnect attempts.
        stop();
        sw = stopwatch();
        await q.close();
        assert.ok(sw.elapsed() < 2_000, `close() with redis down took ${Math.round(sw.elapsed())} ms`);
      } finally {
        await q.close();
        await ensureUp();
      }
    });

    test('an abort ends a long blocking read at once; the consumer stays usable; a failed connect() leaves nothing running', async () => {
      await ensureUp();
      // A long lease means long XREADGROUP blocks (1 s): the abort has to cut one short.
      const q = createRedisStreamsQueue(redisConfig(url, 'abort', 10_000));
      await q.connect();
      try {
        const c = q.consumer();
        const sw = stopwatch();
        const got = await c.receive({ max: 1, waitMs: 5_000, signal: AbortSignal.timeout(300) });
        assert.deepEqual(got, []);
        assert.ok(sw.elapsed() >= 275 && sw.elapsed() < 550, `aborted after 300 ms, returned after ${Math.round(sw.elapsed())} ms`);
        const blocked = c.receive({ max: 1, waitMs: 5_000 });
        await new Promise((r) => setTimeout(r, 100));
        await q.producer().publish({ body: Buffer.from('still here') });
        const [d] = await blocked;
        assert.equal(d?.body.toString(), 'still here');
        await d?.ack();
      } finally {
        await q.close();
      }

      const nowhere = createRedisStreamsQueue(redisConfig('redis://127.0.0.1:1', 'nowhere', 1_000));
      await assert.rejects(nowhere.connect(), (err: unknown) => isRouterError(err, 'ROUTER_ERR_QUEUE_UNAVAILABLE'));
      await rejectsWithCode(nowhere.producer().publish({ body: Buffer.from('x') }), 'ROUTER_ERR_QUEUE_UNAVAILABLE', 'publish without a connection');
      await nowhere.close(); // and the process still exits by itself (no reconnect loop left behind)
    });
  });
}

/** Whether a Redis answers at `url` right now (no retries). */
async function isUp(url: string): Promise<boolean> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    await r.ping();
    return true;
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

async function waitForRedis(url: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => {}); // refused while the server starts: the rejection below is enough
      await r.connect();
      await r.ping();
      r.disconnect();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function receiveAll(consumer: ReturnType<QueueAdapter['consumer']>, n: number, timeoutMs: number) {
  const out: Awaited<ReturnType<typeof consumer.receive>> = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < n && Date.now() < deadline) {
    try {
      out.push(...(await consumer.receive({ max: n - out.length, waitMs: 500 })));
    } catch {
      await new Promise((r) => setTimeout(r, 100)); // the server is coming back
    }
  }
  return out;
}
