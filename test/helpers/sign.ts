/**
 * Builders for signed webhook requests, shared by receiver, delivery-engine and benchmark tests.
 *
 * Signatures are computed here with node:crypto directly, never through src/receiver/verify.ts, so a test that
 * signs with these helpers and verifies with the router checks two independent implementations against each other
 * (test/unit/verify.test.ts additionally checks them against @octokit/webhooks-methods and standardwebhooks).
 *
 * - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>` plus X-GitHub-Event / -Delivery / -Hook-ID.
 * - GitLab secret token: `X-Gitlab-Token: <secret>` plus X-Gitlab-Event and Idempotency-Key / X-Gitlab-Webhook-UUID.
 * - Standard Webhooks (and GitLab's signing token): `webhook-id`, `webhook-timestamp` (Unix seconds) and
 *   `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, key = base64 after `whsec_`.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';

export type Body = string | Uint8Array;

const bytes = (body: Body): Buffer => (typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength));

/** A random printable secret for GitHub / GitLab token sources. */
export function randomSecret(byteLength = 32): string {
  return randomBytes(byteLength).toString('base64url');
}

/** A random Standard Webhooks secret: `whsec_` + base64 of `byteLength` random bytes (the spec asks for 24–64). */
export function randomWhsecSecret(byteLength = 32): string {
  return `whsec_${randomBytes(byteLength).toString('base64')}`;
}

/** A fresh GitHub-style delivery GUID. */
export const deliveryId = (): string => randomUUID();

// ---------------------------------------------------------------------------------------------------------------
// GitHub

/** `sha256=<hex>` over the raw bytes. */
export function githubSignature(secret: string | Uint8Array, body: Body): string {
  return `sha256=${createHmac('sha256', secret).update(bytes(body)).digest('hex')}`;
}

export interface GithubRequestOptions {
  /** Omit to send no X-Hub-Signature-256 at all. */
  readonly secret?: string | undefined;
  readonly body: Body;
  readonly event?: string;
  readonly delivery?: string;
  readonly hookId?: string | number;
  /** Default application/json. */
  readonly contentType?: string;
  /** Merged last: override or add headers (a value of `undefined` removes one). */
  readonly extra?: Readonly<Record<string, string | undefined>>;
}

export interface SignedRequest {
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

/** Headers GitHub sends with a webhook, signed with `secret`. */
export function githubRequest(options: GithubRequestOptions): SignedRequest {
  const body = bytes(options.body);
  const headers: Record<string, string> = {
    'content-type': options.contentType ?? 'application/json',
    'user-agent': 'GitHub-Hookshot/test',
    'x-github-event': options.event ?? 'push',
    'x-github-delivery': options.delivery ?? deliveryId(),
    'x-github-hook-id': String(options.hookId ?? 123456),
    'x-github-hook-installation-target-type': 'repository',
    'x-github-hook-installation-target-id': '1296269',
  };
  if (options.secret !== undefined) headers['x-hub-signature-256'] = githubSignature(options.secret, body);
  return { headers: applyExtra(headers, options.extra), body };
}

/** GitHub's `application/x-www-form-urlencoded` form: the JSON document in the `payload` field. */
export function githubFormBody(json: string): Buffer {
  return Buffer.from(new URLSearchParams({ payload: json }).toString(), 'utf8');
}

// ---------------------------------------------------------------------------------------------------------------
// GitLab (secret token)

export interface GitlabTokenRequestOptions {
  /** Omit to send no X-Gitlab-Token. */
  readonly token?: string | undefined;
  readonly body: Body;
  readonly event?: string;
  /** Default: a fresh UUID. Pass null to leave the header out. */
  readonly idempotencyKey?: string | null;
  readonly webhookUuid?: string | null;
  readonly extra?: Readonly<Record<string, string | undefined>>;
}

export function gitlabTokenRequest(options: GitlabTokenRequestOptions): SignedRequest {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'GitLab/17.0.0',
    'x-gitlab-event': options.event ?? 'Push Hook',
    'x-gitlab-instance': 'https://gitlab.example.com',
    'x-gitlab-event-uuid': randomUUID(),
  };
  const idempotencyKey = options.idempotencyKey === undefined ? randomUUID() : options.idempotencyKey;
  const webhookUuid = options.webhookUuid === undefined ? randomUUID() : options.webhookUuid;
  if (idempotencyKey !== null) headers['idempotency-key'] = idempotencyKey;
  if (webhookUuid !== null) headers['x-gitlab-webhook-uuid'] = webhookUuid;
  if (options.token !== undefined) headers['x-gitlab-token'] = options.token;
  return { headers: applyExtra(headers, options.extra), body: bytes(options.body) };
}

// ---------------------------------------------------------------------------------------------------------------
// Standard Webhooks (also GitLab's signing token)

/** Decodes a `whsec_<base64>` secret to its key bytes. */
export function whsecKey(secret: string): Buffer {
  if (!secret.startsWith('whsec_')) throw new Error('a Standard Webhooks secret starts with whsec_');
  return Buffer.from(secret.slice('whsec_'.length), 'base64');
}

/** One `v1,<base64>` signature entry. */
export function standardSignature(secret: string, id: string, timestampSec: number | string, body: Body): string {
  const mac = createHmac('sha256', whsecKey(secret)).update(`${id}.${timestampSec}.`).update(bytes(body)).digest('base64');
  return `v1,${mac}`;
}

export interface StandardRequestOptions {
  /** One entry per secret, space-separated (what a sender does during a rotation). Empty: no webhook-signature. */
  readonly secrets: readonly string[];
  readonly body: Body;
  readonly id?: string;
  /** Unix seconds; default now. */
  readonly timestampSec?: number;
  readonly contentType?: string;
  readonly extra?: Readonly<Record<string, string | undefined>>;
}

export function standardHeaders(options: StandardRequestOptions): Record<string, string> {
  const id = options.id ?? `msg_${randomBytes(12).toString('hex')}`;
  const ts = options.timestampSec ?? Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = {
    'content-type': options.contentType ?? 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(ts),
  };
  if (options.secrets.length > 0) {
    headers['webhook-signature'] = options.secrets.map((s) => standardSignature(s, id, ts, options.body)).join(' ');
  }
  return headers;
}

export function standardRequest(options: StandardRequestOptions): SignedRequest {
  return { headers: applyExtra(standardHeaders(options), options.extra), body: bytes(options.body) };
}

export interface GitlabSigningRequestOptions extends Omit<StandardRequestOptions, 'id'> {
  /** webhook-id; GitLab sets it equal to the Idempotency-Key. Default: a fresh UUID. */
  readonly id?: string;
  readonly event?: string;
}

/** A GitLab request signed with a signing token (Standard Webhooks headers, webhook-id = Idempotency-Key). */
export function gitlabSigningRequest(options: GitlabSigningRequestOptions): SignedRequest {
  const id = options.id ?? randomUUID();
  const headers: Record<string, string> = {
    'user-agent': 'GitLab/18.0.0',
    'x-gitlab-event': options.event ?? 'Push Hook',
    'x-gitlab-instance': 'https://gitlab.example.com',
    'x-gitlab-event-uuid': randomUUID(),
    'x-gitlab-webhook-uuid': randomUUID(),
    'idempotency-key': id,
    ...standardHeaders({ ...options, id }),
  };
  return { headers: applyExtra(headers, options.extra), body: bytes(options.body) };
}

function applyExtra(headers: Record<string, string>, extra: Readonly<Record<string, string | undefined>> | undefined): Record<string, string> {
  if (!extra) return headers;
  for (const [name, value] of Object.entries(extra)) {
    const key = name.toLowerCase();
    if (value === undefined) delete headers[key];
    else headers[key] = value;
  }
  return headers;
}
