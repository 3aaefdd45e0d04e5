/**
 * Starts the router in-process for tests: buildApp with the 'receiver' role, every listener on 127.0.0.1 port 0, a
 * memory queue or a SQLite queue in a fresh temp dir. The configuration goes through the real schema
 * (config/schema.ts), so defaults and validation are the ones production sees.
 *
 * Also: reading back what the receiver published (decoded envelopes), asserting that nothing was published, and a
 * free-port helper for tests that spawn the CLI.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { z } from 'zod';
import type { QueueAdapter } from '../../adapters/queue/port.ts';
import { Config } from '../../config/schema.ts';
import { type App, buildApp } from '../../src/app.ts';
import { decodeEnvelope, type Envelope } from '../../src/envelope.ts';
import { createLogger } from '../../src/logger.ts';

export type ConfigInput = z.input<typeof Config>;
export type SourceInput = ConfigInput['sources'][number];

export interface TestAppOptions {
  /** Default: one github source `github` with secret `github-secret`. */
  readonly sources?: readonly SourceInput[];
  /** 'memory' (default), 'sqlite' (a file in a fresh temp dir), or a full queue section (its `path` is kept). */
  readonly queue?: 'memory' | 'sqlite' | ConfigInput['queue'];
  /** Extra sqlite queue settings when queue is 'sqlite'. */
  readonly sqlite?: Omit<Extract<NonNullable<ConfigInput['queue']>, { kind: 'sqlite' }>, 'kind' | 'path'>;
  readonly receiver?: ConfigInput['receiver'];
  readonly shutdownGraceMs?: number;
}

export interface TestApp {
  readonly app: App;
  readonly config: Readonly<Config>;
  readonly queue: QueueAdapter;
  /** http://127.0.0.1:<port> of the webhook listener. */
  readonly webhooksUrl: string;
  /** http://127.0.0.1:<port> of the management listener. */
  readonly managementUrl: string;
  /** `${webhooksUrl}/webhooks/${sourceId}`. */
  url(sourceId: string): string;
  /** The temp dir holding the SQLite queue, when there is one. */
  readonly dir: string | undefined;
  /** Closes the app (idempotent) and removes the temp dir unless KEEP_TEST_TMP is set. */
  close(): Promise<void>;
}

export const DEFAULT_GITHUB_SECRET = 'github-secret';

/** Builds the config through the real schema; listeners on 127.0.0.1 port 0. */
export function testConfig(options: TestAppOptions = {}, dir?: string): Readonly<Config> {
  let queue: ConfigInput['queue'];
  if (options.queue === undefined || options.queue === 'memory') queue = { kind: 'memory' };
  else if (options.queue === 'sqlite') {
    if (!dir) throw new Error('a sqlite queue needs a temp dir');
    queue = { kind: 'sqlite', path: join(dir, 'queue.db'), ...options.sqlite };
  } else queue = options.queue;
  return Config.parse({
    listen: { webhooks: 0, api: 0, management: 0, host: '127.0.0.1' },
    queue,
    sources: options.sources ? [...options.sources] : [{ id: 'github', kind: 'github', secrets: [DEFAULT_GITHUB_SECRET] }],
    receiver: options.receiver ?? {},
    log: { level: 'silent' },
    shutdownGraceMs: options.shutdownGraceMs ?? 2_000,
  } satisfies ConfigInput);
}

export async function startApp(options: TestAppOptions = {}): Promise<TestApp> {
  const dir = options.queue === 'sqlite' ? mkdtempSync(join(tmpdir(), 'wr-test-')) : undefined;
  const config = testConfig(options, dir);
  // TEST_LOG_LEVEL=debug shows the router's logs while debugging a test.
  const logger = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const app = await buildApp(config, { logger, roles: ['receiver'] });
  try {
    await app.start();
  } catch (err) {
    await app.close().catch(() => {});
    if (dir) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const webhooksUrl = `http://127.0.0.1:${app.ports.webhooks}`;
  let closing: Promise<void> | undefined;
  return {
    app,
    config,
    queue: app.queue as QueueAdapter, // the receiver role always has one
    webhooksUrl,
    managementUrl: `http://127.0.0.1:${app.ports.management}`,
    url: (sourceId) => `${webhooksUrl}/webhooks/${sourceId}`,
    dir,
    close() {
      closing ??= (async () => {
        await app.close();
        if (dir && !process.env.KEEP_TEST_TMP) rmSync(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

/**
 * Receives and acks up to `count` messages, decoding each envelope; waits at most `timeoutMs` for them to appear.
 * Returns what arrived (possibly fewer than `count`); the caller asserts on the number.
 */
export async function takeEnvelopes(queue: QueueAdapter, count: number, timeoutMs = 2_000): Promise<Envelope[]> {
  const consumer = queue.consumer();
  const out: Envelope[] = [];
  const deadline = Date.now() + timeoutMs;
  try {
    while (out.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const batch = await consumer.receive({ max: count - out.length, waitMs: left });
      for (const delivery of batch) out.push(decodeEnvelope(delivery.body));
      await Promise.all(batch.map((delivery) => delivery.ack())); // one group commit for the batch
    }
  } finally {
    await consumer.close();
  }
  return out;
}

/**
 * Everything currently in the queue, acked and decoded, without waiting. Publishes are confirmed before the receiver
 * answers, so after a response this sees whatever that request published.
 */
export async function drainEnvelopes(queue: QueueAdapter): Promise<Envelope[]> {
  const consumer = queue.consumer();
  const out: Envelope[] = [];
  try {
    for (;;) {
      const batch = await consumer.receive({ max: 1_000, waitMs: 0 });
      if (batch.length === 0) break;
      for (const delivery of batch) out.push(decodeEnvelope(delivery.body));
      await Promise.all(batch.map((delivery) => delivery.ack())); // one group commit for the batch
    }
  } finally {
    await consumer.close();
  }
  return out;
}

/** A port that was free a moment ago (listen on 0, read it, close). For child processes that need a fixed port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Creates a temp dir; the returned remove() deletes it (unless KEEP_TEST_TMP is set). */
export function tempDir(prefix = 'wr-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    remove: () => {
      if (!process.env.KEEP_TEST_TMP) rmSync(path, { recursive: true, force: true });
    },
  };
}
