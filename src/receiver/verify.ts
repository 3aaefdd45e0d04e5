/**
 * Signature checks, on the raw body bytes, in constant time. Pure functions: secrets in, verdict out.
 *
 * - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`. The legacy SHA-1 header is never enough.
 * - GitLab: `X-Gitlab-Token` is the secret itself. Both sides are hashed first, so the comparison takes the same time
 *   whatever the lengths (timingSafeEqual demands equal lengths; an early length check would leak the length).
 * - Standard Webhooks (and GitLab's signing token): `webhook-signature` holds space-separated `v1,<base64>` entries,
 *   HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the base64 key after `whsec_`; the timestamp must
 *   be within the tolerance, or a captured request could be replayed forever.
 *
 * Every compare uses timingSafeEqual after decoding to bytes and checking the length of the decoded digest, never a
 * string `===` (cashfree/cashfree-pg-sdk-nodejs#124, tailscale/tailscale#6572).
 */
import { createHash, createHmac, type KeyObject, timingSafeEqual } from 'node:crypto';

const SHA256_BYTES = 32;
const GITHUB_SIGNATURE = /^sha256=([0-9a-fA-F]{64})$/;

export function verifyGithubSignature(body: Uint8Array, header: string, secrets: readonly (Uint8Array | KeyObject)[]): boolean {
  const match = GITHUB_SIGNATURE.exec(header.trim());
  if (!match?.[1]) return false;
  const given = Buffer.from(match[1], 'hex');
  let ok = false;
  // Check every secret even after a match, so the time taken does not tell which one matched.
  for (const secret of secrets) ok = safeEqual(createHmac('sha256', secret).update(body).digest(), given) || ok;
  return ok;
}

export function verifyToken(token: string, secrets: readonly Uint8Array[]): boolean {
  const given = createHash('sha256').update(token).digest();
  let ok = false;
  for (const secret of secrets) ok = safeEqual(createHash('sha256').update(secret).digest(), given) || ok;
  return ok;
}

export type StandardVerdict = 'ok' | 'mismatch' | 'stale';

export function verifyStandardSignature(
  body: Uint8Array,
  headers: { id: string; timestamp: string; signature: string },
  keys: readonly (Uint8Array | KeyObject)[],
  nowSec: number,
  toleranceSec: number,
): StandardVerdict {
  const ts = Number(headers.timestamp);
  if (!/^\d{1,12}$/.test(headers.timestamp) || Math.abs(nowSec - ts) > toleranceSec) return 'stale';
  const given = headers.signature
    .split(' ')
    .filter((entry) => entry.startsWith('v1,'))
    .map((entry) => Buffer.from(entry.slice(3), 'base64'))
    .filter((sig) => sig.length === SHA256_BYTES);
  if (given.length === 0) return 'mismatch';
  let ok = false;
  for (const key of keys) {
    const expected = createHmac('sha256', key).update(`${headers.id}.${headers.timestamp}.`).update(body).digest();
    for (const sig of given) ok = safeEqual(expected, sig) || ok;
  }
  return ok ? 'ok' : 'mismatch';
}

/** `whsec_<base64>` → key bytes; undefined when the secret is not in that form. */
export function standardWebhooksKey(secret: string): Uint8Array | undefined {
  if (!secret.startsWith('whsec_')) return undefined;
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  return key.length > 0 ? key : undefined;
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
