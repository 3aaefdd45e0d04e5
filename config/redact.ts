/** A copy of the configuration with every value under a secret key replaced, for `config print` and logs. */
import { secretKeys } from './schema.ts';

export const REDACTED = '[redacted]';

export function redactConfig(value: unknown): unknown {
  if (typeof value === 'string') return redactUrlPassword(value);
  if (Array.isArray(value)) return value.map(redactConfig);
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = secretKeys.has(k) ? (Array.isArray(v) ? v.map(() => REDACTED) : REDACTED) : redactConfig(v);
  }
  return out;
}

/** `postgres://user:pw@host/db` → `postgres://user:[redacted]@host/db`; other strings unchanged. */
function redactUrlPassword(value: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\/[^/@]*:[^/@]*@/i.test(value)) return value;
  const url = URL.parse(value);
  if (!url?.password) return value;
  url.password = REDACTED;
  return url.toString();
}
