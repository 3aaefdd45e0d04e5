/**
 * The route table's shape. Each route declares its method, OpenAPI path, scope and the zod schemas of its path
 * parameters, query and body; the same objects register the express handlers (app.ts) and generate the OpenAPI
 * document (openapi.ts), so a route cannot exist in one and not the other.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { z } from 'zod';
import type { Logger } from '../logger.ts';
import type { Principal, Scope } from './auth.ts';

export type Method = 'get' | 'post' | 'patch' | 'delete';

export interface Reply {
  readonly status: number;
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface RouteInput<P, Q, B> {
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  readonly headers: IncomingHttpHeaders;
  readonly principal: Principal;
  readonly log: Logger;
  readonly requestId: string;
}

export interface ResponseSpec {
  readonly description: string;
  /** Absent for bodiless answers (204). */
  readonly schema?: z.ZodType;
  /** Response headers worth documenting (ETag, Location). */
  readonly headers?: Readonly<Record<string, string>>;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteSpec<PS extends z.ZodType | undefined, QS extends z.ZodType | undefined, BS extends z.ZodType | undefined> {
  readonly operationId: string;
  readonly method: Method;
  /** OpenAPI form: `/v1/subscribers/{id}`. */
  readonly path: string;
  readonly scope: Scope;
  readonly summary: string;
  readonly description?: string;
  readonly params?: PS;
  readonly query?: QS;
  readonly body?: BS;
  /** Whether a route with a body schema may be called without a body (default: the body is required). */
  readonly bodyOptional?: boolean;
  /** Request headers worth documenting (If-Match). */
  readonly requestHeaders?: Readonly<Record<string, string>>;
  /** Success answers by status; error answers are added by openapi.ts from what the route validates. */
  readonly responses: Readonly<Record<number, ResponseSpec>>;
  handler(input: RouteInput<Out<PS>, Out<QS>, Out<BS>>): Promise<Reply>;
}

export interface Route {
  readonly operationId: string;
  readonly method: Method;
  readonly path: string;
  readonly scope: Scope;
  readonly summary: string;
  readonly description?: string | undefined;
  readonly params?: z.ZodType | undefined;
  readonly query?: z.ZodType | undefined;
  readonly body?: z.ZodType | undefined;
  readonly bodyOptional?: boolean | undefined;
  readonly requestHeaders?: Readonly<Record<string, string>> | undefined;
  readonly responses: Readonly<Record<number, ResponseSpec>>;
  handler(input: RouteInput<unknown, unknown, unknown>): Promise<Reply>;
}

/** Types a route's handler from its schemas, then erases them for the table. */
export function defineRoute<
  PS extends z.ZodType | undefined = undefined,
  QS extends z.ZodType | undefined = undefined,
  BS extends z.ZodType | undefined = undefined,
>(spec: RouteSpec<PS, QS, BS>): Route {
  return spec as unknown as Route;
}

/** `/v1/subscribers/{id}` → `/v1/subscribers/:id` */
export function expressPath(path: string): string {
  return path.replace(/\{([A-Za-z][A-Za-z0-9]*)\}/g, ':$1');
}

/** A matcher for a route path, used to tell 405 (known path, other method) from 404. */
export function pathPattern(path: string): RegExp {
  const parts = path.split(/\{[A-Za-z][A-Za-z0-9]*\}/).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${parts.join('[^/]+')}/?$`);
}
