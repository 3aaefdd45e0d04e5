/**
 * Errors that cross a module boundary carry a stable code. Callers classify with `instanceof RouterError` and
 * `err.code`, never by message text. Every code is documented in docs/errors.md; a test keeps the two in step.
 *
 * The brand is a `Symbol.for` key so that `instanceof` also holds for errors created by another copy of this module
 * (two installed versions, a test importing through a different path).
 */
const brand = Symbol.for('webhook-router.error');

export const errorCodes = {
  ROUTER_ERR_CONFIG_INVALID: 'The configuration failed validation; every issue is listed.',
  ROUTER_ERR_QUEUE_UNAVAILABLE: 'The internal queue could not confirm a write or a read in time.',
  ROUTER_ERR_QUEUE_CLOSED: 'The queue adapter (or one of its halves) was used after close().',
  ROUTER_ERR_QUEUE_OVERLOADED: 'Too many publishes are waiting for a commit; the caller should back off.',
  ROUTER_ERR_ALREADY_SETTLED: 'A queue delivery was acked or nacked twice.',
  ROUTER_ERR_LEASE_LOST: 'A queue delivery was settled after its lease expired and another consumer took it.',
  ROUTER_ERR_MESSAGE_TOO_LARGE: "A source's maxBodyBytes does not fit in one message of the configured queue.",
  ROUTER_ERR_ENVELOPE_INVALID: 'Bytes taken from the queue are not a valid envelope (a poison message).',
  ROUTER_ERR_SIGNATURE_MISSING: 'The request carries no signature or token for its source.',
  ROUTER_ERR_SIGNATURE_MISMATCH: 'The signature or token does not match any configured secret.',
  ROUTER_ERR_TIMESTAMP_STALE: 'A Standard Webhooks timestamp is outside the ±5 minute tolerance.',
  ROUTER_ERR_HEADER_MISSING: 'A header the source kind requires (event, delivery id, …) is missing or malformed.',
  ROUTER_ERR_BODY_TOO_LARGE: "The request body is larger than the source's maxBodyBytes.",
  ROUTER_ERR_BODY_INVALID: 'The body could not be parsed as the declared content type.',
  ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE: 'The content type is neither application/json nor form-encoded.',
  ROUTER_ERR_SOURCE_UNKNOWN: 'No source is configured under that id.',
  ROUTER_ERR_SENDER_CLOSED: 'A transport sender was used after close() (its subscriber changed or the worker is stopping).',
  ROUTER_ERR_SCHEMA_MISMATCH: 'The database schema is older than this release needs (run `webhook-router migrate`) or newer than it knows.',
  ROUTER_ERR_STORE_UNAVAILABLE: 'The store (SQLite, PostgreSQL, MongoDB) could not be reached or refused a write.',
  ROUTER_ERR_METHOD_NOT_ALLOWED: 'The route exists but not for this HTTP method.',
  ROUTER_ERR_UNAUTHORIZED: 'The API request has no bearer token, or one that matches no configured token.',
  ROUTER_ERR_FORBIDDEN: "The API token is valid but lacks the route's scope.",
  ROUTER_ERR_NOT_FOUND: 'No such route, or no such subscriber, delivery, dead letter or event.',
  ROUTER_ERR_BAD_REQUEST: 'A query or path parameter of an API request is invalid, or a request head could not be parsed.',
  ROUTER_ERR_VALIDATION: 'An API request body failed validation (including the transport config and its SSRF check).',
  ROUTER_ERR_CONFLICT: 'The API request conflicts with the current state (a concurrent change, a delivery in flight).',
  ROUTER_ERR_PRECONDITION_FAILED: "If-Match names a version other than the subscriber's current one.",
  ROUTER_ERR_NOT_ACCEPTABLE: 'The Accept header excludes application/json, the only representation the API has.',
  ROUTER_ERR_SECRET_UNREADABLE: 'A stored secret could not be decrypted: its key id is not configured, or the value was altered.',
  ROUTER_ERR_INTERNAL: 'An unexpected failure inside the router (a bug); details are in the logs only.',
} as const;

export type RouterErrorCode = keyof typeof errorCodes;

export class RouterError extends Error {
  readonly code: RouterErrorCode;

  constructor(code: RouterErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RouterError';
    this.code = code;
    Object.defineProperty(this, brand, { value: true });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true;
  }
}

export function isRouterError(value: unknown, code?: RouterErrorCode): value is RouterError {
  return value instanceof RouterError && (code === undefined || value.code === code);
}
