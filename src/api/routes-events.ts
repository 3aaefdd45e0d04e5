/**
 * /v1/events/{id}: an accepted event's metadata, and its exact body bytes (base64) on `?include=body`. Headers are the
 * source's event headers, with any credential removed (the same rule as outbound pass-through).
 */
import type { ApiContext } from './context.ts';
import { ApiError } from './errors.ts';
import { defineRoute, type Route } from './route.ts';
import { EventQuery, EventView, IdParams } from './schemas.ts';
import { eventView } from './views.ts';

export function eventRoutes(ctx: ApiContext): Route[] {
  return [
    defineRoute({
      operationId: 'getEvent',
      method: 'get',
      path: '/v1/events/{id}',
      scope: 'deliveries:read',
      summary: 'Read an accepted event',
      params: IdParams,
      query: EventQuery,
      responses: { 200: { description: 'The event’s metadata (and body on request)', schema: EventView } },
      async handler({ params, query }) {
        const e = await ctx.store.getEvent(params.id);
        if (!e) throw new ApiError('ROUTER_ERR_NOT_FOUND', `no event ${params.id}`);
        return { status: 200, body: eventView(e, query.include === 'body') };
      },
    }),
  ];
}
