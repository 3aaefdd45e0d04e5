/**
 * The one table from "what happened to an HTTP attempt" to a SendOutcome (design §6, conventions §4).
 *
 * HTTP status (the response's first byte decides; the body never changes the verdict, even when it was cut at
 * maxResponseBytes):
 *
 * | status            | outcome                    | why                                                            |
 * |-------------------|----------------------------|----------------------------------------------------------------|
 * | 2xx               | delivered                  |                                                                |
 * | 3xx               | retryable http_3xx         | redirects are never followed (SSRF, CVE-2023-28155); the       |
 * |                   |                            | endpoint may be mid-migration, so retry rather than give up    |
 * | 408               | retryable http_408         | the server timed the request out                               |
 * | 425               | retryable http_425         | "too early": replay later                                      |
 * | 429               | retryable http_429 + Retry-After | rate limited; the schedule honours Retry-After as a floor |
 * | 410               | permanent http_410         | endpoint gone: the worker disables the subscriber (design §6)  |
 * | 413               | permanent http_413         | the same bytes will never fit                                  |
 * | other 4xx         | permanent http_4xx         | the request is wrong for this endpoint; retrying won't help   |
 * | 503               | retryable http_5xx + Retry-After |                                                          |
 * | other 5xx (≥ 500) | retryable http_5xx         |                                                                |
 *
 * Errors, by `code` along the `cause` chain (outermost first; undici wraps Node's socket errors):
 *
 * | code                                                  | outcome                      |
 * |-------------------------------------------------------|------------------------------|
 * | ROUTER_SSRF_BLOCKED (connector)                       | permanent ssrf_blocked → DLQ |
 * | ROUTER_DNS_FAILED (connector), ENOTFOUND, EAI_AGAIN, … | retryable dns_error         |
 * | UND_ERR_CONNECT/HEADERS/BODY_TIMEOUT, ETIMEDOUT, TimeoutError | retryable timeout    |
 * | ECONNREFUSED                                          | retryable connection_refused |
 * | ECONNRESET, EPIPE, ECONNABORTED, UND_ERR_SOCKET       | retryable connection_reset   |
 * | ERR_TLS_*, ERR_SSL_*, CERT_*, *_CERT*, EPROTO, …      | retryable tls_error (certificates get renewed) |
 * | EHOSTUNREACH, ENETUNREACH, other network errors       | retryable network_error      |
 * | UND_ERR_INVALID_ARG, UND_ERR_DESTROYED, UND_ERR_CLOSED, ERR_INVALID_ARG_* | ours: null → the sender throws |
 *
 * Outcomes carry stable codes only, never error messages: "ECONNREFUSED 10.0.0.5:6379" in an attempt record is
 * how webhook logs become port scanners (reliability §3.1).
 */
import { parseRetryAfter } from '../../src/retry/schedule.ts';
import type { DeliveryCode, SendOutcome } from '../port.ts';

type Verdict = { readonly kind: 'delivered' } | { readonly kind: 'retryable' | 'permanent'; readonly code: DeliveryCode; readonly retryAfter?: true };

/** The status rows above; first match wins. */
const STATUS_TABLE: readonly { readonly match: (s: number) => boolean; readonly verdict: Verdict }[] = [
  { match: (s) => s >= 200 && s < 300, verdict: { kind: 'delivered' } },
  { match: (s) => s >= 300 && s < 400, verdict: { kind: 'retryable', code: 'http_3xx' } },
  { match: (s) => s === 408, verdict: { kind: 'retryable', code: 'http_408' } },
  { match: (s) => s === 410, verdict: { kind: 'permanent', code: 'http_410' } },
  { match: (s) => s === 413, verdict: { kind: 'permanent', code: 'http_413' } },
  { match: (s) => s === 425, verdict: { kind: 'retryable', code: 'http_425' } },
  { match: (s) => s === 429, verdict: { kind: 'retryable', code: 'http_429', retryAfter: true } },
  { match: (s) => s >= 400 && s < 500, verdict: { kind: 'permanent', code: 'http_4xx' } },
  { match: (s) => s === 503, verdict: { kind: 'retryable', code: 'http_5xx', retryAfter: true } },
  { match: (s) => s >= 500, verdict: { kind: 'retryable', code: 'http_5xx' } },
];

/** Classifies a response by its status. `retryAfter` is the raw header (undici may give an array). */
export function classifyStatus(
  status: number,
  retryAfter: string | string[] | undefined,
  info: { readonly nowMs: number; readonly durationMs: number; readonly response?: string | undefined },
): SendOutcome {
  const row = STATUS_TABLE.find((r) => r.match(status));
  const response = info.response === undefined ? {} : { response: info.response };
  // 1xx never reaches here (undici consumes informational responses); anything else unlisted is a broken server.
  const verdict: Verdict = row?.verdict ?? { kind: 'retryable', code: 'http_5xx' };
  if (verdict.kind === 'delivered') return { kind: 'delivered', status, durationMs: info.durationMs, ...response };
  if (verdict.kind === 'permanent') return { kind: 'permanent', code: verdict.code, status, durationMs: info.durationMs, ...response };
  const header = Array.isArray(retryAfter) ? retryAfter[0] : retryAfter;
  const retryAfterMs = verdict.retryAfter ? parseRetryAfter(header, info.nowMs) : undefined;
  return {
    kind: 'retryable',
    code: verdict.code,
    status,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    durationMs: info.durationMs,
    ...response,
  };
}

/** `null` marks a fault on our side: the sender rethrows instead of recording an attempt. */
type ErrorVerdict = { readonly kind: 'retryable' | 'permanent'; readonly code: DeliveryCode } | null;

/** The error rows above, exact codes. */
const ERROR_TABLE: Readonly<Record<string, ErrorVerdict>> = {
  ROUTER_SSRF_BLOCKED: { kind: 'permanent', code: 'ssrf_blocked' },
  ROUTER_DNS_FAILED: { kind: 'retryable', code: 'dns_error' },
  ENOTFOUND: { kind: 'retryable', code: 'dns_error' },
  EAI_AGAIN: { kind: 'retryable', code: 'dns_error' },
  EAI_FAIL: { kind: 'retryable', code: 'dns_error' },
  EAI_NODATA: { kind: 'retryable', code: 'dns_error' },
  ENODATA: { kind: 'retryable', code: 'dns_error' },
  ESERVFAIL: { kind: 'retryable', code: 'dns_error' },
  UND_ERR_CONNECT_TIMEOUT: { kind: 'retryable', code: 'timeout' },
  UND_ERR_HEADERS_TIMEOUT: { kind: 'retryable', code: 'timeout' },
  UND_ERR_BODY_TIMEOUT: { kind: 'retryable', code: 'timeout' },
  ETIMEDOUT: { kind: 'retryable', code: 'timeout' },
  ECONNREFUSED: { kind: 'retryable', code: 'connection_refused' },
  ECONNRESET: { kind: 'retryable', code: 'connection_reset' },
  EPIPE: { kind: 'retryable', code: 'connection_reset' },
  ECONNABORTED: { kind: 'retryable', code: 'connection_reset' },
  UND_ERR_SOCKET: { kind: 'retryable', code: 'connection_reset' },
  EPROTO: { kind: 'retryable', code: 'tls_error' },
  DEPTH_ZERO_SELF_SIGNED_CERT: { kind: 'retryable', code: 'tls_error' },
  SELF_SIGNED_CERT_IN_CHAIN: { kind: 'retryable', code: 'tls_error' },
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: { kind: 'retryable', code: 'tls_error' },
  UNABLE_TO_GET_ISSUER_CERT: { kind: 'retryable', code: 'tls_error' },
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: { kind: 'retryable', code: 'tls_error' },
  HOSTNAME_MISMATCH: { kind: 'retryable', code: 'tls_error' },
  EHOSTUNREACH: { kind: 'retryable', code: 'network_error' },
  ENETUNREACH: { kind: 'retryable', code: 'network_error' },
  EHOSTDOWN: { kind: 'retryable', code: 'network_error' },
  UND_ERR_INVALID_ARG: null,
  UND_ERR_NOT_SUPPORTED: null,
  UND_ERR_DESTROYED: null,
  UND_ERR_CLOSED: null,
};

/** The remaining rows, by pattern: OpenSSL and Node name TLS failures in several families. */
function byPattern(code: string): ErrorVerdict | undefined {
  if (/^(ERR_TLS_|ERR_SSL_)|^CERT_|_CERT(_|$)|^ERR_OSSL_/.test(code)) return { kind: 'retryable', code: 'tls_error' };
  if (/^ERR_INVALID_ARG_/.test(code)) return null;
  return undefined;
}

function codesOf(err: unknown): string[] {
  const codes: string[] = [];
  const seen = new Set<unknown>();
  let e: unknown = err;
  while (typeof e === 'object' && e !== null && !seen.has(e)) {
    seen.add(e);
    const { code, name } = e as { code?: unknown; name?: unknown };
    if (typeof code === 'string') codes.push(code);
    // AbortSignal.timeout() and our own per-attempt deadline abort with a DOMException named TimeoutError.
    if (name === 'TimeoutError') codes.push('ETIMEDOUT');
    // net.connect with autoSelectFamily reports every address it tried in an AggregateError.
    if (e instanceof AggregateError) for (const inner of e.errors) codes.push(...codesOf(inner));
    e = (e as { cause?: unknown }).cause;
  }
  return codes;
}

/**
 * Classifies a failed attempt (no response status). Returns null when the failure is ours (a bug, a closed agent):
 * the caller must throw so no attempt is recorded.
 */
export function classifyError(err: unknown, durationMs: number): SendOutcome | null {
  for (const code of codesOf(err)) {
    const verdict = Object.hasOwn(ERROR_TABLE, code) ? ERROR_TABLE[code] : byPattern(code);
    if (verdict === undefined) continue;
    if (verdict === null) return null;
    return { kind: verdict.kind, code: verdict.code, durationMs };
  }
  return { kind: 'retryable', code: 'network_error', durationMs };
}
