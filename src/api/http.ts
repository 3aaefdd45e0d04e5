/**
 * Request plumbing shared by every API route: request ids, JSON-only content negotiation and a bounded, hardened
 * JSON body reader.
 *
 * Body rules (cheapest first): no body → undefined; a body whose type is not application/json (charset utf-8 if
 * given) → 415; above `api.maxBodyBytes` → 413 as soon as the cap is crossed (the connection is then closed);
 * invalid UTF-8 or JSON → 400; nesting deeper than MAX_DEPTH or a `__proto__` key anywhere → 400. JSON.parse itself
 * never pollutes a prototype (it defines `__proto__` as an own property), but such a key has no business in any of
 * these bodies and would be dropped silently by some schema steps, so it is refused outright.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { RouterError } from '../errors.ts';
import { readBody } from '../receiver/body.ts';
import { ApiError } from './errors.ts';

/** Deeper than any valid body (a match expression nests at most 8 levels inside a subscriber). */
export const MAX_DEPTH = 32;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's `x-request-id` when it is a sane token, else a fresh one. */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : `req_${randomUUID().replaceAll('-', '')}`;
}

function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && length !== '0';
}

function isJsonType(header: string | undefined): boolean {
  if (!header) return false;
  const [type, ...params] = header.split(';').map((p) => p.trim().toLowerCase());
  if (type !== 'application/json') return false;
  return params.every((p) => !p.startsWith('charset=') || p === 'charset=utf-8' || p === 'charset="utf-8"');
}

/** Reads and parses a JSON body; undefined when the request has none. */
export async function readJson(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  if (!hasBody(req)) return undefined;
  if (!isJsonType(req.headers['content-type'])) {
    throw new ApiError('ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE', 'request bodies must be application/json');
  }
  let bytes: Buffer;
  try {
    bytes = await readBody(req, maxBytes);
  } catch (err) {
    if (err instanceof RouterError) throw new ApiError('ROUTER_ERR_BODY_TOO_LARGE', `request bodies are limited to ${maxBytes} bytes`);
    throw new ApiError('ROUTER_ERR_BAD_REQUEST', 'the request body could not be read', { cause: err });
  }
  if (bytes.length === 0) return undefined;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ApiError('ROUTER_ERR_BODY_INVALID', 'the body is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // JSON.parse's message quotes the input: never echo it.
    throw new ApiError('ROUTER_ERR_BODY_INVALID', 'the body is not valid JSON');
  }
  checkShape(value);
  return value;
}

/** Iterative, so hostile nesting cannot exhaust the stack here. */
function checkShape(root: unknown): void {
  const stack: { value: unknown; depth: number }[] = [{ value: root, depth: 1 }];
  while (stack.length > 0) {
    const { value, depth } = stack.pop() as { value: unknown; depth: number };
    if (typeof value !== 'object' || value === null) continue;
    if (depth > MAX_DEPTH) throw new ApiError('ROUTER_ERR_BODY_INVALID', `the body nests deeper than ${MAX_DEPTH} levels`);
    if (Array.isArray(value)) {
      for (const v of value) stack.push({ value: v, depth: depth + 1 });
      continue;
    }
    for (const key of Object.keys(value)) {
      if (key === '__proto__') throw new ApiError('ROUTER_ERR_BODY_INVALID', 'the body has a "__proto__" key');
      stack.push({ value: (value as Record<string, unknown>)[key], depth: depth + 1 });
    }
  }
}

/** Versions named by an If-Match header (`W/"3"`, `"3"`, `*`); undefined when absent. */
export function parseIfMatch(header: string | undefined): { any: true } | { versions: number[] } | undefined {
  if (header === undefined) return undefined;
  if (header.trim() === '*') return { any: true };
  const versions: number[] = [];
  for (const part of header.split(',')) {
    const m = /^\s*(?:W\/)?"(\d{1,15})"\s*$/.exec(part);
    if (m) versions.push(Number(m[1]));
  }
  return { versions };
}

/**
 * ETags are weak (W/"<version>"): equal versions are semantically equal representations. If-Match accepts the weak
 * form too, although RFC 9110 asks for strong comparison there: the version is exactly what a lost update is about.
 */
export const etagOf = (version: number) => `W/"${version}"`;
