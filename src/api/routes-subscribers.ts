/**
 * /v1/subscribers: create, list, read, change, delete, rotate the signing secret, send a test ping.
 *
 * Secrets: the signing secret is returned by create and rotate-secret only; transport configs are always shown
 * through their provider's redact(). A PATCH may send "[redacted]" back where a read showed it, to keep the stored
 * value (so a read-modify-write never needs the secret). Registration validates the transport with its provider's
 * schema and, for https, the SSRF rules against the resolved address (422 on either).
 *
 * Concurrency: every write is a compare-and-set on the subscriber's version. With If-Match, a stale version is a 412;
 * without it, the read-modify-write is retried a few times (last write wins), then answered 409.
 */
import { randomBytes } from 'node:crypto';
import type { SubscriberPatch } from '../../adapters/store/port.ts';
import { checkUrlForRegistration, REDACTED } from '../../transports/https/index.ts';
import { createSenderFor } from '../../transports/index.ts';
import type { OutboundMessage } from '../../transports/port.ts';
import type { Subscriber, SubscriberSecrets, SubscriberSpec } from '../subscribers/model.ts';
import type { ApiContext } from './context.ts';
import { ApiError, type ErrorDetail } from './errors.ts';
import { etagOf, parseIfMatch } from './http.ts';
import { defineRoute, type Route } from './route.ts';
import {
  CreateSubscriber,
  IdParams,
  PageQuery,
  PatchSubscriber,
  RotateSecret,
  SubscriberPage,
  SubscriberView,
  SubscriberWithSecret,
  TestResult,
  DEFAULT_PAGE,
} from './schemas.ts';
import { decodeCursor, pageView, redactTransport, subscriberView } from './views.ts';

/** Attempts of an unconditional read-modify-write before answering 409. */
const CAS_ATTEMPTS = 3;

export const newSubscriberId = () => `sub_${randomBytes(12).toString('hex')}`;
/** Standard Webhooks secret: `whsec_` + base64 of 32 random bytes. */
export const newSigningSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

type Transport = SubscriberSpec['transport'];
type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

const notFound = (id: string) => new ApiError('ROUTER_ERR_NOT_FOUND', `no subscriber ${id}`);

function invalid(message: string, details: ErrorDetail[]): ApiError {
  return new ApiError('ROUTER_ERR_VALIDATION', message, { details });
}

/** Checks that need configuration or the network, beyond each provider's schema. */
async function checkRegistration(ctx: ApiContext, transport: Transport): Promise<void> {
  if (transport.kind === 'https' && typeof transport.url === 'string') {
    const issues = await checkUrlForRegistration(transport.url, ctx.senderDeps.egress, ctx.senderDeps.lookup);
    if (issues.length > 0) throw invalid('the transport URL is not allowed', issues.map((message) => ({ path: 'transport.url', message })));
  }
}

/** Puts stored values back where the caller sent the placeholder a read showed for them (same kind only). */
function restoreRedacted(incoming: Transport, stored: Transport): Transport {
  if (incoming.kind !== stored.kind) return incoming;
  const shown = redactTransport(stored);
  const walk = (inc: unknown, plain: unknown, red: unknown): unknown => {
    if (inc === REDACTED && red === REDACTED && typeof plain === 'string') return plain;
    if (isObject(inc)) {
      const out: Json = {};
      for (const [k, v] of Object.entries(inc)) {
        out[k] = walk(v, isObject(plain) ? plain[k] : undefined, isObject(red) ? red[k] : undefined);
      }
      return out;
    }
    return inc;
  };
  return walk(incoming, stored, shown) as Transport;
}

function view(s: Subscriber) {
  return { status: 200, body: subscriberView(s), headers: { etag: etagOf(s.version) } };
}

async function load(ctx: ApiContext, id: string): Promise<Subscriber> {
  const s = await ctx.store.getSubscriber(id);
  if (!s) throw notFound(id);
  return s;
}

/**
 * Compare-and-set loop: `change` builds the patch from the current subscriber; a concurrent writer makes the store
 * refuse it and the loop reads again, unless the caller pinned a version with If-Match.
 */
async function update(
  ctx: ApiContext,
  id: string,
  ifMatch: string | undefined,
  change: (current: Subscriber) => Promise<SubscriberPatch | undefined>,
): Promise<Subscriber> {
  const pinned = parseIfMatch(ifMatch);
  for (let attempt = 1; ; attempt++) {
    const current = await load(ctx, id);
    if (pinned && !('any' in pinned) && !pinned.versions.includes(current.version)) {
      throw new ApiError('ROUTER_ERR_PRECONDITION_FAILED', `the subscriber is at version ${current.version} (ETag ${etagOf(current.version)})`, {
        headers: { etag: etagOf(current.version) },
      });
    }
    const patch = await change(current);
    if (!patch) return current;
    const updated = await ctx.store.updateSubscriber(id, patch, ctx.now(), current.version);
    if (updated) return updated;
    if (pinned && !('any' in pinned)) throw new ApiError('ROUTER_ERR_PRECONDITION_FAILED', 'the subscriber changed meanwhile');
    if (attempt >= CAS_ATTEMPTS) throw new ApiError('ROUTER_ERR_CONFLICT', 'the subscriber keeps changing concurrently; try again');
  }
}

const header = (h: string | string[] | undefined) => (Array.isArray(h) ? h.join(',') : h);

export function subscriberRoutes(ctx: ApiContext): Route[] {
  return [
    defineRoute({
      operationId: 'createSubscriber',
      method: 'post',
      path: '/v1/subscribers',
      scope: 'subscribers:write',
      summary: 'Create a subscriber',
      description: 'Returns the subscriber and its signing secret. The secret is shown in this response only.',
      body: CreateSubscriber,
      responses: {
        201: { description: 'Created', schema: SubscriberWithSecret, headers: { ETag: 'W/"<version>"', Location: '/v1/subscribers/{id}' } },
      },
      async handler({ body, log }) {
        const { secret, ...spec } = body;
        await checkRegistration(ctx, spec.transport);
        const id = newSubscriberId();
        const current = secret ?? newSigningSecret();
        const created = await ctx.store.createSubscriber({ ...spec, id, secrets: { current } }, ctx.now());
        log.info({ subscriberId: id, transport: spec.transport.kind }, 'subscriber created');
        return {
          status: 201,
          body: { ...subscriberView(created), secret: current },
          headers: { etag: etagOf(created.version), location: `/v1/subscribers/${id}` },
        };
      },
    }),

    defineRoute({
      operationId: 'listSubscribers',
      method: 'get',
      path: '/v1/subscribers',
      scope: 'subscribers:read',
      summary: 'List subscribers, oldest first',
      query: PageQuery,
      responses: { 200: { description: 'A page of subscribers', schema: SubscriberPage } },
      async handler({ query }) {
        const page = await ctx.store.listSubscribers({ limit: query.limit ?? DEFAULT_PAGE, cursor: decodeCursor(query.cursor) });
        return { status: 200, body: pageView(page, subscriberView) };
      },
    }),

    defineRoute({
      operationId: 'getSubscriber',
      method: 'get',
      path: '/v1/subscribers/{id}',
      scope: 'subscribers:read',
      summary: 'Read a subscriber',
      params: IdParams,
      responses: { 200: { description: 'The subscriber (no secrets)', schema: SubscriberView, headers: { ETag: 'W/"<version>"' } } },
      async handler({ params }) {
        return view(await load(ctx, params.id));
      },
    }),

    defineRoute({
      operationId: 'updateSubscriber',
      method: 'patch',
      path: '/v1/subscribers/{id}',
      scope: 'subscribers:write',
      summary: 'Change a subscriber',
      description:
        'Top-level fields given replace the stored ones; absent fields stay. With If-Match: W/"<version>" the change ' +
        'applies only to that version (412 otherwise); without it, the last write wins.',
      params: IdParams,
      body: PatchSubscriber,
      requestHeaders: { 'If-Match': 'W/"<version>" from the ETag of a read; optional.' },
      responses: { 200: { description: 'The changed subscriber', schema: SubscriberView, headers: { ETag: 'W/"<version>"' } } },
      async handler({ params, body, headers, log }) {
        let checked: Transport | undefined;
        const updated = await update(ctx, params.id, header(headers['if-match']), async (current) => {
          const spec: Partial<SubscriberSpec> = {};
          for (const key of ['name', 'enabled', 'filter', 'retry', 'limits', 'ordering'] as const) {
            if (body[key] !== undefined) (spec as Record<string, unknown>)[key] = body[key];
          }
          if (body.transport) {
            spec.transport = restoreRedacted(body.transport, current.transport);
            if (checked !== spec.transport) await checkRegistration(ctx, spec.transport);
            checked = spec.transport;
          }
          if (Object.keys(spec).length === 0) return undefined;
          return { spec, ...(body.enabled === true ? { disabledReason: null } : {}) };
        });
        log.info({ subscriberId: params.id, fields: Object.keys(body) }, 'subscriber changed');
        return view(updated);
      },
    }),

    defineRoute({
      operationId: 'deleteSubscriber',
      method: 'delete',
      path: '/v1/subscribers/{id}',
      scope: 'subscribers:write',
      summary: 'Delete a subscriber',
      description: 'Its pending deliveries are dead-lettered with reason subscriber_deleted.',
      params: IdParams,
      responses: { 204: { description: 'Deleted' } },
      async handler({ params, log }) {
        if (!(await ctx.store.deleteSubscriber(params.id, ctx.now()))) throw notFound(params.id);
        log.info({ subscriberId: params.id }, 'subscriber deleted');
        return { status: 204 };
      },
    }),

    defineRoute({
      operationId: 'rotateSubscriberSecret',
      method: 'post',
      path: '/v1/subscribers/{id}/rotate-secret',
      scope: 'subscribers:write',
      summary: 'Rotate the signing secret',
      description:
        'Returns the new secret, once. The previous one keeps signing for graceSec (default api.secretRotationGraceSec): ' +
        'deliveries carry both signatures meanwhile. A second rotation during a grace period replaces the older secret.',
      params: IdParams,
      body: RotateSecret,
      bodyOptional: true,
      responses: { 200: { description: 'The subscriber with its new secret', schema: SubscriberWithSecret, headers: { ETag: 'W/"<version>"' } } },
      async handler({ params, body, log }) {
        const next = body?.secret ?? newSigningSecret();
        const graceSec = body?.graceSec ?? ctx.api.secretRotationGraceSec;
        const updated = await update(ctx, params.id, undefined, async (current) => {
          const secrets: SubscriberSecrets =
            graceSec > 0 ? { current: next, previous: current.secrets.current, previousExpiresAt: ctx.now() + graceSec * 1000 } : { current: next };
          return { secrets };
        });
        log.info({ subscriberId: params.id, graceSec }, 'signing secret rotated');
        return { status: 200, body: { ...subscriberView(updated), secret: next }, headers: { etag: etagOf(updated.version) } };
      },
    }),

    defineRoute({
      operationId: 'testSubscriber',
      method: 'post',
      path: '/v1/subscribers/{id}/test',
      scope: 'subscribers:write',
      summary: 'Send a test ping now',
      description:
        'Sends a synthetic ping through the subscriber’s transport, signed as real deliveries are, and returns the ' +
        'attempt’s outcome. Nothing is recorded; the response body of the endpoint is never returned.',
      params: IdParams,
      responses: { 200: { description: 'The attempt’s outcome', schema: TestResult } },
      async handler({ params, log }) {
        const subscriber = await load(ctx, params.id);
        let sender: ReturnType<typeof createSenderFor>;
        try {
          sender = createSenderFor(subscriber, { ...ctx.senderDeps, logger: log.child({ component: 'sender' }) });
        } catch (err) {
          // createSenderFor re-validates the stored config and throws a ZodError (by name) when it is not valid.
          if ((err as Error | null)?.name === 'ZodError') throw invalid('the stored transport config is not valid', []);
          throw err;
        }
        const deliveryId = `msg_test_${randomBytes(12).toString('hex')}`;
        const sentAt = ctx.now();
        const message: OutboundMessage = {
          deliveryId,
          attempt: 1,
          eventId: `evt_test_${randomBytes(12).toString('hex')}`,
          source: 'webhook-router',
          routing: { event: 'ping' },
          headers: { 'content-type': 'application/json' },
          body: Buffer.from(JSON.stringify({ type: 'ping', subscriberId: subscriber.id, deliveryId, sentAt: new Date(sentAt).toISOString() })),
          secrets: subscriber.secrets,
        };
        try {
          const outcome = await sender.send(message, ctx.signal);
          log.info({ subscriberId: subscriber.id, outcome: outcome.kind, status: outcome.status }, 'test ping sent');
          return {
            status: 200,
            body: {
              deliveryId,
              outcome: outcome.kind,
              status: outcome.status ?? null,
              code: outcome.kind === 'delivered' ? null : outcome.code,
              durationMs: Math.round(outcome.durationMs),
            },
          };
        } finally {
          await sender.close();
        }
      },
    }),
  ];
}
