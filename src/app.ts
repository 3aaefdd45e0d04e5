/**
 * Composition root for every role: wires configuration to adapters and servers and returns one object with
 * `start()` and `close()`. Tests call buildApp directly with port 0 listeners; src/main.ts is the only caller that
 * touches the process (signals, exit codes).
 *
 * Every role with a store (worker, api) gets it wrapped with withSecretEncryption: subscriber secrets are encrypted
 * at rest with `secrets.encryptionKey` and every component sees plaintext through the unchanged store port.
 *
 * Shutdown order (design §2): readiness turns 503, listeners stop accepting, in-flight requests finish (up to
 * shutdownGraceMs, then their connections are cut), the queue commits what it accepted, and the management
 * listener closes last so probes see the drain.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { lookup } from 'node:dns/promises';
import { createQueue } from '../adapters/queue/index.ts';
import type { QueueAdapter } from '../adapters/queue/port.ts';
import { createStore } from '../adapters/store/index.ts';
import type { Store } from '../adapters/store/port.ts';
import { createEgressPolicy, type LookupAll } from '../transports/https/index.ts';
import { createSenderFor } from '../transports/index.ts';
import type { SenderDeps } from '../transports/port.ts';
import type { Config } from '../config/schema.ts';
import { answerClientErrors } from './client-errors.ts';
import { RouterError } from './errors.ts';
import type { Logger } from './logger.ts';
import { createManagementHandler } from './management.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { createReceiver } from './receiver/receiver.ts';
import { createKeyring } from './secrets/keyring.ts';
import { withSecretEncryption } from './secrets/store.ts';
import { createWorker } from './worker/worker.ts';

export type Role = 'receiver' | 'worker' | 'api';

export interface App {
  start(): Promise<void>;
  close(): Promise<void>;
  /** Bound ports, known after start() (useful with port 0). */
  readonly ports: { webhooks?: number; api?: number; management?: number };
  readonly metrics: Metrics;
  /** Present when the app runs the receiver or the worker role (the API never touches the queue). */
  readonly queue: QueueAdapter | undefined;
  /** Present when the app runs the worker or the api role; encrypts and decrypts subscriber secrets. */
  readonly store: Store | undefined;
}

export interface AppDeps {
  readonly logger: Logger;
  readonly roles: readonly Role[];
  /** Apply store migrations at start (the embedded `serve`); other roles refuse a schema that is behind. */
  readonly migrate?: boolean;
  /** Name resolution for deliveries and the API's SSRF check; `dns.promises.lookup` when absent (tests inject one). */
  readonly lookup?: LookupAll;
}

export async function buildApp(config: Readonly<Config>, deps: AppDeps): Promise<App> {
  const logger = deps.logger;
  const metrics = createMetrics();
  const needsQueue = deps.roles.includes('receiver') || deps.roles.includes('worker');
  const queue = needsQueue ? await createQueue(config.queue, { logger: logger.child({ component: 'queue' }) }) : undefined;
  let draining = false;
  const servers: { name: string; server: Server; port: number }[] = [];
  const ports: App['ports'] = {};

  if (deps.roles.includes('api')) assertApiConfigured(config);
  const needsStore = deps.roles.includes('worker') || deps.roles.includes('api');
  const store = needsStore ? withSecretEncryption(await createStore(config.store), createKeyring(config.secrets)) : undefined;
  const egress = createEgressPolicy(config.egress.allow);
  const senderDeps: SenderDeps = {
    logger: logger.child({ component: 'sender' }),
    now: Date.now,
    egress,
    lookup: deps.lookup ?? ((host, options) => lookup(host, options)),
    delivery: config.delivery,
  };
  const worker =
    store &&
    queue &&
    deps.roles.includes('worker') &&
    createWorker({
      config,
      queue,
      store,
      metrics,
      logger: logger.child({ component: 'worker' }),
      createSender: (subscriber) => createSenderFor(subscriber, { ...senderDeps, logger: logger.child({ component: 'sender', subscriberId: subscriber.id }) }),
    });
  const api =
    store && deps.roles.includes('api')
      ? // express and the API's schemas load only where the API runs.
        (await import('./api/app.ts')).createApi({ store, config, senderDeps, logger: logger.child({ component: 'api' }), metrics, draining: () => draining })
      : undefined;

  const management = createServer(
    createManagementHandler({
      metrics,
      draining: () => draining,
      checkTimeoutMs: 1_000,
      checks: [
        ...(queue ? [{ name: 'queue', check: () => queue.ping() }] : []),
        ...(store ? [{ name: 'store', check: () => store.ping() }] : []),
      ],
    }),
  );

  if (queue && deps.roles.includes('receiver')) {
    assertBodiesFit(config, queue);
    const receiver = createServer(
      {
        // Longer than a typical load balancer's idle timeout (60 s), so the balancer closes idle connections first.
        keepAliveTimeout: 65_000,
        headersTimeout: 10_000,
        requestTimeout: 120_000, // a 25 MB body over a slow link
      },
      createReceiver({
        config,
        producer: queue.producer(),
        queueKind: queue.kind,
        metrics,
        logger: logger.child({ component: 'receiver' }),
        draining: () => draining,
      }),
    );
    servers.push({ name: 'webhooks', server: receiver, port: config.listen.webhooks });
  }
  if (api) {
    const server = createServer({ keepAliveTimeout: 65_000, headersTimeout: 10_000, requestTimeout: 130_000 }, api.handler);
    servers.push({ name: 'api', server, port: config.listen.api });
  }
  answerClientErrors(management);
  for (const { server } of servers) answerClientErrors(server);

  let closing: Promise<void> | undefined;

  return {
    ports,
    metrics,
    queue,

    store,

    async start() {
      await queue?.connect();
      if (store) {
        await store.connect();
        const status = deps.migrate ? await store.migrate() : await store.schemaStatus();
        if (status.current !== status.latest) {
          throw new RouterError(
            'ROUTER_ERR_SCHEMA_MISMATCH',
            `store schema is v${status.current}, this release needs v${status.latest}: run \`webhook-router migrate\``,
          );
        }
        if (config.egress.allow.length > 0) logger.warn({ allow: config.egress.allow }, 'egress allowlist opens exceptions to the SSRF rules');
        if (worker) worker.start();
      }
      for (const s of servers) ports[s.name as 'webhooks' | 'api'] = await listen(s.server, s.port, config.listen.host);
      ports.management = await listen(management, config.listen.management, config.listen.host);
      logger.info({ ports, roles: deps.roles, queue: queue?.kind, durability: queue?.capabilities.durability }, 'webhook-router started');
    },

    close() {
      closing ??= (async () => {
        draining = true;
        const started = Date.now();
        const deadline = started + config.shutdownGraceMs;
        await Promise.all(servers.map((s) => drain(s.server, config.shutdownGraceMs)));
        api?.close(); // whatever still runs after the drain (a paced replay, a test ping) stops now
        if (worker) await worker.close(deadline);
        await queue?.close();
        await store?.close();
        await drain(management, 1_000);
        logger.info({ ms: Date.now() - started }, 'webhook-router stopped');
      })();
      return closing;
    },
  };
}

/** The api role writes secrets and answers callers: it needs an encryption key and at least one token. */
function assertApiConfigured(config: Readonly<Config>): void {
  const missing: string[] = [];
  if (config.secrets.encryptionKey === undefined) {
    missing.push('secrets.encryptionKey (or secrets.encryptionKey_FILE): generate one with `openssl rand -base64 32`');
  }
  if (config.api.tokens.length === 0) missing.push('api.tokens: at least one { name, token | tokenSha256, scopes }');
  if (missing.length > 0) {
    throw new RouterError('ROUTER_ERR_CONFIG_INVALID', `the api role needs:\n  - ${missing.join('\n  - ')}`);
  }
}

/** Envelope metadata stays well below this; the rest of a message is the body, byte for byte. */
const ENVELOPE_OVERHEAD_BYTES = 64 * 1024;

function assertBodiesFit(config: Readonly<Config>, queue: QueueAdapter): void {
  const room = queue.capabilities.maxMessageBytes - ENVELOPE_OVERHEAD_BYTES;
  for (const source of config.sources) {
    if (source.maxBodyBytes > room) {
      throw new RouterError(
        'ROUTER_ERR_MESSAGE_TOO_LARGE',
        `source "${source.id}" accepts bodies up to ${source.maxBodyBytes} bytes, but a ${queue.kind} queue message carries at most ${room}`,
      );
    }
  }
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Stops accepting, lets in-flight requests finish within graceMs, then cuts what is left. */
function drain(server: Server, graceMs: number): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}
