/**
 * What each source kind requires of a request, how it is verified, and how its routing fields are read.
 * A typed registry keyed by `kind` (config/schema.ts `sourceKinds`); adding a kind without a handler fails to compile.
 *
 * Dedupe keys (design §4): GitHub `(X-GitHub-Hook-ID, X-GitHub-Delivery)`: the GUID alone is shared by every hook
 * that receives the event and reused on redelivery (github/docs#32822). GitLab `Idempotency-Key`, else
 * `X-Gitlab-Webhook-UUID`. Standard Webhooks `webhook-id`.
 */
import { createSecretKey, type KeyObject } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { SourceConfig } from '../../config/schema.ts';
import type { RouterErrorCode } from '../errors.ts';
import type { RoutingFields } from '../envelope.ts';
import { extractGithubRouting, extractGitlabRouting, extractStandardRouting } from './routing.ts';
import { standardWebhooksKey, verifyGithubSignature, verifyStandardSignature, verifyToken } from './verify.ts';

export interface Rejection {
  readonly status: 400 | 401;
  readonly code: RouterErrorCode;
  readonly message: string;
}

/** What the headers say about a delivery, read before the body. */
export interface Identity {
  readonly dedupeKey: string;
  /** Event name from a header, when the kind has one; used for metrics labels only after verification. */
  readonly headerEvent: string | undefined;
  /** Source headers passed through to subscribers (design §6); never a signature or token. */
  readonly passHeaders: Record<string, string>;
}

export interface CompiledSource {
  readonly config: SourceConfig;
  /** Secrets as raw bytes (plain tokens). */
  readonly secrets: readonly Uint8Array[];
  /**
   * The same secrets as HMAC keys, made once: createHmac() with a Buffer key validates and wraps the key on every
   * call, about 15 µs per webhook (benchmarks/RESULTS.md).
   */
  readonly hmacKeys: readonly KeyObject[];
  /** Secrets in `whsec_` form, decoded (Standard Webhooks keys). */
  readonly signingKeys: readonly KeyObject[];
}

export interface VerifyContext {
  readonly nowSec: number;
  readonly toleranceSec: number;
}

export interface SourceKindHandler {
  identify(headers: IncomingHttpHeaders): Identity | Rejection;
  verify(source: CompiledSource, body: Uint8Array, headers: IncomingHttpHeaders, ctx: VerifyContext): Rejection | undefined;
  routing(payload: unknown, identity: Identity): RoutingFields;
  /** Events answered 200 instead of 202 (GitHub's `ping`). */
  isPing(identity: Identity): boolean;
}

export function compileSource(config: SourceConfig): CompiledSource {
  return {
    config,
    secrets: config.secrets.map((s) => Buffer.from(s, 'utf8')),
    hmacKeys: config.secrets.map((s) => createSecretKey(Buffer.from(s, 'utf8'))),
    signingKeys: config.secrets
      .map(standardWebhooksKey)
      .filter((k): k is Uint8Array => k !== undefined)
      .map((k) => createSecretKey(k)),
  };
}

export const isRejection = (v: Identity | Rejection): v is Rejection => 'status' in v;

const missing = (what: string): Rejection => ({ status: 400, code: 'ROUTER_ERR_HEADER_MISSING', message: `missing or malformed ${what} header` });
const unsigned = (what: string): Rejection => ({ status: 401, code: 'ROUTER_ERR_SIGNATURE_MISSING', message: `missing ${what}` });
const mismatch: Rejection = { status: 401, code: 'ROUTER_ERR_SIGNATURE_MISMATCH', message: 'signature does not match' };
const stale: Rejection = { status: 401, code: 'ROUTER_ERR_TIMESTAMP_STALE', message: 'webhook-timestamp is outside the tolerance' };

// Header values we store and label metrics with are held to conservative shapes; anything else is a 400.
const EVENT_NAME = /^[A-Za-z0-9_.: -]{1,64}$/;
const DELIVERY_ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const HOOK_ID = /^[0-9]{1,20}$/;

function header(headers: IncomingHttpHeaders, name: string, shape: RegExp): string | undefined {
  const value = headers[name];
  return typeof value === 'string' && shape.test(value) ? value : undefined;
}

function pass(headers: IncomingHttpHeaders, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of names) {
    const value = headers[name];
    if (typeof value === 'string' && value.length <= 256) out[name] = value;
  }
  return out;
}

function verifyStandard(source: CompiledSource, body: Uint8Array, headers: IncomingHttpHeaders, ctx: VerifyContext): Rejection | undefined {
  const verdict = verifyStandardSignature(
    body,
    { id: String(headers['webhook-id']), timestamp: String(headers['webhook-timestamp']), signature: String(headers['webhook-signature']) },
    source.signingKeys,
    ctx.nowSec,
    ctx.toleranceSec,
  );
  return verdict === 'ok' ? undefined : verdict === 'stale' ? stale : mismatch;
}

const github: SourceKindHandler = {
  identify(headers) {
    const event = header(headers, 'x-github-event', EVENT_NAME);
    if (!event) return missing('X-GitHub-Event');
    const delivery = header(headers, 'x-github-delivery', DELIVERY_ID);
    if (!delivery) return missing('X-GitHub-Delivery');
    const hookId = header(headers, 'x-github-hook-id', HOOK_ID);
    if (!hookId) return missing('X-GitHub-Hook-ID');
    return {
      dedupeKey: `${hookId}:${delivery}`,
      headerEvent: event,
      passHeaders: pass(headers, [
        'x-github-event',
        'x-github-delivery',
        'x-github-hook-id',
        'x-github-hook-installation-target-type',
        'x-github-hook-installation-target-id',
        'x-github-enterprise-version',
        'x-github-enterprise-host',
      ]),
    };
  },
  verify(source, body, headers) {
    const signature = headers['x-hub-signature-256'];
    if (typeof signature !== 'string') return unsigned('X-Hub-Signature-256');
    return verifyGithubSignature(body, signature, source.hmacKeys) ? undefined : mismatch;
  },
  routing: (payload, identity) => extractGithubRouting(payload, identity.headerEvent ?? ''),
  isPing: (identity) => identity.headerEvent === 'ping',
};

const gitlab: SourceKindHandler = {
  identify(headers) {
    const event = header(headers, 'x-gitlab-event', EVENT_NAME);
    if (!event) return missing('X-Gitlab-Event');
    const key = header(headers, 'idempotency-key', DELIVERY_ID) ?? header(headers, 'x-gitlab-webhook-uuid', DELIVERY_ID);
    if (!key) return missing('Idempotency-Key or X-Gitlab-Webhook-UUID');
    return {
      dedupeKey: key,
      headerEvent: event,
      passHeaders: pass(headers, ['x-gitlab-event', 'x-gitlab-event-uuid', 'x-gitlab-webhook-uuid', 'idempotency-key', 'x-gitlab-instance']),
    };
  },
  verify(source, body, headers, ctx) {
    // The signing token (Standard Webhooks) is the stronger scheme: prefer it whenever GitLab sent it and this
    // source has a whsec_ key; a hook that sends both still verifies against a source configured with the token only.
    if (typeof headers['webhook-signature'] === 'string' && source.signingKeys.length > 0) {
      if (!header(headers, 'webhook-id', DELIVERY_ID) || typeof headers['webhook-timestamp'] !== 'string') return missing('webhook-id/webhook-timestamp');
      return verifyStandard(source, body, headers, ctx);
    }
    const token = headers['x-gitlab-token'];
    if (typeof token !== 'string') return unsigned('X-Gitlab-Token or webhook-signature');
    return verifyToken(token, source.secrets) ? undefined : mismatch;
  },
  routing: (payload, identity) => extractGitlabRouting(payload, identity.headerEvent ?? ''),
  isPing: () => false,
};

const standardWebhooks: SourceKindHandler = {
  identify(headers) {
    const id = header(headers, 'webhook-id', DELIVERY_ID);
    if (!id) return missing('webhook-id');
    if (!header(headers, 'webhook-timestamp', /^\d{1,12}$/)) return missing('webhook-timestamp');
    return { dedupeKey: id, headerEvent: undefined, passHeaders: {} };
  },
  verify(source, body, headers, ctx) {
    if (typeof headers['webhook-signature'] !== 'string') return unsigned('webhook-signature');
    return verifyStandard(source, body, headers, ctx);
  },
  routing: (payload) => extractStandardRouting(payload),
  isPing: () => false,
};

export const sourceKindHandlers = {
  github,
  gitlab,
  'standard-webhooks': standardWebhooks,
} satisfies Record<SourceConfig['kind'], SourceKindHandler>;
