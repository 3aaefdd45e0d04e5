/**
 * The subscriber model (design §5): who wants which events and how they are delivered. The same zod schemas
 * validate API requests, generate the OpenAPI document and type the store.
 *
 * `transport` is validated by its own provider (transports/index.ts); here it is only required to name a kind.
 */
import { z } from 'zod';
import { MatchExpression } from './match.ts';

/** Routing fields a template may use: `{source} {event} {action} {repository} {organization} {installation}`. */
export const templateFields = ['source', 'event', 'action', 'repository', 'organization', 'installation'] as const;

export const Template = z
  .string()
  .min(1)
  .max(512)
  .refine((t) => [...t.matchAll(/\{([^}]*)\}/g)].every((m) => (templateFields as readonly string[]).includes(m[1] ?? '')), {
    message: `unknown field in template; known: ${templateFields.map((f) => `{${f}}`).join(' ')}`,
  });

const patternList = z.array(z.string().min(1).max(256)).max(100).default([]);

export const SubscriberFilter = z
  .object({
    sources: patternList.describe('Source ids; empty = any.'),
    events: patternList.describe('`event` or `event.action`, `*` wildcards (`workflow_run.*`); empty = any.'),
    repositories: patternList.describe('`owner/name` globs; a leading `!` excludes (`!acme/secret-*`); empty = any.'),
    branches: patternList.describe('Branch globs (`release/*`), matched against the ref without `refs/heads/`; empty = any.'),
    match: MatchExpression.optional().describe('Operators over `payload.*` and the routing fields.'),
  })
  .strict();
export type SubscriberFilter = z.infer<typeof SubscriberFilter>;

export const RetryPolicy = z
  .object({
    schedule: z
      .union([z.literal('standard'), z.array(z.number().min(0).max(7 * 86_400)).min(1).max(50)])
      .default('standard')
      .describe('"standard" (Standard Webhooks: 5 s … 24 h) or seconds between attempts.'),
    maxAttempts: z.number().int().min(1).max(50).default(10),
  })
  .strict();

export const Limits = z
  .object({
    concurrency: z.number().int().min(1).max(1_000).default(10).describe('Deliveries in flight at once, per worker.'),
    perSecond: z.number().min(0).max(100_000).default(0).describe('Deliveries started per second, per worker; 0 = unlimited.'),
  })
  .strict();

export const Ordering = z
  .object({ key: Template.describe('Deliveries with the same key are sent one at a time, in acceptance order.') })
  .strict();

export const TransportSpec = z.looseObject({ kind: z.string().min(1) });

export const SubscriberSpec = z
  .object({
    name: z.string().min(1).max(200),
    enabled: z.boolean().default(true),
    filter: SubscriberFilter.prefault({}),
    transport: TransportSpec,
    retry: RetryPolicy.prefault({}),
    limits: Limits.prefault({}),
    ordering: Ordering.nullable().default(null),
  })
  .strict();
export type SubscriberSpec = z.infer<typeof SubscriberSpec>;

export interface SubscriberSecrets {
  readonly current: string;
  /** The secret before the last rotation, still signed with until `previousExpiresAt`. */
  readonly previous?: string | undefined;
  readonly previousExpiresAt?: number | undefined;
}

export interface Subscriber extends SubscriberSpec {
  readonly id: string;
  readonly secrets: SubscriberSecrets;
  /** Why the router disabled it (e.g. `endpoint_gone` after a 410); undefined when enabled by hand. */
  readonly disabledReason: string | undefined;
  readonly version: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

