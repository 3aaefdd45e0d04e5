/**
 * The transport contract: what every transport (https, kafka, sqs, amqp, redis, …) must do with a delivery,
 * checked against a real receiving end (conventions §8, outpost's PublisherSuite).
 *
 * A harness supplies the provider, the SenderDeps it needs, and a fresh target per test: for https a loopback HTTP
 * receiver, for a broker a topic/queue/stream whose `readBack` consumes what arrived. The suite never looks inside a
 * sender; it sends through the port and reads back at the far end.
 *
 * What is checked:
 * - the body arrives byte-identical (a real GitHub payload from @octokit/webhooks-examples, and random bytes);
 * - webhook-id, webhook-timestamp, webhook-attempt and user-agent are present; webhook-signature verifies with the
 *   reference `standardwebhooks` library (and, for raw bytes, with an independent HMAC); during a rotation there are
 *   two signatures, each verifying with its own secret;
 * - the source's event headers pass through; the source's own signature and token never do;
 * - close() waits for an in-flight send (capability `hold`); send() after close() throws.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, test, type TestContext } from 'node:test';
import { Webhook } from 'standardwebhooks';
import type { OutboundMessage, SenderDeps, TransportProvider, TransportSender } from '../../transports/port.ts';

/** One message as it arrived at the far end. Header names in lower case. */
export interface ReceivedMessage {
  readonly body: Buffer;
  readonly headers: Readonly<Record<string, string>>;
}

/** A held delivery: the far end has the message but does not complete it (no HTTP response, no broker ack). */
export interface Hold {
  /** Resolves when the held message arrived at the far end. */
  readonly arrived: Promise<void>;
  release(): void;
}

export interface TransportTarget {
  /** Resolves with every message received so far once at least `count` arrived; rejects after the harness bound. */
  readBack(count: number): Promise<ReceivedMessage[]>;
  /**
   * Optional capability: hold the next message at the far end until release(). Transports whose far end cannot
   * delay completion (fire-and-forget publishes) leave it out and the close()-waits test is skipped.
   */
  hold?(): Hold;
  close(): Promise<void>;
}

export interface TransportHarness<C extends { kind: string }, T extends TransportTarget = TransportTarget> {
  readonly name: string;
  readonly provider: TransportProvider<C>;
  /** The deps handed to createSender (logger, clock, and whatever the transport needs beyond SenderDeps). */
  deps(): SenderDeps;
  /** A fresh, isolated far end for one test. */
  openTarget(): Promise<T>;
  /** A valid config (it must pass provider.configSchema) pointing at `target`, with default signing. */
  makeConfig(target: T): C;
}

const require = createRequire(import.meta.url);

/** A real GitHub `push` payload, serialised the way GitHub does (compact JSON, UTF-8). */
export function githubExampleBody(): Buffer {
  const all = require('@octokit/webhooks-examples/api.github.com/index.json') as { name: string; examples: unknown[] }[];
  const push = all.find((d) => d.name === 'push')?.examples[0];
  assert.ok(push, '@octokit/webhooks-examples has a push example');
  return Buffer.from(JSON.stringify(push), 'utf8');
}

export const randomWhsec = (): string => `whsec_${randomBytes(32).toString('base64')}`;

/** The source's own credentials: a transport must never forward them. */
export const SOURCE_SECRET_HEADERS: Readonly<Record<string, string>> = {
  'X-Hub-Signature-256': `sha256=${'a'.repeat(64)}`,
  'X-Hub-Signature': `sha1=${'b'.repeat(40)}`,
  'X-Gitlab-Token': 'source-token',
  Authorization: 'Bearer source-token',
};

export function makeMessage(overrides: Partial<OutboundMessage> = {}): OutboundMessage {
  const deliveryId = overrides.deliveryId ?? `dlv_${randomUUID()}`;
  return {
    deliveryId,
    attempt: 1,
    eventId: `evt_${randomUUID()}`,
    source: 'github',
    routing: { event: 'push', repository: 'octo-org/octo-repo' },
    headers: {
      'content-type': 'application/json',
      'X-GitHub-Event': 'push',
      'X-GitHub-Delivery': randomUUID(),
      'X-GitHub-Hook-ID': '123456',
      ...SOURCE_SECRET_HEADERS,
    },
    body: githubExampleBody(),
    secrets: { current: randomWhsec() },
    ...overrides,
  };
}

/** The Standard Webhooks signature computed independently of the router (node:crypto over the raw bytes). */
function independentSignature(secret: string, id: string, timestamp: string, body: Uint8Array): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest('base64')}`;
}

export function runTransportContract<C extends { kind: string }, T extends TransportTarget>(h: TransportHarness<C, T>): void {
  describe(`transport contract: ${h.name}`, () => {
    /** Opens a target and a sender for one test; both are closed when the test ends, pass or fail. */
    async function setup(t: TestContext): Promise<{ target: T; sender: TransportSender }> {
      const target = await h.openTarget();
      const config = h.provider.configSchema.parse(h.makeConfig(target));
      const sender = h.provider.createSender(config, h.deps());
      t.after(async () => {
        await sender.close();
        await target.close();
      });
      return { target, sender };
    }

    const signal = () => AbortSignal.timeout(10_000);

    test('a GitHub payload arrives byte-identical, with Standard Webhooks headers that verify', async (t) => {
      const { target, sender } = await setup(t);
      const message = makeMessage({ attempt: 3 });
      const outcome = await sender.send(message, signal());
      assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));

      const [got] = await target.readBack(1);
      assert.ok(got);
      assert.ok(got.body.equals(Buffer.from(message.body)), 'body is byte-identical');
      assert.equal(got.headers['webhook-id'], message.deliveryId);
      assert.match(got.headers['webhook-timestamp'] ?? '', /^\d{10}$/);
      assert.ok(Math.abs(Number(got.headers['webhook-timestamp']) - Date.now() / 1000) < 300, 'timestamp is now');
      assert.equal(got.headers['webhook-attempt'], '3');
      assert.match(got.headers['user-agent'] ?? '', /^webhook-router\/\d+\.\d+\.\d+/);
      assert.match(got.headers['webhook-signature'] ?? '', /^v1,[A-Za-z0-9+/]+=*$/);
      // The reference library agrees (it also checks the ±5 min timestamp tolerance).
      const verified = new Webhook(message.secrets.current).verify(got.body, { ...got.headers });
      assert.deepEqual(verified, JSON.parse(Buffer.from(message.body).toString('utf8')));
    });

    test('arbitrary bytes arrive byte-identical and are signed over the exact bytes', async (t) => {
      const { target, sender } = await setup(t);
      // Random bytes (invalid UTF-8 among them) and every byte value, so no layer may decode or re-encode the body.
      const body = Buffer.concat([randomBytes(4096), Buffer.from(Array.from({ length: 256 }, (_, i) => i)), Buffer.from([0xff, 0xfe, 0xc3])]);
      const message = makeMessage({ body, headers: { 'content-type': 'application/octet-stream' } });
      const outcome = await sender.send(message, signal());
      assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));

      const [got] = await target.readBack(1);
      assert.ok(got);
      assert.ok(got.body.equals(body), 'body is byte-identical');
      // standardwebhooks decodes Buffers as UTF-8 before signing, so it cannot check binary bodies: verify independently.
      const expected = independentSignature(message.secrets.current, message.deliveryId, got.headers['webhook-timestamp']!, body);
      assert.equal(got.headers['webhook-signature'], expected);
    });

    test('during a rotation both signatures are sent, each verifying with its own secret', async (t) => {
      const { target, sender } = await setup(t);
      const current = randomWhsec();
      const previous = randomWhsec();
      const message = makeMessage({ secrets: { current, previous } });
      assert.equal((await sender.send(message, signal())).kind, 'delivered');

      const [got] = await target.readBack(1);
      assert.ok(got);
      const signatures = (got.headers['webhook-signature'] ?? '').split(' ');
      assert.equal(signatures.length, 2);
      for (const secret of [current, previous]) {
        assert.doesNotThrow(() => new Webhook(secret).verify(got.body, { ...got.headers }));
      }
      assert.throws(() => new Webhook(randomWhsec()).verify(got.body, { ...got.headers }), /No matching signature/);
    });

    test("the source's event headers pass through; its signature and token never do", async (t) => {
      const { target, sender } = await setup(t);
      const message = makeMessage();
      assert.equal((await sender.send(message, signal())).kind, 'delivered');

      const [got] = await target.readBack(1);
      assert.ok(got);
      assert.equal(got.headers['x-github-event'], 'push');
      assert.equal(got.headers['x-github-delivery'], message.headers['X-GitHub-Delivery']);
      assert.equal(got.headers['x-github-hook-id'], '123456');
      assert.equal(got.headers['content-type'], 'application/json');
      for (const name of Object.keys(SOURCE_SECRET_HEADERS)) {
        assert.equal(got.headers[name.toLowerCase()], undefined, `${name} is not forwarded`);
      }
      const raw = JSON.stringify(got.headers);
      for (const value of Object.values(SOURCE_SECRET_HEADERS)) assert.ok(!raw.includes(value), 'no source credential under any name');
    });

    test('each attempt carries the same webhook-id and its own attempt number', async (t) => {
      const { target, sender } = await setup(t);
      const message = makeMessage();
      await sender.send(message, signal());
      await sender.send({ ...message, attempt: 2 }, signal());
      const got = await target.readBack(2);
      assert.deepEqual(
        got.map((m) => [m.headers['webhook-id'], m.headers['webhook-attempt']]),
        [
          [message.deliveryId, '1'],
          [message.deliveryId, '2'],
        ],
      );
    });

    test('close() waits for an in-flight send', async (t) => {
      const target = await h.openTarget();
      t.after(() => target.close());
      if (!target.hold) {
        t.skip(`${h.name} cannot hold a message at the far end`);
        return;
      }
      const sender = h.provider.createSender(h.provider.configSchema.parse(h.makeConfig(target)), h.deps());
      t.after(() => sender.close());
      const held = target.hold();
      const sending = sender.send(makeMessage(), signal());
      await held.arrived;

      let closed = false;
      const closing = sender.close().then(() => (closed = true));
      // Let every pending callback and I/O poll run once or twice: close() must still be waiting.
      for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
      assert.equal(closed, false, 'close() resolved while a send was in flight');

      held.release();
      const outcome = await sending;
      assert.equal(outcome.kind, 'delivered', JSON.stringify(outcome));
      await closing;
      assert.equal(closed, true);
      // Idempotent: a second close shares the result.
      await sender.close();
    });

    test('send() after close() throws ROUTER_ERR_SENDER_CLOSED and sends nothing', async (t) => {
      const { target, sender } = await setup(t);
      await sender.close();
      await assert.rejects(sender.send(makeMessage(), signal()), { code: 'ROUTER_ERR_SENDER_CLOSED' });
      await Promise.all([sender.close(), sender.close()]);
      // A marker delivered through a second sender proves the far end is live and got only the marker.
      const probe = h.provider.createSender(h.provider.configSchema.parse(h.makeConfig(target)), h.deps());
      t.after(() => probe.close());
      const marker = makeMessage();
      assert.equal((await probe.send(marker, signal())).kind, 'delivered');
      const got = await target.readBack(1);
      assert.deepEqual(
        got.map((m) => m.headers['webhook-id']),
        [marker.deliveryId],
      );
    });
  });
}
