/**
 * The `https` transport provider: validates and redacts a subscriber's transport config, creates senders.
 *
 * The schema checks the shape only. Whether the URL's destination is allowed (SSRF rules, plain http:// only for
 * `egress.allow` destinations) depends on configuration and DNS, so the REST API also calls
 * `checkUrlForRegistration` (ssrf.ts) and answers 422 with its issues; the connector checks again at every connect.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { z } from 'zod';
import { Delivery } from '../../config/schema.ts';
import { CLIENT_MANAGED_HEADERS } from '../outbound-headers.ts';
import type { SenderDeps, TransportProvider, TransportSender } from '../port.ts';
import { createHttpsSender, type HttpsSenderDeps } from './sender.ts';
import { createEgressPolicy, type LookupAll } from './ssrf.ts';

export type { HttpsSenderDeps } from './sender.ts';
export { checkUrlForRegistration, createEgressPolicy, type EgressPolicy, type LookupAll } from './ssrf.ts';

export const MAX_CUSTOM_HEADERS = 50;
export const REDACTED = '[redacted]';

/** RFC 9110 §5.6.2 token. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** RFC 9110 §5.5 field value: visible ASCII, obs-text, space and tab; no CR, LF or NUL. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Names a subscriber may not set: hop-by-hop and framing headers (undici manages or rejects them, see
 * CLIENT_MANAGED_HEADERS), the router's own headers, and signature headers a subscriber could use to confuse its
 * own verification.
 */
const RESERVED_PREFIXES = ['webhook-', 'x-hub-signature'];

function reservedReason(name: string): string | undefined {
  const lower = name.toLowerCase();
  if (CLIENT_MANAGED_HEADERS.has(lower)) return `header "${name}" is set by the router or the HTTP client and cannot be configured`;
  const prefix = RESERVED_PREFIXES.find((p) => lower.startsWith(p));
  return prefix ? `headers starting with "${prefix}" are reserved for the router's signatures` : undefined;
}

export const HttpsTransportConfig = z
  .object({
    kind: z.literal('https'),
    url: z
      .url({ protocol: /^https?$/, error: 'url must be an absolute https:// URL' })
      .max(2048)
      .refine((u) => {
        const parsed = URL.parse(u);
        return parsed === null || (parsed.username === '' && parsed.password === '');
      }, 'url must not contain credentials (user:password@)'),
    headers: z
      .record(z.string(), z.string())
      .default({})
      // One pass so that every problem is reported at once (zod stops refining a value that already has issues).
      .superRefine((headers, ctx) => {
        const names = Object.keys(headers);
        if (names.length > MAX_CUSTOM_HEADERS) ctx.addIssue({ code: 'custom', message: `at most ${MAX_CUSTOM_HEADERS} headers` });
        const seen = new Set<string>();
        for (const name of names) {
          const issue = (message: string) => ctx.addIssue({ code: 'custom', path: [name], message });
          const value = headers[name]!;
          if (!HEADER_NAME.test(name)) issue(`header name "${name}" is not an HTTP token`);
          const reason = reservedReason(name);
          if (reason) issue(reason);
          if (seen.has(name.toLowerCase())) issue(`header "${name}" is given twice (names are case-insensitive)`);
          seen.add(name.toLowerCase());
          if (!HEADER_VALUE.test(value)) issue('header values must not contain control characters (CR, LF, NUL, …)');
          if (value.length > 8192) issue('header values are limited to 8192 characters');
        }
      }),
    /** Names among `headers` whose values are secrets (an API key, a bearer token): write-only, redacted on read. */
    secretHeaders: z.array(z.string()).max(MAX_CUSTOM_HEADERS).default([]),
    /** Per-attempt deadline; `delivery.timeoutMs` when absent. */
    timeoutMs: z.number().int().min(100).max(120_000).optional(),
    signing: z.enum(['standard-webhooks', 'github']).default('standard-webhooks'),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const names = new Set(Object.keys(cfg.headers).map((n) => n.toLowerCase()));
    cfg.secretHeaders.forEach((name, i) => {
      if (!names.has(name.toLowerCase())) ctx.addIssue({ code: 'custom', path: ['secretHeaders', i], message: `"${name}" is not one of the configured headers` });
    });
  });
export type HttpsTransportConfig = z.infer<typeof HttpsTransportConfig>;

function redact(config: HttpsTransportConfig): HttpsTransportConfig {
  const secret = new Set(config.secretHeaders.map((n) => n.toLowerCase()));
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(config.headers)) headers[name] = secret.has(name.toLowerCase()) ? REDACTED : value;
  return { ...config, headers, secretHeaders: [...config.secretHeaders] };
}

/**
 * Fills what SenderDeps does not (yet) carry. The defaults are the safe ones: an empty allowlist (every private
 * destination blocked), the system resolver, and the `delivery` section's defaults.
 */
function httpsDeps(deps: SenderDeps & Partial<HttpsSenderDeps>): HttpsSenderDeps {
  return {
    ...deps,
    egress: deps.egress ?? createEgressPolicy([]),
    lookup: deps.lookup ?? ((host, options) => dnsLookup(host, options)),
    delivery: deps.delivery ?? Delivery.parse({}),
  };
}

export const httpsProvider: TransportProvider<HttpsTransportConfig> = {
  kind: 'https',
  configSchema: HttpsTransportConfig,
  redact,
  createSender(config: HttpsTransportConfig, deps: SenderDeps & Partial<HttpsSenderDeps>): TransportSender & AsyncDisposable {
    return createHttpsSender(config, httpsDeps(deps));
  },
};
