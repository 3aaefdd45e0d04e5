/**
 * Headers every transport attaches to a delivery (design §6), and the signatures in them.
 *
 * - Standard Webhooks: `webhook-id` (the delivery id), `webhook-timestamp` (this attempt, Unix seconds),
 *   `webhook-signature` = space-separated `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one entry per
 *   active secret (two during a rotation). The key is the base64 part of a `whsec_` secret.
 * - `webhook-attempt`: not standard, asked for by GitLab users (gitlab-org/gitlab#14888).
 * - With signing "github": `X-Hub-Signature-256` over the exact bytes sent, keyed with the subscriber's secret, so
 *   GitHub-style consumers verify as usual. The source's own signature or token is never forwarded.
 * - The source's event headers pass through under their own names.
 *
 * node:crypto signs in native code; the reference `standardwebhooks` package uses pure-JS SHA-256 (278 ms for 25 MiB).
 */
import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { OutboundMessage } from './port.ts';

/**
 * Source headers that never travel on: the source's own credentials (design §6: "never forward the source's
 * signature or token"), the ones the router sets itself, and framing/hop-by-hop headers undici manages. Applied here,
 * so every transport obeys it.
 */
/** Framing and hop-by-hop headers the HTTP client manages, plus the user agent the router sets. */
export const CLIENT_MANAGED_HEADERS: ReadonlySet<string> = new Set([
  'user-agent',
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
  'expect',
]);

const NOT_PASSED_THROUGH: ReadonlySet<string> = new Set([
  'x-hub-signature',
  'x-hub-signature-256',
  'x-gitlab-token',
  'authorization',
  'proxy-authorization',
  'cookie',
  'webhook-id',
  'webhook-timestamp',
  'webhook-signature',
  'webhook-attempt',
  ...CLIENT_MANAGED_HEADERS,
]);

export function passThrough(headers: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (!NOT_PASSED_THROUGH.has(lower)) out[lower] = value;
  }
  return out;
}

export type SigningScheme = 'standard-webhooks' | 'github';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
export const userAgent = `webhook-router/${version}`;

/**
 * HMAC keys for a subscriber's secrets, built once per secret: createHmac() with a string or Buffer key validates and
 * wraps the key on every call (about 15 µs per signature, benchmarks/RESULTS.md). A sender keeps one of these; its
 * secrets change only with its subscriber's version, which gets a new sender.
 */
export class SigningKeys {
  readonly #standard = new Map<string, KeyObject>();
  readonly #github = new Map<string, KeyObject>();

  /** The Standard Webhooks key: the base64 part of a `whsec_` secret. */
  standard(secret: string): KeyObject {
    let key = this.#standard.get(secret);
    if (!key) {
      key = createSecretKey(Buffer.from(secret.startsWith('whsec_') ? secret.slice(6) : secret, 'base64'));
      this.#standard.set(secret, key);
    }
    return key;
  }

  /** The GitHub-style key: the secret string itself, as GitHub consumers configure it. */
  github(secret: string): KeyObject {
    let key = this.#github.get(secret);
    if (!key) {
      key = createSecretKey(Buffer.from(secret, 'utf8'));
      this.#github.set(secret, key);
    }
    return key;
  }
}

export function outboundHeaders(message: OutboundMessage, signing: SigningScheme, nowMs: number, keys: SigningKeys): Record<string, string> {
  const timestamp = Math.floor(nowMs / 1000);
  const standardSignature = (secret: string) =>
    `v1,${createHmac('sha256', keys.standard(secret)).update(`${message.deliveryId}.${timestamp}.`).update(message.body).digest('base64')}`;
  const secrets = [message.secrets.current, ...(message.secrets.previous ? [message.secrets.previous] : [])];
  const headers: Record<string, string> = {
    ...passThrough(message.headers),
    'user-agent': userAgent,
    'webhook-id': message.deliveryId,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': secrets.map(standardSignature).join(' '),
    'webhook-attempt': String(message.attempt),
  };
  if (signing === 'github') {
    headers['x-hub-signature-256'] = `sha256=${createHmac('sha256', keys.github(message.secrets.current)).update(message.body).digest('hex')}`;
  }
  return headers;
}
