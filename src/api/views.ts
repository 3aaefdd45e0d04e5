/**
 * Store records → API representations. Each view names the fields it returns, so a field added to a record never
 * leaks by accident: signing secrets never appear here, transport configs go through their provider's `redact()`,
 * attempt responses appear only on request (read-SSRF, reliability §3.1) and event headers lose any credential.
 */
import type { AttemptRecord, DeadLetter, DeliveryView, EventRecord, Page } from '../../adapters/store/port.ts';
import { passThrough } from '../../transports/outbound-headers.ts';
import { transportProviders } from '../../transports/index.ts';
import type { TransportProvider } from '../../transports/port.ts';
import type { Subscriber } from '../subscribers/model.ts';
import { ApiError } from './errors.ts';

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | undefined) => (ms === undefined ? null : iso(ms));

export function providerOf(kind: string): TransportProvider<{ kind: string }> | undefined {
  return Object.hasOwn(transportProviders, kind) ? (transportProviders as Record<string, TransportProvider<{ kind: string }>>)[kind] : undefined;
}

/** The transport as its provider shows it: secrets replaced. A config the provider rejects shows its kind only. */
export function redactTransport(transport: { kind: string }): Record<string, unknown> {
  const provider = providerOf(transport.kind);
  const parsed = provider?.configSchema.safeParse(transport);
  if (!provider || !parsed?.success) return { kind: transport.kind };
  return JSON.parse(JSON.stringify(provider.redact(parsed.data))) as Record<string, unknown>;
}

export function subscriberView(s: Subscriber) {
  return {
    id: s.id,
    name: s.name,
    enabled: s.enabled,
    disabledReason: s.disabledReason ?? null,
    filter: {
      sources: [...s.filter.sources],
      events: [...s.filter.events],
      repositories: [...s.filter.repositories],
      branches: [...s.filter.branches],
      ...(s.filter.match === undefined ? {} : { match: s.filter.match }),
    },
    transport: redactTransport(s.transport) as { kind: string },
    retry: { schedule: s.retry.schedule, maxAttempts: s.retry.maxAttempts },
    limits: { concurrency: s.limits.concurrency, perSecond: s.limits.perSecond },
    ordering: s.ordering ? { key: s.ordering.key } : null,
    previousSecretExpiresAt: s.secrets.previous === undefined ? null : isoOrNull(s.secrets.previousExpiresAt),
    version: s.version,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
  };
}

export function deliveryView(d: DeliveryView) {
  return {
    id: d.id,
    eventId: d.eventId,
    subscriberId: d.subscriberId,
    status: d.status,
    attempts: d.attempts,
    cycle: d.cycle,
    nextAttemptAt: isoOrNull(d.nextAttemptAt),
    lastCode: d.lastCode ?? null,
    lastStatus: d.lastStatus ?? null,
    createdAt: iso(d.createdAt),
    updatedAt: iso(d.updatedAt),
  };
}

export function attemptView(a: AttemptRecord, includeResponse: boolean) {
  return {
    attempt: a.attempt,
    startedAt: iso(a.startedAt),
    durationMs: a.durationMs,
    outcome: a.outcome,
    code: a.code ?? null,
    status: a.status ?? null,
    ...(includeResponse ? { response: a.response ?? null } : {}),
  };
}

export function deadLetterView(l: DeadLetter) {
  return {
    id: l.id,
    deliveryId: l.deliveryId ?? null,
    eventId: l.eventId ?? null,
    subscriberId: l.subscriberId ?? null,
    reason: l.reason,
    lastCode: l.lastCode ?? null,
    lastStatus: l.lastStatus ?? null,
    attempts: l.attempts,
    createdAt: iso(l.createdAt),
  };
}

export function eventView(e: EventRecord, includeBody: boolean) {
  const routing: Record<string, string> = {};
  for (const [k, v] of Object.entries(e.routing)) if (typeof v === 'string') routing[k] = v;
  return {
    id: e.id,
    source: e.source,
    sourceKind: e.sourceKind,
    receivedAt: iso(e.receivedAt),
    routing,
    headers: passThrough(e.headers),
    bodyBytes: e.body.byteLength,
    ...(includeBody ? { body: Buffer.from(e.body.buffer, e.body.byteOffset, e.body.byteLength).toString('base64') } : {}),
  };
}

// ── Cursors ──────────────────────────────────────────────────────────────────────────────────────────────────────
// Opaque to callers: base64url of `v1:<store cursor>`. Each store's cursor is already stable under inserts (subscribers
// and dead letters by ascending sequence, deliveries by descending sequence); the wrapping keeps callers from
// depending on its form and lets the API refuse anything it did not hand out.

const STORE_CURSOR = /^[A-Za-z0-9_.:-]{1,128}$/;

export function encodeCursor(storeCursor: string | undefined): string | null {
  return storeCursor === undefined ? null : Buffer.from(`v1:${storeCursor}`, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const inner = text.startsWith('v1:') ? text.slice(3) : '';
  if (!STORE_CURSOR.test(inner)) {
    throw new ApiError('ROUTER_ERR_BAD_REQUEST', 'invalid cursor', { details: [{ path: 'cursor', message: 'not a cursor returned by this API' }] });
  }
  return inner;
}

export function pageView<T, V>(page: Page<T>, view: (item: T) => V): { items: V[]; nextCursor: string | null } {
  return { items: page.items.map(view), nextCursor: encodeCursor(page.nextCursor) };
}
