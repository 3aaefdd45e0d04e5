/**
 * The queue contract over the Kafka adapter, against a real broker at KAFKA_BROKERS (test/infra/kafka/start.sh).
 * Without one the file prints `skipped: kafka: …`; with kafka in REQUIRE_BACKENDS that is a failure instead.
 *
 * Each namespace gets its own topic and consumer group, `router-test-<pid>-<ns>`, deleted once the suite passed and
 * kept (names printed) when it failed. The harness "lease" is the adapter's maxPollIntervalMs: a consumer that stops
 * calling receive() leaves its group, and its partitions go to the others. A dead process is evicted after
 * sessionTimeoutMs instead (6 s here, the broker's minimum), which the Kafka-only tests below exercise.
 *
 * After the contract, Kafka-only checks: ordering per key, a rebalance under load, a rebalance that takes partitions
 * with deliveries in flight (LEASE_LOST), a message above the broker's 1 MB default, commits that never skip an
 * unsettled offset, and recovery from a consumer process that was SIGKILLed (session timeout).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, afterEach, describe, test } from 'node:test';
import type { Kafka } from 'kafkajs';
import { createKafkaQueue, type KafkaQueueConfig } from '../../adapters/queue/kafka.ts';
import type { QueueAdapter, QueueDelivery } from '../../adapters/queue/port.ts';
import { isRouterError } from '../../src/errors.ts';
import { backendAvailable, env } from '../helpers/backends.ts';
import { assertSameBytes, bytes, drain, receiveN, stopwatch, text } from '../helpers/queue.ts';
import { type QueueHarness, runQueueContract } from './queue.contract.ts';

const LEASE_MS = 1_000;
const SESSION_TIMEOUT_MS = 6_000; // group.min.session.timeout.ms of a default broker
const brokers = (env.kafkaBrokers ?? '').split(',').map((b) => b.trim()).filter(Boolean);
const prefix = `router-test-${process.pid}`;
const namespaces = new Set<string>();
const opened = new Set<QueueAdapter>();

function kafkaConfig(ns: string, overrides: Partial<KafkaQueueConfig> = {}): KafkaQueueConfig {
  namespaces.add(`${prefix}-${ns}`);
  return {
    kind: 'kafka',
    brokers,
    topic: `${prefix}-${ns}`,
    groupId: `${prefix}-${ns}`,
    clientId: 'webhook-router-test',
    partitions: 4,
    replicationFactor: 1,
    connectTimeoutMs: 10_000,
    sessionTimeoutMs: SESSION_TIMEOUT_MS,
    maxPollIntervalMs: LEASE_MS,
    ...overrides,
  };
}

async function openKafka(ns: string, overrides: Partial<KafkaQueueConfig> = {}): Promise<QueueAdapter> {
  const adapter = createKafkaQueue(kafkaConfig(ns, overrides));
  opened.add(adapter);
  await adapter.connect();
  return adapter;
}

/** An admin client of the test itself: probes the broker, cleans up topics and groups. */
async function withAdmin<T>(fn: (admin: ReturnType<Kafka['admin']>) => Promise<T>): Promise<T> {
  const { Kafka: KafkaClient, logLevel } = await import('kafkajs');
  const admin = new KafkaClient({ clientId: 'webhook-router-test', brokers, connectionTimeout: 3_000, retry: { retries: 2 }, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

const available = await backendAvailable('kafka', async () => {
  if (brokers.length === 0) throw new Error('KAFKA_BROKERS is not set (start one with test/infra/kafka/start.sh)');
  await withAdmin(async (admin) => {
    const timeout = AbortSignal.timeout(10_000);
    await Promise.race([
      admin.describeCluster(),
      new Promise((_, reject) => timeout.addEventListener('abort', () => reject(new Error(`no answer from ${brokers.join(',')}`)))),
    ]);
  });
});

if (available) {
  const harness: QueueHarness = {
    name: 'kafka',
    capabilities: {
      maxBatch: 1_000,
      maxMessageBytes: 32 * 1024 * 1024 - 16 * 1024,
      delayedPublish: false,
      nackRedelivery: 'immediate',
      orderingKey: true,
      durability: 'process-crash', // one broker, min.insync.replicas 1
    },
    persistent: true,
    sharedAcrossAdapters: true,
    countsReceives: true,
    nackDelay: true,
    extendDeadline: false,
    assignsPartitions: true,
    visibilityTimeoutMs: LEASE_MS,
    slackMs: 1_500,

    open: (ns, overrides) => openKafka(ns, { maxPollIntervalMs: overrides?.visibilityTimeoutMs ?? LEASE_MS }),

    /** Called after the contract and again after the Kafka-only tests; each time for the namespaces opened since. */
    async close({ passed }) {
      await Promise.allSettled([...opened].map((a) => a.close()));
      opened.clear();
      const mine = [...namespaces];
      namespaces.clear();
      if (!passed) {
        process.stderr.write(`queue (kafka): topics and consumer groups kept for inspection: ${mine.join(', ')}\n`);
        return;
      }
      await withAdmin(async (admin) => {
        const existing = new Set(await admin.listTopics());
        const topics = mine.filter((t) => existing.has(t));
        if (topics.length > 0) await admin.deleteTopics({ topics, timeout: 10_000 });
        await admin.deleteGroups(mine).catch(() => {});
      });
    },
  };

  runQueueContract(harness);

  describe('kafka queue specifics', () => {
    let passed = true;
    afterEach((t) => {
      if ('passed' in t) passed &&= t.passed;
    });
    after(() => harness.close({ passed }));

    test('one key stays in one partition, in publish order', { timeout: 20_000 }, async () => {
      const a = await openKafka('order');
      const p = a.producer();
      const keys = ['octo-org/alpha', 'octo-org/beta', 'octo-org/gamma', 'octo-org/delta', 'octo-org/epsilon'];
      // Concurrent publishes gather into shared requests; each key's order must survive that.
      await Promise.all(
        Array.from({ length: 300 }, (_, i) => p.publish({ body: bytes(`${keys[i % keys.length]}#${i}`), key: keys[i % keys.length] })),
      );
      // Joining the group takes a moment on a busy machine: keep asking until all 300 arrived (bounded).
      const consumer = a.consumer();
      const got: QueueDelivery[] = [];
      const until = Date.now() + 15_000;
      while (got.length < 300 && Date.now() < until) {
        const batch = await consumer.receive({ max: 50, waitMs: 500 });
        await Promise.all(batch.map((d) => d.ack()));
        got.push(...batch);
      }
      assert.equal(got.length, 300);
      const byKey = new Map<string, { partitions: Set<string>; seq: number[] }>();
      for (const d of got) {
        const [key, seq] = text(d.body).split('#') as [string, string];
        assert.equal(d.key, key);
        const entry = byKey.get(key) ?? { partitions: new Set(), seq: [] };
        entry.partitions.add(d.brokerId.split('@')[0] as string);
        entry.seq.push(Number(seq));
        byKey.set(key, entry);
      }
      for (const [key, { partitions, seq }] of byKey) {
        assert.equal(partitions.size, 1, `${key} spread over partitions ${[...partitions].join(', ')}`);
        assert.deepEqual(seq, [...seq].sort((x, y) => x - y), `${key} arrived out of order`);
      }
    });

    test('a consumer joining mid-stream: nothing lost, duplicates at most what was in flight', { timeout: 30_000 }, async () => {
      const ns = 'rebalance';
      const a1 = await openKafka(ns, { maxPollIntervalMs: 10_000 });
      const total = 1_500;
      const max = 20;
      const seen = new Map<string, number>();
      const perConsumer = [0, 0];
      let leaseLost = 0;
      let stop = false;
      const work = async (adapter: QueueAdapter, i: number) => {
        const c = adapter.consumer();
        while (!stop) {
          const got = await c.receive({ max, waitMs: 200 });
          for (const d of got) seen.set(text(d.body), (seen.get(text(d.body)) ?? 0) + 1);
          perConsumer[i] = (perConsumer[i] ?? 0) + got.length;
          for (const r of await Promise.allSettled(got.map((d) => d.ack()))) {
            if (r.status === 'rejected') {
              assert.ok(isRouterError(r.reason, 'ROUTER_ERR_LEASE_LOST'), `ack failed: ${String(r.reason)}`);
              leaseLost += 1;
            }
          }
        }
        await c.close();
      };
      const sw = stopwatch();
      const workers = [work(a1, 0)];
      const producer = a1.producer();
      for (let i = 0; i < total; i += 50) {
        await producer.publishBatch(Array.from({ length: 50 }, (_, j) => ({ body: bytes(`m-${i + j}`), key: `repo-${(i + j) % 17}` })));
        if (i === 500) workers.push(openKafka(ns, { maxPollIntervalMs: 10_000 }).then((a2) => work(a2, 1)));
        await new Promise((r) => setTimeout(r, 20)); // a stream, not one burst
      }
      while (seen.size < total && sw.elapsed() < 20_000) await new Promise((r) => setTimeout(r, 50));
      stop = true;
      await Promise.all(workers);
      const missing = Array.from({ length: total }, (_, i) => `m-${i}`).filter((b) => !seen.has(b));
      assert.deepEqual(missing, [], 'every published message was received');
      const duplicates = [...seen.values()].reduce((n, c) => n + c - 1, 0);
      assert.ok(duplicates <= 2 * max, `${duplicates} duplicates; at most ${2 * max} deliveries were in flight`);
      assert.ok(perConsumer[1]! > 0, `the joining consumer got nothing (${perConsumer.join(' / ')})`);
      process.stdout.write(`# kafka rebalance: ${perConsumer.join(' / ')} received, ${duplicates} duplicates, ${leaseLost} late acks refused\n`);
    });

    test('a rebalance that moves partitions with deliveries in flight: late settles fail, the new owner gets them', { timeout: 20_000 }, async () => {
      const a = await openKafka('revoke', { maxPollIntervalMs: 10_000 });
      // Keyless messages go round-robin: one per partition, so consumer A is busy on all four.
      await a.producer().publishBatch(Array.from({ length: 4 }, (_, i) => ({ body: bytes(`held-${i}`) })));
      const held = await receiveN(a.consumer(), 4, { timeoutMs: 5_000 });
      assert.equal(new Set(held.map((d) => d.brokerId.split('@')[0])).size, 4, 'one message per partition');

      // B joins: A may keep at most its fair share (2 of 4) of the partitions it is busy on; two move to B.
      const b = await openKafka('revoke', { maxPollIntervalMs: 10_000 });
      const moved = await receiveN(b.consumer(), 2, { timeoutMs: 8_000 });
      assert.equal(moved.length, 2, 'B got the two partitions A had to give up');
      assert.deepEqual(moved.map((d) => d.receiveCount), [2, 2], "B counts A's hand-out");
      const movedBodies = new Set(moved.map((d) => text(d.body)));
      for (const d of held) {
        if (movedBodies.has(text(d.body))) {
          await assert.rejects(d.ack(), (err: unknown) => isRouterError(err, 'ROUTER_ERR_LEASE_LOST'), `late ack of ${text(d.body)}`);
        } else {
          await d.ack(); // kept by A: its lease holds
        }
      }
      await Promise.all(moved.map((d) => d.ack()));
      await a.close();
      await b.close();
      const check = await openKafka('revoke');
      assert.deepEqual(await drain(check.consumer(), { idleMs: 1_000, timeoutMs: 5_000 }), [], 'all four committed exactly once');
    });

    test('a 2 MiB message round-trips (above the broker default of 1 MB)', { timeout: 20_000 }, async () => {
      const a = await openKafka('large');
      assert.ok(a.capabilities.maxMessageBytes >= 25 * 1024 * 1024 + 64 * 1024, 'a 25 MB GitHub body and its envelope fit');
      const size = 2 * 1024 * 1024;
      const body = new Uint8Array(size);
      for (let i = 0; i < size; i++) body[i] = (i * 31 + (i >>> 8)) & 0xff;
      await a.producer().publishBatch([{ body, key: 'big/repo' }, { body: bytes('small'), key: 'big/repo' }]);
      const got = await receiveN(a.consumer(), 2, { timeoutMs: 5_000 });
      assert.deepEqual(got.map((d) => d.body.byteLength), [size, 5]);
      assertSameBytes((got[0] as QueueDelivery).body, body);
      await Promise.all(got.map((d) => d.ack()));
      await assert.rejects(a.producer().publish({ body: new Uint8Array(a.capabilities.maxMessageBytes + 1) }), (err: unknown) =>
        isRouterError(err, 'ROUTER_ERR_MESSAGE_TOO_LARGE'),
      );
    });

    test('an ack out of order never commits past an unsettled message', { timeout: 20_000 }, async () => {
      const a = await openKafka('contiguous');
      await a.producer().publishBatch(['first', 'second', 'third'].map((s) => ({ body: bytes(s), key: 'one/partition' })));
      const held = await receiveN(a.consumer(), 3, { timeoutMs: 5_000 });
      assert.deepEqual(held.map((d) => text(d.body)), ['first', 'second', 'third']);
      await (held[2] as QueueDelivery).ack();
      await (held[1] as QueueDelivery).ack();
      await a.close(); // 'first' still unsettled: the commit stays before it

      const again = await openKafka('contiguous');
      const back = await drain(again.consumer(), { idleMs: 1_000, timeoutMs: 8_000 });
      assert.deepEqual(back.map((d) => text(d.body)), ['first', 'second', 'third'], 'all three come back (two of them as duplicates)');
      assert.deepEqual(back.map((d) => d.receiveCount), [2, 2, 2]);
      await again.close();

      const third = await openKafka('contiguous');
      await drain(third.consumer(), { idleMs: 1_000, timeoutMs: 5_000 }).then((rest) => assert.deepEqual(rest, [], 'all acked and committed'));
    });

    test('a SIGKILLed consumer process: its messages come back after the session timeout', { timeout: 30_000 }, async () => {
      const ns = 'sigkill';
      const config = kafkaConfig(ns, { maxPollIntervalMs: 60_000 });
      const a = await openKafka(ns, { maxPollIntervalMs: 60_000 });
      await a.producer().publishBatch(Array.from({ length: 8 }, (_, i) => ({ body: bytes(`job-${i}`), key: `repo-${i}` })));
      // A child process takes everything, acks three and is killed holding the rest.
      const moduleUrl = new URL('../../adapters/queue/kafka.ts', import.meta.url).href;
      const script = `
        const { createKafkaQueue } = await import(${JSON.stringify(moduleUrl)});
        const q = createKafkaQueue(${JSON.stringify(config)});
        await q.connect();
        const c = q.consumer();
        const held = [];
        while (held.length < 8) held.push(...await c.receive({ max: 8, waitMs: 1000 }));
        for (const d of held.slice(0, 3)) await d.ack();
        process.stdout.write('holding ' + held.slice(3).map((d) => Buffer.from(d.body).toString()).join(',') + '\\n');
        setInterval(() => {}, 1000);
      `;
      const child = spawn(process.execPath, ['--input-type=module', '--eval', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      try {
        let out = '';
        let err = '';
        child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
        await new Promise<void>((resolve, reject) => {
          child.stdout.on('data', (chunk: Buffer) => {
            out += chunk.toString();
            if (out.includes('\n')) resolve();
          });
          child.on('exit', (code) => reject(new Error(`child exited (${code}) before holding: ${err}`)));
        });
        const held = out.trim().replace('holding ', '').split(',').sort();
        assert.equal(held.length, 5);
        const sw = stopwatch();
        child.kill('SIGKILL');
        const back = await receiveN(a.consumer(), 5, { timeoutMs: SESSION_TIMEOUT_MS + 8_000 });
        assert.deepEqual(back.map((d) => text(d.body)).sort(), held, 'exactly the unacked ones came back');
        assert.ok(back.every((d) => d.receiveCount === 2), `receive counts ${back.map((d) => d.receiveCount).join(',')}: the dead consumer's hand-out counts`);
        process.stdout.write(`# kafka: a killed member's messages were back after ${Math.round(sw.elapsed())} ms\n`);
        await Promise.all(back.map((d) => d.ack()));
      } finally {
        child.kill('SIGKILL'); // also when an assertion above failed
      }
    });
  });
}
