/**
 * /v1/dlq: list dead letters (oldest first), replay by filter (dry run, limit, rate, to another subscriber), purge
 * one. Selection is the CLI's (src/dlq/commands.ts `select`), so `dlq replay` and the API pick the same entries.
 *
 * A paced replay runs inside the request; it is refused up front (422) when it would take longer than
 * MAX_REPLAY_MS, so a request never outlives a proxy's timeout. Larger replays: raise the rate or replay in batches.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { select } from '../dlq/commands.ts';
import type { ApiContext } from './context.ts';
import { ApiError } from './errors.ts';
import { defineRoute, type Route } from './route.ts';
import { DEFAULT_PAGE, DeadLetterPage, DeadLettersQuery, DlqReplay, IdParams, ReplayResult } from './schemas.ts';
import { toMs } from './routes-deliveries.ts';
import { deadLetterView, decodeCursor, pageView } from './views.ts';

const MAX_REPLAY_MS = 60_000;
/** Dead letters replayed per store call. */
const CHUNK = 100;

export function dlqRoutes(ctx: ApiContext): Route[] {
  return [
    defineRoute({
      operationId: 'listDeadLetters',
      method: 'get',
      path: '/v1/dlq',
      scope: 'deliveries:read',
      summary: 'List dead letters, oldest first',
      query: DeadLettersQuery,
      responses: { 200: { description: 'A page of dead letters', schema: DeadLetterPage } },
      async handler({ query }) {
        const now = ctx.now();
        const page = await ctx.store.listDeadLetters(
          { subscriber: query.subscriber, event: query.event, reason: query.reason, since: toMs(query.since, now), until: toMs(query.until, now) },
          { limit: query.limit ?? DEFAULT_PAGE, cursor: decodeCursor(query.cursor) },
        );
        return { status: 200, body: pageView(page, deadLetterView) };
      },
    }),

    defineRoute({
      operationId: 'replayDeadLetters',
      method: 'post',
      path: '/v1/dlq/replay',
      scope: 'dlq:write',
      summary: 'Replay dead letters by filter',
      description:
        'Each selected dead delivery starts a new attempt cycle with the same webhook-id (or, with toSubscriber, a new ' +
        'delivery of the same event to that subscriber). Poison entries cannot be replayed and are not selected.',
      body: DlqReplay,
      responses: { 200: { description: 'What was (or would be) replayed', schema: ReplayResult } },
      async handler({ body, log }) {
        if (body.toSubscriber && !(await ctx.store.getSubscriber(body.toSubscriber))) {
          throw new ApiError('ROUTER_ERR_VALIDATION', 'toSubscriber does not exist', {
            details: [{ path: 'toSubscriber', message: `no subscriber ${body.toSubscriber}` }],
          });
        }
        const now = ctx.now();
        const f = body.filter;
        const filter = { subscriber: f.subscriber, event: f.event, reason: f.reason, since: toMs(f.since, now), until: toMs(f.until, now) };
        const letters = (await select(ctx.store, filter, body.limit)).filter((l) => l.deliveryId !== undefined);
        const ids = letters.map((l) => l.id);
        if (body.ratePerSec !== undefined && (ids.length / body.ratePerSec) * 1000 > MAX_REPLAY_MS) {
          throw new ApiError('ROUTER_ERR_VALIDATION', `${ids.length} replays at ${body.ratePerSec}/s would take longer than ${MAX_REPLAY_MS / 1000} s`, {
            details: [{ path: 'ratePerSec', message: 'raise the rate or lower the limit' }],
          });
        }
        if (body.dryRun) return { status: 200, body: { dryRun: true, selected: ids.length, replayed: 0, ids } };

        const chunk = body.ratePerSec === undefined ? CHUNK : Math.max(1, Math.min(CHUNK, Math.floor(body.ratePerSec / 10)));
        const tickMs = body.ratePerSec === undefined ? 0 : (chunk / body.ratePerSec) * 1000;
        let replayed = 0;
        for (let i = 0; i < ids.length; i += chunk) {
          const started = Date.now();
          replayed += await ctx.store.replayDeadLetters(ids.slice(i, i + chunk), ctx.now(), body.toSubscriber ? { toSubscriber: body.toSubscriber } : undefined);
          const wait = tickMs - (Date.now() - started);
          if (wait > 0 && i + chunk < ids.length) await delay(wait, undefined, { signal: ctx.signal });
        }
        log.info({ selected: ids.length, replayed, toSubscriber: body.toSubscriber }, 'dead letters replayed');
        return { status: 200, body: { dryRun: false, selected: ids.length, replayed, ids } };
      },
    }),

    defineRoute({
      operationId: 'purgeDeadLetter',
      method: 'delete',
      path: '/v1/dlq/{id}',
      scope: 'dlq:write',
      summary: 'Purge one dead letter',
      params: IdParams,
      responses: { 204: { description: 'Purged' } },
      async handler({ params, log }) {
        if ((await ctx.store.purgeDeadLetters([params.id])) === 0) throw new ApiError('ROUTER_ERR_NOT_FOUND', `no dead letter ${params.id}`);
        log.info({ deadLetterId: params.id }, 'dead letter purged');
        return { status: 204 };
      },
    }),
  ];
}
