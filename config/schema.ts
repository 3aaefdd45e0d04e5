/**
 * The one configuration schema. Everything the router reads at start-up is declared here, with its default and its
 * unit in the key name. `loadConfig` (config/load.ts) layers defaults ← YAML ← ROUTER_* environment ← *_FILE secrets,
 * validates once against this schema and freezes the result. `config/reference.yaml` and `config/config.schema.json`
 * are generated from it (`npm run gen:config`); a test fails when the committed copies drift.
 *
 * Secrets never have a default. Key names listed in `secretKeys` are redacted by `config print` and in logs.
 */
import { z } from 'zod';

const MiB = 1024 * 1024;

const port = z.number().int().min(0).max(65535);

export const Listen = z
  .object({
    webhooks: port.default(8080).describe('Port of the webhook receiver (POST /webhooks/{sourceId}).'),
    api: port.default(8081).describe('Port of the subscriber REST API.'),
    management: port.default(9090).describe('Port of /livez, /readyz and /metrics.'),
    host: z.string().min(1).default('0.0.0.0').describe('Address every listener binds to.'),
  })
  .strict();

const SqliteQueue = z
  .object({
    kind: z.literal('sqlite'),
    path: z.string().min(1).default('./data/queue.db').describe('Database file; created with its directory.'),
    synchronous: z
      .enum(['full', 'normal'])
      .default('full')
      .describe('full: a confirmed publish survives power loss (fsync per group commit); normal: survives a process crash.'),
    batchWindowMs: z.number().int().min(0).max(100).default(2).describe('Group commit: how long publishes gather before one commit.'),
    batchMaxItems: z.number().int().min(1).max(10_000).default(512).describe('Group commit: commit early once this many wait.'),
    maxPendingPublishes: z
      .number()
      .int()
      .min(1)
      .default(20_000)
      .describe('Publishes waiting for a commit beyond this are refused at once (the receiver answers 503).'),
    visibilityTimeoutMs: z
      .number()
      .int()
      .min(100)
      .default(60_000)
      .describe('A received message not settled within this lease returns to the queue (its consumer is presumed dead).'),
    pollIntervalMs: z.number().int().min(1).max(5_000).default(50).describe('How often an idle consumer looks for work written by other processes.'),
    checkpointIntervalMs: z
      .number()
      .int()
      .min(10)
      .default(50)
      .describe('WAL checkpoints run on a worker thread at this interval, never on the commit path. Short keeps each checkpoint fsync small (at 1 s, p99 of a 202 was 115 ms at 5,000/s; at 25 ms, 20 ms).'),
  })
  .strict();

const MemoryQueue = z
  .object({
    kind: z.literal('memory'),
    visibilityTimeoutMs: z.number().int().min(10).default(30_000).describe('Lease of a received, unsettled message.'),
  })
  .strict()
  .describe('Tests and demos only: nothing survives a restart.');

const RedisQueue = z
  .object({
    kind: z.literal('redis'),
    url: z.string().min(1).default('redis://127.0.0.1:6379').describe('redis:// or rediss:// URL; a password in it is a secret (url_FILE).'),
    stream: z.string().min(1).default('router:events').describe('The stream every receiver appends to.'),
    group: z.string().min(1).default('router-workers').describe('The consumer group all workers join.'),
    consumerPrefix: z.string().default('').describe('Consumer names are <prefix or host name>-<pid>-<n>.'),
    visibilityTimeoutMs: z
      .number()
      .int()
      .min(100)
      .default(60_000)
      .describe("An entry a consumer has held this long without settling is taken over by another (its consumer died)."),
    connectTimeoutMs: z.number().int().min(100).default(5_000),
  })
  .strict()
  .describe('Redis Streams. For "nothing lost", run Redis with appendonly yes and appendfsync always.');

const KafkaQueue = z
  .object({
    kind: z.literal('kafka'),
    brokers: z.array(z.string().min(1)).min(1).describe('host:port of at least one broker.'),
    topic: z.string().min(1).default('router-events'),
    groupId: z.string().min(1).default('router-workers').describe('The consumer group all workers join.'),
    clientId: z.string().min(1).default('webhook-router'),
    partitions: z.number().int().min(1).default(12).describe('Partitions of the topic when the router creates it (events are keyed by repository).'),
    replicationFactor: z.number().int().min(1).default(1).describe('Replicas of the topic when the router creates it (3 in production).'),
    connectTimeoutMs: z.number().int().min(100).default(10_000),
    sessionTimeoutMs: z
      .number()
      .int()
      .min(6_000) // brokers refuse less (group.min.session.timeout.ms)
      .default(30_000)
      .describe('A worker silent this long is evicted from the group; its partitions move.'),
    maxPollIntervalMs: z
      .number()
      .int()
      .min(100)
      .default(60_000)
      .describe('A consumer not asking for messages this long commits what it can and leaves the group (a hung worker).'),
  })
  .strict();

export const Queue = z.discriminatedUnion('kind', [SqliteQueue, MemoryQueue, RedisQueue, KafkaQueue]);
export type QueueConfig = z.infer<typeof Queue>;

const SqliteStore = z
  .object({
    kind: z.literal('sqlite'),
    path: z.string().min(1).default('./data/router.db').describe('Database file; created with its directory.'),
  })
  .strict();

const PostgresStore = z
  .object({
    kind: z.literal('postgres'),
    url: z
      .string()
      .min(1)
      .describe('postgres://user:password@host:5432/database; a password in it is a secret (url_FILE).'),
    schema: z.string().min(1).max(63).default('public').describe('Schema (search_path) holding the tables; created if missing.'),
    poolSize: z.number().int().min(1).max(200).default(16).describe('Connections per process.'),
    connectTimeoutMs: z.number().int().min(100).default(5_000),
  })
  .strict();

export const Store = z.discriminatedUnion('kind', [SqliteStore, PostgresStore]);
export type StoreConfig = z.infer<typeof Store>;

export const sourceKinds = ['github', 'gitlab', 'standard-webhooks'] as const;

export const Source = z
  .object({
    id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, 'letters, digits, "_" and "-", at most 63 characters')
      .describe('Route: POST /webhooks/{id}.'),
    kind: z.enum(sourceKinds),
    secrets: z
      .array(z.string().min(1))
      .min(1)
      .max(2)
      .describe(
        'One secret, or two during a rotation (either may match). github: the webhook secret. gitlab: the secret token, ' +
          'or a signing token (whsec_…) for Standard Webhooks signatures. standard-webhooks: whsec_<base64>.',
      ),
    maxBodyBytes: z
      .number()
      .int()
      .min(1)
      .max(100 * MiB)
      .default(25 * MiB)
      .describe('Bodies above this are refused with 413 while they stream in. GitHub caps payloads at 25 MB.'),
  })
  .strict();
export type SourceConfig = z.infer<typeof Source>;

export const Receiver = z
  .object({
    publishTimeoutMs: z
      .number()
      .int()
      .min(50)
      .max(9_000)
      .default(1_000)
      .describe('If the queue has not confirmed a publish by then, answer 503 (GitHub gives up after 10 s).'),
    retryAfterSec: z.number().int().min(1).max(3_600).default(5).describe('Retry-After sent with a 503.'),
    timestampToleranceSec: z.number().int().min(1).max(3_600).default(300).describe('Standard Webhooks timestamp tolerance (±).'),
    recentKeys: z
      .number()
      .int()
      .min(0)
      .default(100_000)
      .describe('Dedupe keys this process remembers to answer repeats without a publish (0 turns it off).'),
  })
  .strict();

export const Egress = z
  .object({
    allow: z
      .array(z.string().min(1))
      .default([])
      .describe(
        'Exceptions to the SSRF rules: CIDRs (10.20.0.0/16, ::1/128) or host names. Matched against the resolved address, ' +
          'and only these may be reached over plain http://. Empty by default; logged at start-up.',
      ),
  })
  .strict();

export const Delivery = z
  .object({
    timeoutMs: z.number().int().min(100).max(120_000).default(15_000).describe('Default total deadline of one attempt.'),
    maxResponseBytes: z.number().int().min(0).max(1024 * 1024).default(65_536).describe('Bytes of a response body read (and kept as a snippet).'),
    connectionsPerOrigin: z.number().int().min(1).max(1_024).default(50).describe('Keep-alive connections per destination origin.'),
  })
  .strict();

export const Worker = z
  .object({
    concurrency: z.number().int().min(1).max(10_000).default(256).describe('Deliveries in flight at once in this process, all subscribers together.'),
    claimBatch: z.number().int().min(1).max(1_000).default(200).describe('Due deliveries claimed from the store per query.'),
    ingestBatch: z.number().int().min(1).max(1_000).default(256).describe('Queue messages taken per receive.'),
    pollIntervalMs: z.number().int().min(10).max(10_000).default(250).describe('How often an idle worker looks for due retries.'),
    leaseMarginMs: z
      .number()
      .int()
      .min(1_000)
      .max(600_000)
      .default(10_000)
      .describe(
        "A claimed delivery is leased for the longest attempt deadline plus this; a dead worker's deliveries come back after it.",
      ),
    maxReceives: z
      .number()
      .int()
      .min(1)
      .default(10)
      .describe('A queue message handed out more often than this without being settled is dead-lettered as poison.'),
    breaker: z
      .object({
        failureThreshold: z.number().int().min(1).default(5).describe('Consecutive retryable failures that pause a subscriber.'),
        cooldownMs: z.number().int().min(100).default(30_000).describe('First pause; doubles on each failed probe.'),
        maxCooldownMs: z.number().int().min(100).default(1_800_000).describe('Longest pause (30 min).'),
      })
      .strict()
      .prefault({}),
    sweepIntervalMs: z.number().int().min(1_000).default(600_000).describe('How often retention runs (10 min).'),
  })
  .strict();

export const Retention = z
  .object({
    eventsDays: z.number().min(0.001).default(30).describe('Events, finished deliveries and their attempts. An event is its own dedupe key, so it stays at least dedupeDays.'),
    dlqDays: z.number().min(0.001).default(14).describe('Dead letters.'),
    dedupeDays: z.number().min(0.001).default(7).describe('How long a repeat of an accepted webhook is recognised (GHES redelivers for 7 days).'),
  })
  .strict();

export const Log = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict();

export const apiScopes = ['subscribers:read', 'subscribers:write', 'deliveries:read', 'dlq:write', '*'] as const;
export type ApiScope = (typeof apiScopes)[number];

export const ApiToken = z
  .object({
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'letters, digits, ".", "_" and "-", at most 63 characters')
      .describe('Who holds the token; logged as the request principal (the token never is).'),
    token: z.string().min(16, 'tokens have at least 16 characters').max(512).optional().describe('The bearer token itself (or token_FILE).'),
    tokenSha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, 'the hex SHA-256 of the token (64 hex digits)')
      .optional()
      .describe('Instead of token: its SHA-256 in hex, so the configuration never holds the token.'),
    scopes: z
      .array(z.enum(apiScopes))
      .min(1)
      .describe('subscribers:read, subscribers:write, deliveries:read, dlq:write, or * for all.'),
  })
  .strict()
  .refine((t) => (t.token === undefined) !== (t.tokenSha256 === undefined), 'give exactly one of token, token_FILE or tokenSha256');
export type ApiTokenConfig = z.infer<typeof ApiToken>;

export const Api = z
  .object({
    tokens: z
      .array(ApiToken)
      .default([])
      .superRefine((tokens, ctx) => {
        const seen = new Set<string>();
        for (const [i, t] of tokens.entries()) {
          if (seen.has(t.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate token name "${t.name}"` });
          seen.add(t.name);
        }
      })
      .describe('Bearer tokens of the REST API. The api role refuses to start without one.'),
    maxBodyBytes: z.number().int().min(1_024).max(16 * MiB).default(MiB).describe('Request bodies above this are refused with 413 (1 MiB).'),
    secretRotationGraceSec: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .default(86_400)
      .describe('After rotate-secret, the previous signing secret keeps signing (both signatures are sent) this long (24 h).'),
  })
  .strict();

/** A 256-bit key: 64 hex digits, or base64 / base64url of 32 bytes. */
export const EncryptionKey = z
  .string()
  .refine(
    (k) => /^[0-9a-fA-F]{64}$/.test(k) || (/^[A-Za-z0-9+/_-]{43}=?$/.test(k) && Buffer.from(k, 'base64').length === 32),
    'a 256-bit key: 64 hex digits or the base64 of 32 random bytes (openssl rand -base64 32)',
  );

export const Secrets = z
  .object({
    encryptionKey: EncryptionKey.optional().describe(
      'AES-256-GCM key encrypting subscriber secrets at rest (or encryptionKey_FILE). Needed by the api role; ' +
        'generate with `openssl rand -base64 32`.',
    ),
    previousKeys: z
      .array(EncryptionKey)
      .max(10)
      .default([])
      .describe('Keys used before a rotation: still decrypt what they encrypted; new values use encryptionKey.'),
  })
  .strict();

export const Config = z
  .object({
    listen: Listen.prefault({}),
    queue: Queue.prefault({ kind: 'sqlite' }),
    store: Store.prefault({ kind: 'sqlite' }),
    sources: z
      .array(Source)
      .min(1, 'at least one source is needed to receive webhooks')
      .superRefine((sources, ctx) => {
        const seen = new Set<string>();
        for (const [i, s] of sources.entries()) {
          if (seen.has(s.id)) ctx.addIssue({ code: 'custom', path: [i, 'id'], message: `duplicate source id "${s.id}"` });
          seen.add(s.id);
        }
      }),
    receiver: Receiver.prefault({}),
    egress: Egress.prefault({}),
    delivery: Delivery.prefault({}),
    worker: Worker.prefault({}),
    retention: Retention.prefault({}),
    api: Api.prefault({}),
    secrets: Secrets.prefault({}),
    log: Log.prefault({}),
    shutdownGraceMs: z
      .number()
      .int()
      .min(0)
      .default(20_000)
      .describe('After SIGTERM, in-flight work gets this long before it is abandoned. Keep below the pod grace period.'),
  })
  .strict();

export type Config = z.infer<typeof Config>;

/** Keys whose values are secrets wherever they appear: redacted by `config print` and by the logger. */
export const secretKeys: ReadonlySet<string> = new Set(['secrets', 'secret', 'token', 'password', 'encryptionKey', 'previousKeys']);
