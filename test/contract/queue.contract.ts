/**
 * The queue contract: one suite that every queue adapter passes, run once per backend through a `QueueHarness`
 * (queue.<backend>.test.ts). It checks the guarantees written in adapters/queue/port.ts and nothing an adapter only
 * happens to do: order is never asserted, `max` is an upper bound, timing bounds are generous.
 *
 * Writing a harness for a new backend
 * - `open(ns)` returns a connected adapter. Every test gets a fresh `ns` (letters, digits and "-"), so tests never see
 *   each other's messages; map it onto a stream / topic / queue name / file and prefix it with whatever keeps two CI
 *   runs apart. Opening the same `ns` again is "another process" or "after a restart".
 * - Declare what the backend can and cannot do (`capabilities`, `persistent`, `countsReceives`, …) as data. Tests for
 *   an absent feature are skipped with the reason in the output; a test checks that the declaration matches what the
 *   adapter really reports, so a harness cannot skip its way to green.
 * - `visibilityTimeoutMs` is the lease every adapter gets unless a test asks for a longer one; keep it short (a few
 *   hundred ms) because tests wait it out. `slackMs` is how late the backend may act after a nominal instant (poll
 *   intervals, round trips).
 *
 * The suite opens adapters through a per-test scope that closes all of them after the test, whether it passed or not,
 * and then checks that each one really is closed (its `ping()` rejects).
 */
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import type { QueueAdapter, QueueCapabilities, QueueDelivery, QueueMessage } from '../../adapters/queue/port.ts';
import { encodeEnvelope } from '../../src/envelope.ts';
import { isRouterError } from '../../src/errors.ts';
import { intake } from '../../src/worker/intake.ts';
import {
  assertSameBytes,
  bytes,
  drain,
  expectNothing,
  outcome,
  receiveN,
  rejectsWithCode,
  stopwatch,
  text,
} from '../helpers/queue.ts';

export interface QueueOverrides {
  /** A lease at least this long (a harness whose broker has a coarser unit rounds up). Tests only ever lengthen it. */
  readonly visibilityTimeoutMs?: number;
}

export interface QueueHarness {
  /** Shown in the suite name: `queue contract: <name>`. */
  readonly name: string;
  /** What the adapters this harness opens report; decides the capability skips before any adapter exists. */
  readonly capabilities: QueueCapabilities;
  /** An adapter reopened on the same ns (after close) sees the messages published, and left unsettled, before. */
  readonly persistent: boolean;
  /** Two adapters open at the same time on one ns share one queue and one consumer group (two worker processes). */
  readonly sharedAcrossAdapters: boolean;
  /** Deliveries carry `receiveCount` (otherwise it is always undefined). */
  readonly countsReceives: boolean;
  /** `nack({ delayMs })` postpones the redelivery. */
  readonly nackDelay: boolean;
  /** Deliveries have `extendDeadline`. */
  readonly extendDeadline: boolean;
  /**
   * Consumers split the work by partition assignment, as Kafka consumer groups do: a consumer gets work only once a
   * rebalance included it, and one that closes hands its partitions over at once. The split tests let every consumer
   * join (one empty receive) before publishing; the reopen test does not expect a lease to pass after close().
   * Default false.
   */
  readonly assignsPartitions?: boolean;
  /** The lease, in ms, of every adapter opened without an override. Exact: tests wait for it to run out. */
  readonly visibilityTimeoutMs: number;
  /** How much later than a nominal instant (lease end, delay end, publish) the backend may act. Default 500 ms. */
  readonly slackMs?: number;
  /** Opens and connects an adapter on namespace `ns`. */
  open(ns: string, overrides?: QueueOverrides): Promise<QueueAdapter>;
  /** For eventually consistent backends: resolves once earlier writes are visible; called before "nothing there" checks. */
  settle?(): Promise<void>;
  /** After the whole suite. `passed: false` keeps failing state around for inspection (temp dirs, streams). */
  close(result: { passed: boolean }): Promise<void>;
}

/** Per-test view of the harness. Every adapter opened through it is closed after the test. */
interface Scope {
  readonly ns: string;
  /** Opens (again) the test's namespace. */
  open(overrides?: QueueOverrides): Promise<QueueAdapter>;
  /** Asserts nothing is handed out during `waitMs` (after letting an eventually consistent backend settle). */
  expectNothing(consumer: ReturnType<QueueAdapter['consumer']>, waitMs: number, message: string): Promise<void>;
}

/** Clock granularity (Date.now in adapters, performance.now here): how early an event may appear to fire. */
const EARLY_MS = 25;

export function runQueueContract(h: QueueHarness): void {
  const lease = h.visibilityTimeoutMs;
  const slack = h.slackMs ?? 500;
  const caps = h.capabilities;
  /** How long to wait for a nacked message to come back. */
  const nackWait = caps.nackRedelivery === 'immediate' ? slack : lease + slack;
  /** A lease long enough that nothing expires while a test is busy with other work. */
  const longLease = { visibilityTimeoutMs: Math.max(10_000, lease) };
  /** Upper bound on any single test; the tests themselves take one or two leases at most. */
  const testTimeoutMs = Math.max(10_000, 8 * (lease + slack));

  let failed = false;
  let counter = 0;
  let current: { adapters: QueueAdapter[]; failed: boolean } | undefined;

  function scopeFor(name: string): Scope {
    counter += 1;
    const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40);
    const ns = `t${counter}-${slug}`;
    const adapters: QueueAdapter[] = [];
    current = { adapters, failed: false };
    return {
      ns,
      async open(overrides) {
        const adapter = await h.open(ns, overrides);
        adapters.push(adapter);
        return adapter;
      },
      async expectNothing(consumer, waitMs, message) {
        await h.settle?.();
        await expectNothing(consumer, waitMs, message);
      },
    };
  }

  /** `test` with a scope, a time bound and an explicit skip reason. */
  function qtest(name: string, options: { skip?: string | false }, fn: (q: Scope) => Promise<void>): void {
    test(name, { timeout: testTimeoutMs, skip: options.skip || false }, async () => {
      const scope = scopeFor(name);
      const mine = current;
      try {
        await fn(scope);
      } catch (err) {
        if (mine) mine.failed = true;
        throw err;
      }
    });
  }

  describe(`queue contract: ${h.name}`, () => {
    afterEach(async (t) => {
      const scope = current;
      current = undefined;
      if (!scope) return;
      if (scope.failed || t.signal.aborted) failed = true;
      // Close everything the test opened, also after a failure or a timeout, then check that close() took effect.
      await Promise.all(scope.adapters.map((a) => a.close()));
      for (const a of scope.adapters) {
        const ping = await outcome(a.ping());
        assert.ok(!ping.ok && isRouterError(ping.error), `leak check: ${a.kind} adapter still answers ping() after close()`);
      }
    });

    after(() => h.close({ passed: !failed }));

    qtest('the harness declares what the adapter reports', {}, async (q) => {
      const a = await q.open();
      assert.deepEqual({ ...a.capabilities }, { ...caps }, 'harness.capabilities');
      await a.ping();
      await a.connect(); // idempotent
      await a.producer().publish({ body: bytes('probe') });
      const c = a.consumer();
      const [d] = await receiveN(c, 1, { timeoutMs: slack * 2 });
      assert.ok(d, 'the probe message arrived');
      assert.equal(d.receiveCount !== undefined, h.countsReceives, 'harness.countsReceives');
      assert.equal(typeof d.extendDeadline === 'function', h.extendDeadline, 'harness.extendDeadline');
      await d.ack();
    });

    // 1
    qtest('publish → receive → ack: byte-identical with its key, never redelivered', {}, async (q) => {
      const a = await q.open();
      const p = a.producer();
      const c = a.consumer();
      // Every byte value (0x00 and 0x0a included), handed over as a view at an offset into a larger buffer.
      const backing = new Uint8Array(1024).fill(0xee);
      const body = backing.subarray(100, 100 + 512);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7) % 256;
      const expected = Uint8Array.from(body);
      const key = 'octo-org/répo-✓';

      await p.publish({ body, key });
      const got = await receiveN(c, 1, { timeoutMs: slack * 2 });
      assert.equal(got.length, 1, 'one delivery');
      const d = got[0] as QueueDelivery;
      assertSameBytes(d.body, expected);
      assert.equal(d.key, key);
      assert.equal(typeof d.brokerId, 'string');
      assert.ok(d.brokerId.length > 0, 'brokerId is set');
      if (h.countsReceives) assert.equal(d.receiveCount, 1);
      await d.ack();

      await q.expectNothing(c, 50, 'right after the ack');
      await q.expectNothing(c, lease + slack, 'after the lease of the acked delivery ran out');
    });

    qtest('a message without a key, and a large binary body, round-trip intact', {}, async (q) => {
      const a = await q.open(longLease);
      const size = Math.min(caps.maxMessageBytes, 1024 * 1024); // 1 MiB or the declared limit
      const large = new Uint8Array(size);
      let x = 0x2545f491;
      for (let i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        large[i] = x & 0xff;
      }
      await a.producer().publish({ body: large });
      await a.producer().publish({ body: bytes('small, no key') });
      const got = await receiveN(a.consumer(), 2, { timeoutMs: slack * 4 });
      assert.equal(got.length, 2);
      const big = got.find((d) => d.body.byteLength === size);
      const small = got.find((d) => d.body.byteLength !== size);
      assert.ok(big && small, 'both messages arrived');
      assertSameBytes(big.body, large, 'the large body');
      assert.equal(text(small.body), 'small, no key');
      assert.equal(big.key, undefined);
      assert.equal(small.key, undefined);
      await Promise.all(got.map((d) => d.ack()));
    });

    qtest("a confirmed publish is a snapshot: later writes to the caller's or the consumer's buffer change nothing", {}, async (q) => {
      const a = await q.open();
      const c = a.consumer();
      const mine = Buffer.from('the original bytes');
      await a.producer().publish({ body: mine });
      mine.fill(0x21); // the publisher reuses its buffer once the publish is confirmed
      const [d] = await receiveN(c, 1, { timeoutMs: slack * 2 });
      assert.ok(d);
      assert.equal(text(d.body), 'the original bytes', "the publisher's later write leaked into the queued message");
      (d.body as Uint8Array).fill(0x3f); // a consumer scribbles on its copy, then hands the message back
      await d.nack();
      const [again] = await receiveN(c, 1, { timeoutMs: nackWait * 2 });
      assert.ok(again, 'the nacked message came back');
      assert.equal(text(again.body), 'the original bytes', "a consumer's write to its delivery changed the redelivery");
      await again.ack();
    });

    // 2
    qtest('publishBatch delivers every message (and an empty batch is a no-op)', {}, async (q) => {
      const a = await q.open(longLease);
      const p = a.producer();
      const messages: QueueMessage[] = Array.from({ length: 60 }, (_, i) => ({
        body: bytes(`batch-${String(i).padStart(3, '0')}`),
        key: i % 3 === 0 ? undefined : `repo-${i % 5}`,
      }));
      await p.publishBatch([]);
      await p.publishBatch(messages);
      const got = await drain(a.consumer(), { idleMs: 200, timeoutMs: 5_000, max: 25 });
      const seen = got.map((d) => `${text(d.body)}|${d.key ?? '-'}`).sort();
      const want = messages.map((m) => `${text(m.body)}|${m.key ?? '-'}`).sort();
      assert.deepEqual(seen, want);
    });

    // 3
    qtest(`nack redelivers (${caps.nackRedelivery}), receiveCount grows with each hand-out`, {}, async (q) => {
      const a = await q.open();
      const c = a.consumer();
      await a.producer().publish({ body: bytes('nack me'), key: 'k' });
      for (let round = 1; round <= 3; round++) {
        const sw = stopwatch();
        const [d] = await receiveN(c, 1, { timeoutMs: round === 1 ? slack * 2 : nackWait * 2 });
        assert.ok(d, `hand-out ${round} arrived`);
        if (round > 1 && caps.nackRedelivery === 'immediate') {
          assert.ok(sw.elapsed() < lease, `an immediate nack came back after ${Math.round(sw.elapsed())} ms, not before the lease (${lease} ms)`);
        }
        assert.equal(text(d.body), 'nack me');
        assert.equal(d.key, 'k');
        if (h.countsReceives) assert.equal(d.receiveCount, round);
        if (round < 3) await d.nack();
        else await d.ack();
      }
      await q.expectNothing(c, 100, 'after the final ack');
    });

    qtest('nack({ delayMs }) postpones the redelivery', { skip: !h.nackDelay && 'the harness declares no nack delay' }, async (q) => {
      const a = await q.open();
      const c = a.consumer();
      const delayMs = 600;
      await a.producer().publish({ body: bytes('later') });
      const [d] = await receiveN(c, 1, { timeoutMs: slack * 2 });
      assert.ok(d);
      const sw = stopwatch();
      await d.nack({ delayMs });
      await q.expectNothing(c, Math.floor(delayMs / 2), 'during the nack delay');
      const [again] = await receiveN(c, 1, { timeoutMs: delayMs + slack * 2 });
      assert.ok(again, 'the message came back after the delay');
      assert.ok(sw.elapsed() >= delayMs - EARLY_MS, `came back after ${Math.round(sw.elapsed())} ms, before the ${delayMs} ms delay`);
      assert.equal(text(again.body), 'later');
      if (h.countsReceives) assert.equal(again.receiveCount, 2);
      await again.ack();
    });

    // 4
    qtest('an unsettled delivery of a dead consumer comes back after the lease; its late ack is refused', {}, async (q) => {
      const a = await q.open();
      const p = a.producer();
      await p.publishBatch([{ body: bytes('orphan-1'), key: 'a' }, { body: bytes('orphan-2'), key: 'b' }]);
      const dead = a.consumer();
      const sw = stopwatch();
      const held = await receiveN(dead, 2, { timeoutMs: slack * 2 });
      assert.equal(held.length, 2, 'the doomed consumer got both');
      // `dead` is abandoned here: no ack, no nack, no close, as when its process is killed.

      const alive = a.consumer();
      const back = await receiveN(alive, 2, { timeoutMs: lease + slack * 2 });
      assert.equal(back.length, 2, 'both came back to another consumer');
      assert.ok(sw.elapsed() >= lease - EARLY_MS, `came back after ${Math.round(sw.elapsed())} ms, before the ${lease} ms lease ran out`);
      assert.deepEqual(back.map((d) => text(d.body)).sort(), ['orphan-1', 'orphan-2']);
      if (h.countsReceives) assert.deepEqual(back.map((d) => d.receiveCount), [2, 2]);

      const byBody = (body: string, list: QueueDelivery[]) => list.find((d) => text(d.body) === body) as QueueDelivery;
      // The dead consumer wakes up and settles what it no longer owns: refused either way, and nothing is lost.
      await rejectsWithCode(byBody('orphan-1', held).ack(), 'ROUTER_ERR_LEASE_LOST', 'late ack');
      await rejectsWithCode(byBody('orphan-2', held).nack(), 'ROUTER_ERR_LEASE_LOST', 'late nack');
      await byBody('orphan-1', back).ack();
      await byBody('orphan-2', back).ack();
      await q.expectNothing(alive, lease + slack, 'after the new holder acked');
    });

    /** With `assignsPartitions`, consumers must be group members before the work arrives, or one may get all of it. */
    const joinAll = async (consumers: ReturnType<QueueAdapter['consumer']>[]) => {
      if (!h.assignsPartitions) return;
      const got = await Promise.all(consumers.map((c) => c.receive({ max: 1, waitMs: 2 * slack })));
      assert.deepEqual(got.flat(), [], 'nothing to receive before the publish');
    };

    // 5
    qtest('two consumers in one group split the work without duplicates', {}, async (q) => {
      const a = await q.open(longLease);
      const total = 200;
      const consumers = [a.consumer(), a.consumer()];
      await joinAll(consumers);
      await a.producer().publishBatch(Array.from({ length: total }, (_, i) => ({ body: bytes(`job-${i}`) })));
      const perConsumer = await splitWork(consumers, total, 5_000);
      assertSplit(perConsumer, total, 'job');
      await q.expectNothing(a.consumer(), 200, 'after all were acked');
    });

    qtest(
      'consumers on two adapters of one namespace split the work without duplicates',
      { skip: !h.sharedAcrossAdapters && 'the harness declares no queue shared across adapters' },
      async (q) => {
        const a1 = await q.open(longLease);
        const a2 = await q.open(longLease);
        const total = 100;
        const consumers = [a1.consumer(), a2.consumer()];
        await joinAll(consumers);
        await a1.producer().publishBatch(Array.from({ length: total }, (_, i) => ({ body: bytes(`shared-${i}`) })));
        const perConsumer = await splitWork(consumers, total, 5_000);
        assertSplit(perConsumer, total, 'shared');
        await q.expectNothing(a2.consumer(), 200, 'after all were acked');
      },
    );

    // 6
    qtest('receive honours max and waitMs', {}, async (q) => {
      const a = await q.open(longLease);
      const c = a.consumer();

      let sw = stopwatch();
      assert.deepEqual(await c.receive({ max: 10, waitMs: 300 }), [], 'empty queue');
      assert.ok(sw.elapsed() >= 150, `an empty receive({ waitMs: 300 }) returned after ${Math.round(sw.elapsed())} ms`);
      assert.ok(sw.elapsed() <= 300 + slack, `an empty receive({ waitMs: 300 }) took ${Math.round(sw.elapsed())} ms`);
      sw = stopwatch();
      assert.deepEqual(await c.receive({ max: 10, waitMs: 0 }), [], 'waitMs: 0 on an empty queue');
      assert.ok(sw.elapsed() <= slack, `receive({ waitMs: 0 }) took ${Math.round(sw.elapsed())} ms`);

      await a.producer().publishBatch(Array.from({ length: 5 }, (_, i) => ({ body: bytes(`m${i}`) })));
      const seen: string[] = [];
      const first = await receiveN(c, 2, { timeoutMs: slack * 2, max: 2 }); // receiveN asserts ≤ max per call
      assert.equal(first.length, 2);
      const one = await c.receive({ max: 1, waitMs: slack });
      assert.ok(one.length <= 1, `receive({ max: 1 }) returned ${one.length}`);
      const rest = await receiveN(c, 5 - first.length - one.length, { timeoutMs: slack * 2, max: 3 });
      for (const d of [...first, ...one, ...rest]) {
        seen.push(text(d.body));
        await d.ack();
      }
      assert.deepEqual(seen.sort(), ['m0', 'm1', 'm2', 'm3', 'm4']);
    });

    qtest('an aborted receive resolves [] promptly and never throws', {}, async (q) => {
      const a = await q.open();
      const c = a.consumer();
      let sw = stopwatch();
      const r = await outcome(c.receive({ max: 1, waitMs: 5_000, signal: AbortSignal.timeout(100) }));
      assert.ok(r.ok, `an aborted receive rejected: ${r.ok ? '' : String(r.error)}`);
      assert.deepEqual(r.value, []);
      assert.ok(sw.elapsed() >= 100 - EARLY_MS && sw.elapsed() < 100 + slack, `aborted after 100 ms, returned after ${Math.round(sw.elapsed())} ms`);

      sw = stopwatch();
      const pre = await outcome(c.receive({ max: 1, waitMs: 5_000, signal: AbortSignal.abort() }));
      assert.ok(pre.ok && pre.value.length === 0, 'an already aborted signal resolves []');
      assert.ok(sw.elapsed() < slack, `an already aborted receive took ${Math.round(sw.elapsed())} ms`);
    });

    // 7
    qtest('a consumer blocked in receive wakes up promptly on a publish', {}, async (q) => {
      const a = await q.open();
      const c = a.consumer();
      const waitMs = 5_000;
      const blocked = c.receive({ max: 1, waitMs });
      // Give the receive time to park, measured by another consumer's empty receive rather than a sleep. The probe is
      // closed afterwards: an idle group member would keep the partitions it was assigned.
      const probe = a.consumer();
      await q.expectNothing(probe, 150, 'before the publish');
      await probe.close();
      const sw = stopwatch();
      await a.producer().publish({ body: bytes('wake up') });
      const got = await blocked;
      assert.equal(got.length, 1, 'the blocked receive returned the message');
      assert.ok(sw.elapsed() < slack + 250, `woke ${Math.round(sw.elapsed())} ms after the publish (waitMs ${waitMs})`);
      assert.equal(text((got[0] as QueueDelivery).body), 'wake up');
      await (got[0] as QueueDelivery).ack();
    });

    // 8
    qtest('consumer.close() while holding deliveries: they still settle, a waiting receive returns []', {}, async (q) => {
      // Not a test of leases: a long one, so that a slow moment between close() and the settles (a loaded CI host)
      // cannot end the lease first (Kafka's consumer then leaves its group and the settles fail with LEASE_LOST).
      const a = await q.open(longLease);
      const c = a.consumer();
      await a.producer().publishBatch(['keep', 'return', 'done'].map((s) => ({ body: bytes(s) })));
      const held = await receiveN(c, 3, { timeoutMs: slack * 2 });
      assert.equal(held.length, 3);
      const waiting = c.receive({ max: 10, waitMs: 5_000 }); // nothing is visible: all three are held

      const sw = stopwatch();
      await Promise.all([c.close(), c.close()]);
      assert.deepEqual(await waiting, [], 'the waiting receive returned nothing');
      assert.ok(sw.elapsed() < slack + 250, `the waiting receive returned ${Math.round(sw.elapsed())} ms after close()`);
      const afterClose = await outcome(c.receive({ max: 10, waitMs: 5_000 }));
      assert.ok(
        afterClose.ok ? afterClose.value.length === 0 : isRouterError(afterClose.error, 'ROUTER_ERR_QUEUE_CLOSED'),
        'receive on a closed consumer resolves [] or rejects with ROUTER_ERR_QUEUE_CLOSED',
      );
      assert.ok(sw.elapsed() < slack + 500, 'receive on a closed consumer returns promptly');

      const byBody = (s: string) => held.find((d) => text(d.body) === s) as QueueDelivery;
      await byBody('keep').ack();
      await byBody('return').nack();
      await byBody('done').ack();
      const c2 = a.consumer();
      const back = await receiveN(c2, 1, { timeoutMs: nackWait * 2 });
      assert.deepEqual(back.map((d) => text(d.body)), ['return'], 'only the nacked one comes back');
      await (back[0] as QueueDelivery).ack();
      await q.expectNothing(c2, lease + slack, 'the acked ones stay gone');
    });

    const publishBeforeClose = async (a: QueueAdapter) => {
      const p = a.producer();
      const batch = Array.from({ length: 600 }, (_, i) => ({ body: bytes(`pending-${i}`) }));
      // Not awaited: these are in flight when close() is called.
      const inFlight = [p.publish({ body: bytes('pending-first') }), p.publishBatch(batch), p.publish({ body: bytes('pending-last') })];
      const closing = a.close();
      const settled = await Promise.all(inFlight.map(outcome));
      await closing;
      for (const r of settled) assert.ok(r.ok, `a publish started before close() rejected: ${r.ok ? '' : String(r.error)}`);
      return 602;
    };

    qtest('publishes started before adapter.close() resolve', {}, async (q) => {
      await publishBeforeClose(await q.open());
    });

    qtest(
      'publishes started before adapter.close() are there after reopening',
      { skip: !h.persistent && 'the harness is not persistent' },
      async (q) => {
        const count = await publishBeforeClose(await q.open());
        const again = await q.open();
        const got = await drain(again.consumer(), { idleMs: 300, timeoutMs: 5_000, max: 200 });
        assert.equal(new Set(got.map((d) => text(d.body))).size, count, 'every confirmed publish survived the close');
        assert.equal(got.length, count, 'and none twice');
      },
    );

    qtest('settles issued before adapter.close() take effect', {}, async (q) => {
      const a = await q.open();
      await a.producer().publishBatch([{ body: bytes('acked') }, { body: bytes('nacked') }]);
      const held = await receiveN(a.consumer(), 2, { timeoutMs: slack * 2 });
      assert.equal(held.length, 2);
      const settles = held.map((d) => (text(d.body) === 'acked' ? d.ack() : d.nack()));
      await a.close();
      for (const r of await Promise.all(settles.map(outcome))) {
        assert.ok(r.ok, `a settle started before close() rejected: ${r.ok ? '' : String(r.error)}`);
      }
      if (!h.persistent) return;
      const again = await q.open();
      const back = await drain(again.consumer(), { idleMs: lease + slack, timeoutMs: 5_000 });
      assert.deepEqual(back.map((d) => text(d.body)), ['nacked'], 'after reopening, only the nacked message is there');
    });

    qtest(
      'deliveries unsettled when the adapter closed come back after reopening',
      { skip: !h.persistent && 'the harness is not persistent' },
      async (q) => {
        const a = await q.open();
        await a.producer().publishBatch(['u1', 'u2', 'u3'].map((s) => ({ body: bytes(s), key: s })));
        const sw = stopwatch();
        const held = await receiveN(a.consumer(), 3, { timeoutMs: slack * 2 });
        assert.equal(held.length, 3);
        await a.close();
        const again = await q.open();
        const back = await receiveN(again.consumer(), 3, { timeoutMs: lease + slack * 2 });
        assert.equal(back.length, 3, 'all three came back');
        if (!h.assignsPartitions) {
          assert.ok(sw.elapsed() >= lease - EARLY_MS, `came back after ${Math.round(sw.elapsed())} ms, inside the ${lease} ms lease`);
        }
        assert.deepEqual(back.map((d) => `${text(d.body)}|${d.key}`).sort(), ['u1|u1', 'u2|u2', 'u3|u3']);
        if (h.countsReceives) assert.deepEqual(back.map((d) => d.receiveCount), [2, 2, 2]);
        await Promise.all(back.map((d) => d.ack()));
      },
    );

    // 9
    qtest('settling twice rejects with ROUTER_ERR_ALREADY_SETTLED', {}, async (q) => {
      const a = await q.open(longLease);
      await a.producer().publishBatch(['ack-ack', 'ack-nack', 'nack-ack'].map((s) => ({ body: bytes(s) })));
      const c = a.consumer();
      const held = await receiveN(c, 3, { timeoutMs: slack * 2 });
      assert.equal(held.length, 3);
      for (const d of held) {
        const [first, second] = text(d.body).split('-');
        await (first === 'ack' ? d.ack() : d.nack());
        await rejectsWithCode(second === 'ack' ? d.ack() : d.nack(), 'ROUTER_ERR_ALREADY_SETTLED', `${text(d.body)}`);
        if (d.extendDeadline) await rejectsWithCode(d.extendDeadline(1_000), 'ROUTER_ERR_ALREADY_SETTLED', 'extendDeadline after settling');
      }
      const back = await receiveN(c, 1, { timeoutMs: nackWait * 2 });
      assert.deepEqual(back.map((d) => text(d.body)), ['nack-ack'], 'the second settle did not undo the first');
      await (back[0] as QueueDelivery).ack();
    });

    // 10
    qtest('poison (undecodable bytes) is reported once, acked, never redelivered', {}, async (q) => {
      const a = await q.open();
      const c = a.consumer();
      const garbage = [Uint8Array.of(0xff, 0xfe, 0x00, 0x13, 0x37), bytes('{"v":2,"type":"webhook"}\n{}')];
      const payload = bytes('{"action":"opened"}');
      const envelope = encodeEnvelope(
        {
          id: 'evt-1',
          source: 'github',
          sourceKind: 'github',
          dedupeKey: 'delivery-1',
          receivedAt: 1_700_000_000_000,
          headers: { 'x-github-event': 'issues' },
          routing: { event: 'issues', action: 'opened', repository: 'octo-org/repo' },
        },
        payload,
      );
      await a.producer().publishBatch([...garbage.map((body) => ({ body })), { body: envelope, key: 'octo-org/repo' }]);

      const poison: { body: string; reason: string }[] = [];
      const events: string[] = [];
      const deadline = stopwatch();
      // The worker's first step, reduced to what this test needs: poison is recorded and acked, an event is acked.
      while (poison.length + events.length < 3 && deadline.elapsed() < 5_000) {
        for (const d of await c.receive({ max: 10, waitMs: 200 })) {
          const r = intake(d, 5);
          if (r.kind === 'poison') poison.push({ body: Buffer.from(d.body).toString('hex'), reason: r.reason });
          else events.push(r.envelope.id);
          await d.ack();
          if (r.kind === 'event') assertSameBytes(r.envelope.body, payload, 'the decoded event body');
        }
      }
      await q.expectNothing(c, lease + slack, 'poison and events stay acked');
      assert.deepEqual(events, ['evt-1'], 'the valid envelope decoded once');
      assert.deepEqual(poison.map((p) => p.body).sort(), garbage.map((g) => Buffer.from(g).toString('hex')).sort(), 'each poison reported once');
      for (const p of poison) assert.match(p.reason, /envelope/, 'the reason says what is wrong');
    });

    qtest(
      'a message nacked again and again becomes poison once receiveCount exceeds maxReceives',
      { skip: !h.countsReceives && 'the adapter does not count receives' },
      async (q) => {
        const a = await q.open();
        const c = a.consumer();
        const maxReceives = 3;
        const envelope = encodeEnvelope(
          {
            id: 'evt-crash',
            source: 'github',
            sourceKind: 'github',
            dedupeKey: 'delivery-crash',
            receivedAt: 1_700_000_000_000,
            headers: {},
            routing: { event: 'push' },
          },
          bytes('{}'),
        );
        await a.producer().publish({ body: envelope });
        const trail: string[] = [];
        while (trail.length < maxReceives + 1) {
          const [d] = await receiveN(c, 1, { timeoutMs: nackWait * 2 });
          assert.ok(d, `hand-out ${trail.length + 1} arrived (trail: ${trail.join(', ')})`);
          const r = intake(d, maxReceives);
          trail.push(`${r.kind}@${d.receiveCount}`);
          if (r.kind === 'event') await d.nack(); // the handler keeps failing on our side
          else {
            assert.match(r.reason, new RegExp(`${maxReceives + 1} times`));
            await d.ack();
          }
        }
        assert.deepEqual(trail, ['event@1', 'event@2', 'event@3', 'poison@4']);
        await q.expectNothing(c, nackWait, 'the poison was acked, not looped');
      },
    );

    // 11
    qtest(
      'delayed publish: not received before the delay, received after it',
      { skip: !caps.delayedPublish && 'capabilities.delayedPublish is false' },
      async (q) => {
        const a = await q.open();
        const c = a.consumer();
        const delayMs = 700;
        const sw = stopwatch();
        await a.producer().publish({ body: bytes('scheduled'), delayMs });
        await a.producer().publish({ body: bytes('now') });
        const [now] = await receiveN(c, 1, { timeoutMs: slack * 2 });
        assert.equal(now && text(now.body), 'now', 'the undelayed message is not held back by the delayed one');
        await now?.ack();
        await q.expectNothing(c, Math.max(0, Math.floor(delayMs / 2 - sw.elapsed())), 'before the delay');
        const [later] = await receiveN(c, 1, { timeoutMs: delayMs + slack * 2 });
        assert.ok(later, 'the delayed message arrived');
        assert.ok(sw.elapsed() >= delayMs - EARLY_MS, `arrived after ${Math.round(sw.elapsed())} ms, before the ${delayMs} ms delay`);
        assert.equal(text(later.body), 'scheduled');
        await later.ack();
      },
    );

    qtest(
      'extendDeadline keeps a delivery leased past its original lease',
      { skip: !h.extendDeadline && 'the harness declares no extendDeadline' },
      async (q) => {
        const a = await q.open();
        await a.producer().publish({ body: bytes('long job') });
        const [d] = await receiveN(a.consumer(), 1, { timeoutMs: slack * 2 });
        assert.ok(d?.extendDeadline);
        await d.extendDeadline(lease * 4);
        await q.expectNothing(a.consumer(), lease + slack, 'while the extended lease runs');
        await d.ack(); // the lease was never lost
        await q.expectNothing(a.consumer(), 100, 'after the ack');
      },
    );

    // 12
    qtest('after adapter.close(): publish rejects ROUTER_ERR_QUEUE_CLOSED; close() is idempotent', {}, async (q) => {
      const a = await q.open();
      const before = a.producer();
      const c = a.consumer();
      const waiting = c.receive({ max: 1, waitMs: 5_000 });
      const sw = stopwatch();
      const closes = await Promise.all([a.close(), a.close()].map(outcome));
      assert.ok(closes.every((r) => r.ok), 'two concurrent close() calls both resolve');
      await a.close(); // and a later one too

      const r = await outcome(waiting);
      assert.ok(
        r.ok ? r.value.length === 0 : isRouterError(r.error, 'ROUTER_ERR_QUEUE_CLOSED'),
        'a receive waiting at close resolves [] (or rejects with ROUTER_ERR_QUEUE_CLOSED)',
      );
      assert.ok(sw.elapsed() < slack + 500, `the waiting receive returned ${Math.round(sw.elapsed())} ms after close()`);

      await rejectsWithCode(before.publish({ body: bytes('late') }), 'ROUTER_ERR_QUEUE_CLOSED', 'publish through a producer taken before close');
      await rejectsWithCode(before.publishBatch([{ body: bytes('late') }]), 'ROUTER_ERR_QUEUE_CLOSED', 'publishBatch after close');
      await rejectsWithCode(a.producer().publish({ body: bytes('late') }), 'ROUTER_ERR_QUEUE_CLOSED', 'publish through a producer taken after close');
      const ping = await outcome(a.ping());
      assert.ok(!ping.ok && isRouterError(ping.error), 'ping() rejects with a RouterError after close');
    });

    // 13
    qtest(
      'confirmed messages survive close and reopen',
      { skip: !h.persistent && 'the harness is not persistent' },
      async (q) => {
        const a = await q.open();
        const p = a.producer();
        const messages = Array.from({ length: 30 }, (_, i) => ({ body: Uint8Array.of(i, 0x0a, 0x00, 0xff, i), key: `k${i}` }));
        await p.publish(messages[0] as QueueMessage);
        await p.publishBatch(messages.slice(1));
        await a.close();

        const again = await q.open();
        const got = await drain(again.consumer(), { idleMs: 300, timeoutMs: 5_000 });
        const seen = got.map((d) => `${d.key}:${Buffer.from(d.body).toString('hex')}`).sort();
        assert.deepEqual(seen, messages.map((m) => `${m.key}:${Buffer.from(m.body).toString('hex')}`).sort());
        if (h.countsReceives) assert.ok(got.every((d) => d.receiveCount === 1), 'first hand-out after the restart counts 1');
      },
    );
  });
}

/** Runs one receive+ack loop per consumer until `total` distinct bodies were acked; returns each consumer's bodies. */
async function splitWork(consumers: ReturnType<QueueAdapter['consumer']>[], total: number, timeoutMs: number): Promise<string[][]> {
  const seen = new Set<string>();
  const deadline = stopwatch();
  return Promise.all(
    consumers.map(async (c) => {
      const mine: string[] = [];
      while (seen.size < total && deadline.elapsed() < timeoutMs) {
        const got = await c.receive({ max: 10, waitMs: 100 });
        for (const d of got) {
          mine.push(text(d.body));
          seen.add(text(d.body));
        }
        await Promise.all(got.map((d) => d.ack()));
      }
      return mine;
    }),
  );
}

function assertSplit(perConsumer: string[][], total: number, prefix: string): void {
  const all = perConsumer.flat();
  const duplicates = all.filter((b, i) => all.indexOf(b) !== i);
  assert.deepEqual(duplicates, [], 'no message was handed out twice');
  assert.deepEqual(
    [...all].sort(),
    Array.from({ length: total }, (_, i) => `${prefix}-${i}`).sort(),
    'the union is exactly what was published',
  );
  perConsumer.forEach((mine, i) => assert.ok(mine.length > 0, `consumer ${i + 1} got none of the ${total}`));
}
