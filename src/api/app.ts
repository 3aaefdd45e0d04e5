/**
 * The subscriber REST API (design §5) as an express 5 app: a thin layer over the store and transport ports.
 *
 * Per request, in order: request id (echoed `x-request-id` or a fresh one) and a child logger → route lookup
 * (404 / 405 with Allow) → Accept must allow application/json (406) → bearer token (401) and scope (403) → body
 * (415 / 413 / 400) → path parameters (404), query (400) and body (422) through the route's zod schemas → handler.
 * Authentication comes before anything is read or validated, so an anonymous caller learns nothing about inputs.
 *
 * Responses are JSON with `cache-control: no-store` (create and rotate answers carry a secret once). Logs carry the
 * route template, status, duration and the token's name, never a body, a header value or a query string.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import type { Store } from '../../adapters/store/port.ts';
import type { Config } from '../../config/schema.ts';
import type { SenderDeps } from '../../transports/port.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { createAuthenticator } from './auth.ts';
import type { ApiContext } from './context.ts';
import { ApiError, toErrorResponse, zodDetails } from './errors.ts';
import { readJson, requestIdOf } from './http.ts';
import { buildOpenApi } from './openapi.ts';
import { expressPath, pathPattern, type Reply, type Route } from './route.ts';
import { deliveryRoutes } from './routes-deliveries.ts';
import { dlqRoutes } from './routes-dlq.ts';
import { eventRoutes } from './routes-events.ts';
import { subscriberRoutes } from './routes-subscribers.ts';

export interface ApiDeps {
  /** Wrapped with withSecretEncryption (src/secrets/store.ts). */
  readonly store: Store;
  readonly config: Readonly<Pick<Config, 'api'>>;
  readonly senderDeps: SenderDeps;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly now?: () => number;
  /** True once shutdown began: answers close their connection so clients move to another pod. */
  readonly draining?: () => boolean;
  /** Tests: check every answer against its route's response schema (a mismatch is a 500). */
  readonly checkResponses?: boolean;
}

export interface Api {
  /** The request handler, for `http.createServer(api.handler)`. */
  readonly handler: express.Express;
  readonly routes: readonly Route[];
  readonly openapi: Record<string, unknown>;
  /** Aborts in-flight test pings and paced replays. */
  close(): void;
}

interface RequestState {
  readonly requestId: string;
  readonly log: Logger;
  readonly started: number;
  route: string;
  /** The token's name once authenticated. */
  principal?: string;
}

const state = (res: Response) => res.locals as unknown as RequestState;

export function createApi(deps: ApiDeps): Api {
  const { logger, metrics } = deps;
  const abort = new AbortController();
  const ctx: ApiContext = {
    store: deps.store,
    api: deps.config.api,
    senderDeps: deps.senderDeps,
    now: deps.now ?? Date.now,
    signal: abort.signal,
  };
  const routes = [...subscriberRoutes(ctx), ...deliveryRoutes(ctx), ...dlqRoutes(ctx), ...eventRoutes(ctx)];
  const openapi = buildOpenApi(routes);
  const auth = createAuthenticator(deps.config.api.tokens);
  const patterns = [
    ...[...new Set(routes.map((r) => r.path))].map((path) => ({
      path,
      pattern: pathPattern(path),
      methods: routes.filter((r) => r.path === path).map((r) => r.method.toUpperCase()),
    })),
    { path: '/openapi.json', pattern: pathPattern('/openapi.json'), methods: ['GET'] },
  ];

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('case sensitive routing', true);
  app.set('query parser', 'simple');

  function send(res: Response, reply: Reply): void {
    res.status(reply.status);
    res.set({ 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...reply.headers });
    if (deps.draining?.()) res.set('connection', 'close');
    if (reply.body === undefined) {
      res.end();
      return;
    }
    res.type('application/json').send(JSON.stringify(reply.body));
  }

  app.use((req: Request, res: Response, next: NextFunction) => {
    const requestId = requestIdOf(req);
    const s: RequestState = {
      requestId,
      log: logger.child({ requestId }),
      started: performance.now(),
      route: 'unmatched',
    };
    Object.assign(res.locals, s);
    res.set('x-request-id', requestId);
    res.on('finish', () => {
      const st = state(res);
      const seconds = (performance.now() - st.started) / 1000;
      metrics.apiRequests.inc({ method: req.method, route: st.route, status: String(res.statusCode) });
      metrics.apiRequestSeconds.observe({ method: req.method, route: st.route }, seconds);
      const line = { method: req.method, route: st.route, status: res.statusCode, ms: Math.round(seconds * 1000), principal: st.principal };
      if (req.method === 'GET' || req.method === 'HEAD') st.log.debug(line, 'api request');
      else st.log.info(line, 'api request');
    });
    // 406 before anything else: there is no other representation to offer.
    if (req.headers.accept !== undefined && !req.accepts('application/json')) {
      next(new ApiError('ROUTER_ERR_NOT_ACCEPTABLE', 'this API serves application/json only'));
      return;
    }
    next();
  });

  app.get('/openapi.json', (_req, res) => {
    state(res).route = '/openapi.json';
    send(res, { status: 200, body: openapi, headers: { 'cache-control': 'public, max-age=300' } });
  });

  for (const route of routes) {
    app[route.method](expressPath(route.path), async (req: Request, res: Response) => {
      const st = state(res);
      st.route = route.path;
      const principal = auth.authenticate(req.headers.authorization);
      st.principal = principal.name;
      auth.authorize(principal, route.scope);
      const log = st.log.child({ principal: principal.name });

      const raw = await readJson(req, deps.config.api.maxBodyBytes);
      const params = parse(route.params, { ...req.params }, (err) => {
        throw new ApiError('ROUTER_ERR_NOT_FOUND', 'no such resource', { details: zodDetails(err) });
      });
      const query = parse(route.query ?? NoQuery, { ...(req.query as object) }, (err) => {
        throw new ApiError('ROUTER_ERR_BAD_REQUEST', 'invalid query parameters', { details: zodDetails(err) });
      });
      let body: unknown;
      if (!route.body) {
        if (raw !== undefined) throw new ApiError('ROUTER_ERR_VALIDATION', 'this route takes no request body', { details: [{ path: '', message: 'remove the body' }] });
      } else if (raw === undefined) {
        if (!route.bodyOptional) throw new ApiError('ROUTER_ERR_VALIDATION', 'a JSON body is required', { details: [{ path: '', message: 'required' }] });
      } else {
        const result = route.body.safeParse(raw);
        if (!result.success) throw new ApiError('ROUTER_ERR_VALIDATION', 'the body failed validation', { details: zodDetails(result.error) });
        body = result.data;
      }

      const reply = await route.handler({ params, query, body, headers: req.headers, principal, log, requestId: st.requestId });
      if (deps.checkResponses) checkReply(route, reply);
      send(res, reply);
    });
  }

  // A known path with another method is a 405; anything else a 404. Neither needs a token.
  app.use((req: Request, _res: Response, next: NextFunction) => {
    const known = patterns.find((p) => p.pattern.test(req.path));
    if (known) {
      const allow = [...known.methods, ...(known.methods.includes('GET') ? ['HEAD'] : [])].join(', ');
      next(new ApiError('ROUTER_ERR_METHOD_NOT_ALLOWED', `${req.method} is not allowed here`, { headers: { allow } }));
      return;
    }
    next(new ApiError('ROUTER_ERR_NOT_FOUND', 'no such route'));
  });

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const st = state(res);
    const answer = toErrorResponse(err, st.requestId);
    if (answer.unexpected) st.log.error({ err }, 'api request failed');
    // The rest of an oversized body was never read: close the connection instead of draining it.
    if (answer.status === 413) res.set('connection', 'close');
    send(res, { status: answer.status, body: answer.body, headers: answer.headers });
  });

  return {
    handler: app,
    routes,
    openapi,
    close: () => abort.abort(),
  };
}

/** Routes without a query schema take no query parameters at all. */
const NoQuery = z.object({}).strict();

function parse(schema: z.ZodType | undefined, value: object, fail: (err: z.ZodError) => never): unknown {
  if (!schema) return undefined;
  const result = schema.safeParse(value);
  if (!result.success) return fail(result.error);
  return result.data;
}

function checkReply(route: Route, reply: Reply): void {
  const spec = route.responses[reply.status];
  if (!spec) throw new Error(`${route.operationId} answered ${reply.status}, which its route does not declare`);
  if (spec.schema) {
    const result = spec.schema.safeParse(reply.body);
    if (!result.success) throw new Error(`${route.operationId} ${reply.status} does not match its schema: ${JSON.stringify(result.error.issues)}`);
  } else if (reply.body !== undefined) throw new Error(`${route.operationId} ${reply.status} declares no body but sent one`);
}
