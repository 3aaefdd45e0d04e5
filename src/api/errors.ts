/**
 * API errors: every failure leaves as `{ "error": { "code", "message", "details", "requestId" } }` with the HTTP
 * status its code maps to (docs/errors.md). Unexpected errors become a bare ROUTER_ERR_INTERNAL; their message and
 * stack go to the log only, never to the caller (no stack traces, no store messages, no resolved addresses).
 */
import type { z } from 'zod';
import { RouterError, type RouterErrorCode } from '../errors.ts';

export interface ErrorDetail {
  /** Dotted path into the request part (`transport.url`, `limit`); empty for the whole part. */
  readonly path: string;
  readonly message: string;
}

export class ApiError extends RouterError {
  readonly details: readonly ErrorDetail[] | undefined;
  readonly headers: Readonly<Record<string, string>> | undefined;

  constructor(code: RouterErrorCode, message: string, options?: { details?: readonly ErrorDetail[]; headers?: Record<string, string>; cause?: unknown }) {
    super(code, message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ApiError';
    this.details = options?.details;
    this.headers = options?.headers;
  }
}

export const httpStatusOf: Partial<Record<RouterErrorCode, number>> = {
  ROUTER_ERR_BAD_REQUEST: 400,
  ROUTER_ERR_BODY_INVALID: 400,
  ROUTER_ERR_UNAUTHORIZED: 401,
  ROUTER_ERR_FORBIDDEN: 403,
  ROUTER_ERR_NOT_FOUND: 404,
  ROUTER_ERR_METHOD_NOT_ALLOWED: 405,
  ROUTER_ERR_NOT_ACCEPTABLE: 406,
  ROUTER_ERR_CONFLICT: 409,
  ROUTER_ERR_PRECONDITION_FAILED: 412,
  ROUTER_ERR_BODY_TOO_LARGE: 413,
  ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  ROUTER_ERR_VALIDATION: 422,
  ROUTER_ERR_STORE_UNAVAILABLE: 503,
  ROUTER_ERR_SECRET_UNREADABLE: 500,
};

/** Callers see at most this many details, each message at most this long: a hostile body cannot inflate the answer. */
const MAX_DETAILS = 50;
const MAX_MESSAGE = 300;

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}…` : s);

export function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p) => clip(String(p), 100)).join('.');
}

/** zod issues as details, their paths under `prefix` (e.g. a body's `transport` when its provider validated it). */
export function zodDetails(error: z.ZodError, prefix: readonly PropertyKey[] = []): ErrorDetail[] {
  return error.issues.slice(0, MAX_DETAILS).map((issue) => ({ path: formatPath([...prefix, ...issue.path]), message: clip(issue.message, MAX_MESSAGE) }));
}

export interface ErrorResponse {
  readonly status: number;
  readonly body: { error: { code: RouterErrorCode; message: string; details: readonly ErrorDetail[]; requestId: string } };
  readonly headers: Readonly<Record<string, string>>;
  /** True when the error is ours (5xx): the caller logs it with its stack. */
  readonly unexpected: boolean;
}

/** Errors from express and its body/path decoding carry an HTTP status of their own. */
function expressStatus(err: unknown): number | undefined {
  const status = (err as { status?: unknown; statusCode?: unknown } | null)?.status ?? (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : undefined;
}

export function toErrorResponse(err: unknown, requestId: string): ErrorResponse {
  const build = (status: number, code: RouterErrorCode, message: string, details: readonly ErrorDetail[] = [], headers: Record<string, string> = {}) => ({
    status,
    body: { error: { code, message: clip(message, MAX_MESSAGE), details, requestId } },
    headers,
    unexpected: status >= 500,
  });
  if (err instanceof RouterError) {
    const status = httpStatusOf[err.code];
    if (status !== undefined && status < 500) {
      // RouterError's Symbol.hasInstance brand makes `instanceof ApiError` true for any RouterError: read the fields.
      const { details, headers } = err as Partial<ApiError>;
      return build(status, err.code, err.message, details ?? [], { ...headers });
    }
    if (status === 503) return build(503, err.code, 'the store is unavailable; try again shortly', [], { 'retry-after': '5' });
    if (err.code === 'ROUTER_ERR_SECRET_UNREADABLE') return build(500, err.code, 'a stored secret could not be decrypted; the logs say which key is missing');
  }
  const status = expressStatus(err);
  if (status === 413) return build(413, 'ROUTER_ERR_BODY_TOO_LARGE', 'request body too large');
  if (status !== undefined) return build(400, 'ROUTER_ERR_BAD_REQUEST', 'malformed request');
  return build(500, 'ROUTER_ERR_INTERNAL', 'internal error');
}
