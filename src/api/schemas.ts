/**
 * The zod schemas of the REST API: they validate every body, query and path parameter, and the OpenAPI document is
 * generated from them (openapi.ts), so the two cannot drift.
 *
 * Conventions:
 * - Objects are strict: an unknown field is a validation error (422 in a body, 400 in a query).
 * - Query values arrive as strings and are parsed here (`limit=20`); a repeated parameter is an error.
 * - Times are ISO 8601 strings in responses; filters accept ISO 8601 or a duration ago (`2h`, `7d`), as the CLI does.
 * - Transport configs are validated by their provider's own schema (`transports/index.ts`); the accepted kinds are the
 *   registry's keys.
 */
import { z } from 'zod';
import type { DeadReason } from '../../adapters/store/port.ts';
import { transportProviders } from '../../transports/index.ts';
import { parseTime } from '../dlq/time.ts';
import { Limits, Ordering, RetryPolicy, SubscriberFilter, SubscriberSpec } from '../subscribers/model.ts';

// ── Shared pieces ────────────────────────────────────────────────────────────────────────────────────────────────

/** Ids of subscribers (`sub_…`), deliveries (`msg_…`), events (`evt_…`) and dead letters. */
export const Id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, 'not a valid id');

export const IdParams = z.object({ id: Id }).strict();

/** ISO 8601 (`2026-11-25T10:00:00Z`) or a duration ago (`90s`, `15m`, `2h`, `7d`). */
export const TimeFilter = z
  .string()
  .max(64)
  .refine((v) => parseTime(v, Date.now()) !== undefined, 'ISO 8601 or a duration ago such as 2h or 7d')
  .describe('ISO 8601, or a duration ago such as 15m, 2h, 7d.');

export const MAX_PAGE = 500;
export const DEFAULT_PAGE = 50;

const LimitParam = z
  .string()
  .regex(/^[1-9][0-9]{0,3}$/, `an integer from 1 to ${MAX_PAGE}`)
  .transform(Number)
  .pipe(z.number().int().max(MAX_PAGE))
  .optional()
  .describe(`Page size, 1–${MAX_PAGE} (default ${DEFAULT_PAGE}).`);

const CursorParam = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,256}$/, 'not a cursor returned by this API')
  .optional()
  .describe('The `nextCursor` of the previous page.');

export const PageQuery = z.object({ limit: LimitParam, cursor: CursorParam }).strict();

/** `whsec_` + base64 of 24–64 bytes (the Standard Webhooks range). */
export const SigningSecret = z
  .string()
  .regex(/^whsec_[A-Za-z0-9+/]{32,88}={0,2}$/, 'a Standard Webhooks secret: whsec_ followed by the base64 of 24 to 64 random bytes')
  .refine((s) => {
    const n = Buffer.from(s.slice(6), 'base64').length;
    return n >= 24 && n <= 64;
  }, 'the secret must decode to 24 to 64 bytes');

type ProviderSchemas = [z.ZodObject, ...z.ZodObject[]];

/** One option per registered transport kind, each its provider's own schema (which also checks its templates). */
export const TransportConfig = z.discriminatedUnion(
  'kind',
  Object.values(transportProviders).map((p) => p.configSchema) as unknown as ProviderSchemas,
) as unknown as z.ZodType<{ kind: string; [key: string]: unknown }>;

// ── Request bodies ───────────────────────────────────────────────────────────────────────────────────────────────

export const CreateSubscriber = SubscriberSpec.extend({
  transport: TransportConfig,
  secret: SigningSecret.optional().describe('Signing secret to use; generated when absent. Returned once, in this response.'),
})
  .strict();

/** Top-level fields replace the stored value; absent fields stay as they are. No defaults are filled in here. */
export const PatchSubscriber = z
  .object({
    name: SubscriberSpec.shape.name.optional(),
    enabled: z.boolean().optional().describe('Setting true also clears `disabledReason` (re-enables after a 410).'),
    filter: SubscriberFilter.optional(),
    transport: TransportConfig.optional().describe(
      'Replaces the transport. Values shown as "[redacted]" on read may be sent back as "[redacted]" to keep the stored secret.',
    ),
    retry: RetryPolicy.optional(),
    limits: Limits.optional(),
    ordering: Ordering.nullable().optional(),
  })
  .strict();

export const RotateSecret = z
  .object({
    secret: SigningSecret.optional().describe('The new secret; generated when absent.'),
    graceSec: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .optional()
      .describe('How long the old secret keeps signing (default api.secretRotationGraceSec; 0 revokes it now).'),
  })
  .strict();

export const deadReasons = [
  'max_attempts',
  'endpoint_gone',
  'rejected',
  'ssrf_blocked',
  'poison',
  'subscriber_deleted',
  'subscriber_disabled',
] as const satisfies readonly DeadReason[];

const DeadLetterSelection = z
  .object({
    subscriber: Id.optional(),
    event: Id.optional(),
    reason: z.enum(deadReasons).optional(),
    since: TimeFilter.optional(),
    until: TimeFilter.optional(),
  })
  .strict();

export const DlqReplay = z
  .object({
    filter: DeadLetterSelection.prefault({}).describe('Which dead letters; empty = all (up to limit).'),
    dryRun: z.boolean().default(false).describe('Only report what would be replayed.'),
    limit: z.number().int().min(1).max(10_000).default(1_000).describe('At most this many dead letters.'),
    ratePerSec: z.number().min(0.1).max(10_000).optional().describe('Replays per second (the request lasts at most 60 s).'),
    toSubscriber: Id.optional().describe('Deliver the events to this subscriber instead (a new delivery id).'),
  })
  .strict();

// ── Query strings ────────────────────────────────────────────────────────────────────────────────────────────────

export const DeliveriesQuery = PageQuery.extend({
  subscriber: Id.optional(),
  status: z.enum(['pending', 'delivered', 'dead']).optional(),
  event: Id.optional(),
  since: TimeFilter.optional().describe('Created at or after.'),
  until: TimeFilter.optional().describe('Created before.'),
}).strict();

export const DeliveryQuery = z
  .object({
    include: z.enum(['response']).optional().describe('`response` adds each attempt’s response snippet (never shown by default).'),
  })
  .strict();

export const DeadLettersQuery = PageQuery.extend(DeadLetterSelection.shape).strict();

export const EventQuery = z.object({ include: z.enum(['body']).optional().describe('`body` adds the exact body bytes, base64.') }).strict();

// ── Responses ────────────────────────────────────────────────────────────────────────────────────────────────────

const Timestamp = z.string().describe('ISO 8601');

export const SubscriberView = z
  .object({
    id: z.string(),
    name: z.string(),
    enabled: z.boolean(),
    disabledReason: z.string().nullable().describe('Why the router disabled it (endpoint_gone after a 410); null otherwise.'),
    filter: z.object({
      sources: z.array(z.string()),
      events: z.array(z.string()),
      repositories: z.array(z.string()),
      branches: z.array(z.string()),
      match: z.unknown().optional(),
    }),
    transport: z.looseObject({ kind: z.string() }).describe('As configured, with secret values replaced by "[redacted]".'),
    retry: z.object({ schedule: z.union([z.literal('standard'), z.array(z.number())]), maxAttempts: z.number().int() }),
    limits: z.object({ concurrency: z.number().int(), perSecond: z.number() }),
    ordering: z.object({ key: z.string() }).nullable(),
    previousSecretExpiresAt: Timestamp.nullable().describe('During a rotation: until when the previous secret also signs.'),
    version: z.number().int().describe('Also the ETag (W/"<version>"), for If-Match.'),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .strict();

export const SubscriberWithSecret = SubscriberView.extend({
  secret: z.string().describe('The signing secret. Shown here once: it is never returned again.'),
})
  .strict();

const page = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), nextCursor: z.string().nullable().describe('null on the last page.') }).strict();

export const SubscriberPage = page(SubscriberView);

export const TestResult = z
  .object({
    deliveryId: z.string().describe('The webhook-id the ping was sent with.'),
    outcome: z.enum(['delivered', 'retryable', 'permanent']),
    status: z.number().int().nullable(),
    code: z.string().nullable().describe('Why it did not deliver (http_5xx, timeout, ssrf_blocked, …); null when delivered.'),
    durationMs: z.number(),
  })
  .strict();

export const DeliveryView = z
  .object({
    id: z.string(),
    eventId: z.string(),
    subscriberId: z.string(),
    status: z.enum(['pending', 'delivered', 'dead']),
    attempts: z.number().int().describe('Attempts in the current cycle.'),
    cycle: z.number().int().describe('1, plus one per retry or replay.'),
    nextAttemptAt: Timestamp.nullable(),
    lastCode: z.string().nullable(),
    lastStatus: z.number().int().nullable(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .strict();

export const AttemptView = z
  .object({
    attempt: z.number().int(),
    startedAt: Timestamp,
    durationMs: z.number(),
    outcome: z.enum(['delivered', 'retryable', 'permanent']),
    code: z.string().nullable(),
    status: z.number().int().nullable(),
    response: z.string().nullable().optional().describe('Only with ?include=response.'),
  })
  .strict();

export const DeliveryDetail = DeliveryView.extend({ attemptLog: z.array(AttemptView) }).strict();
export const DeliveryPage = page(DeliveryView);

export const RetryResult = z.object({ id: z.string(), status: z.literal('pending') }).strict();

export const DeadLetterView = z
  .object({
    id: z.string(),
    deliveryId: z.string().nullable().describe('null for a poison queue message, which never became a delivery.'),
    eventId: z.string().nullable(),
    subscriberId: z.string().nullable(),
    reason: z.string(),
    lastCode: z.string().nullable(),
    lastStatus: z.number().int().nullable(),
    attempts: z.number().int(),
    createdAt: Timestamp,
  })
  .strict();

export const DeadLetterPage = page(DeadLetterView);

export const ReplayResult = z
  .object({
    dryRun: z.boolean(),
    selected: z.number().int().describe('Dead letters matching the filter (poison entries excluded: they cannot be replayed).'),
    replayed: z.number().int().describe('Deliveries put back in the queue (0 on a dry run).'),
    ids: z.array(z.string()).describe('The dead letters selected.'),
  })
  .strict();

export const EventView = z
  .object({
    id: z.string(),
    source: z.string(),
    sourceKind: z.string(),
    receivedAt: Timestamp,
    routing: z.record(z.string(), z.string()),
    headers: z.record(z.string(), z.string()).describe("The source's event headers (never its signature or token)."),
    bodyBytes: z.number().int(),
    body: z.string().optional().describe('Base64 of the exact bytes received; only with ?include=body.'),
  })
  .strict();

export const ErrorBody = z
  .object({
    error: z
      .object({
        code: z.string().describe('A stable ROUTER_ERR_* code (docs/errors.md).'),
        message: z.string(),
        details: z.array(z.object({ path: z.string(), message: z.string() }).strict()),
        requestId: z.string(),
      })
      .strict(),
  })
  .strict();

/** Named schemas of the OpenAPI document (`#/components/schemas/<name>`); any other schema is inlined. */
export const requestComponents = {
  SubscriberCreate: CreateSubscriber,
  SubscriberPatch: PatchSubscriber,
  SecretRotation: RotateSecret,
  DlqReplay,
} as const;

export const responseComponents = {
  Subscriber: SubscriberView,
  SubscriberWithSecret,
  SubscriberPage,
  TestResult,
  Delivery: DeliveryView,
  Attempt: AttemptView,
  DeliveryDetail,
  DeliveryPage,
  RetryResult,
  DeadLetter: DeadLetterView,
  DeadLetterPage,
  ReplayResult,
  Event: EventView,
  Error: ErrorBody,
} as const;
