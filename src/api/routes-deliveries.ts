/**
 * /v1/deliveries: the delivery log with attempts, newest first, and retry.
 *
 * Attempt response snippets are not shown unless `?include=response` is asked for: reflecting what an endpoint
 * answered turns a webhook service into a read-SSRF probe (reliability §3.1).
 */
import { parseTime } from '../dlq/time.ts';
import type { ApiContext } from './context.ts';
import { ApiError } from './errors.ts';
import { defineRoute, type Route } from './route.ts';
import {
  DEFAULT_PAGE,
  DeliveriesQuery,
  DeliveryDetail,
  DeliveryPage,
  DeliveryQuery,
  IdParams,
  RetryResult,
} from './schemas.ts';
import { attemptView, decodeCursor, deliveryView, pageView } from './views.ts';

/** A filter time (already validated by the schema) in ms. */
export const toMs = (value: string | undefined, now: number) => (value === undefined ? undefined : parseTime(value, now));

export function deliveryRoutes(ctx: ApiContext): Route[] {
  return [
    defineRoute({
      operationId: 'listDeliveries',
      method: 'get',
      path: '/v1/deliveries',
      scope: 'deliveries:read',
      summary: 'List deliveries, newest first',
      query: DeliveriesQuery,
      responses: { 200: { description: 'A page of deliveries', schema: DeliveryPage } },
      async handler({ query }) {
        const now = ctx.now();
        const page = await ctx.store.listDeliveries(
          { subscriber: query.subscriber, status: query.status, event: query.event, since: toMs(query.since, now), until: toMs(query.until, now) },
          { limit: query.limit ?? DEFAULT_PAGE, cursor: decodeCursor(query.cursor) },
        );
        return { status: 200, body: pageView(page, deliveryView) };
      },
    }),

    defineRoute({
      operationId: 'getDelivery',
      method: 'get',
      path: '/v1/deliveries/{id}',
      scope: 'deliveries:read',
      summary: 'Read a delivery with its attempts',
      params: IdParams,
      query: DeliveryQuery,
      responses: { 200: { description: 'The delivery and its attempt log', schema: DeliveryDetail } },
      async handler({ params, query }) {
        const d = await ctx.store.getDelivery(params.id);
        if (!d) throw new ApiError('ROUTER_ERR_NOT_FOUND', `no delivery ${params.id}`);
        const withResponse = query.include === 'response';
        return { status: 200, body: { ...deliveryView(d), attemptLog: d.attemptLog.map((a) => attemptView(a, withResponse)) } };
      },
    }),

    defineRoute({
      operationId: 'retryDelivery',
      method: 'post',
      path: '/v1/deliveries/{id}/retry',
      scope: 'dlq:write',
      summary: 'Deliver again now',
      description:
        'A delivered or dead delivery starts a new attempt cycle with the same webhook-id; a pending one is made due ' +
        'now. 409 while an attempt is in flight or when its subscriber no longer exists.',
      params: IdParams,
      responses: { 202: { description: 'Queued for delivery', schema: RetryResult } },
      async handler({ params, log }) {
        const d = await ctx.store.getDelivery(params.id);
        if (!d) throw new ApiError('ROUTER_ERR_NOT_FOUND', `no delivery ${params.id}`);
        if (!(await ctx.store.getSubscriber(d.subscriberId))) {
          throw new ApiError('ROUTER_ERR_CONFLICT', `subscriber ${d.subscriberId} no longer exists; replay to another subscriber from the DLQ`);
        }
        if ((await ctx.store.requeue([d.id], ctx.now())) === 0) {
          throw new ApiError('ROUTER_ERR_CONFLICT', 'an attempt of this delivery is in flight; try again when it finished');
        }
        log.info({ deliveryId: d.id }, 'delivery requeued');
        return { status: 202, body: { id: d.id, status: 'pending' } };
      },
    }),

  ];
}
