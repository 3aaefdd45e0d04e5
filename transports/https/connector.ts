/**
 * An undici connector that enforces the egress policy at connect time (libraries.md, "SSRF-safe egress").
 *
 * For every new connection: a literal IP host is judged before anything else (Node's net.connect never calls a
 * lookup for literals, so a lookup hook alone misses them: nodejs/undici#2019, gitroomhq/postiz-app#1671); a name is
 * resolved once with the injected lookup, EVERY address is judged, and the socket goes to the first checked address,
 * so a second DNS answer cannot slip in between check and connect (DNS rebinding, gitlab-org/gitlab-ce#63959). TLS
 * keeps the original host name as SNI and for the certificate check. A resolver failure blocks (fail closed).
 *
 * Refusals reach undici's callback as an EgressError (code ROUTER_SSRF_BLOCKED or ROUTER_DNS_FAILED): no socket is
 * created, so a blocked destination sees zero connection attempts. Kept-alive sockets were checked when opened.
 */
import type { ConnectionOptions } from 'node:tls';
import { buildConnector } from 'undici';
import { EgressError, isIpLiteral, resolveChecked, type EgressPolicy, type LookupAll } from './ssrf.ts';

export interface SsrfConnectorOptions {
  readonly policy: EgressPolicy;
  readonly lookup: LookupAll;
  /** Deadline for TCP + TLS set-up; the sender's per-attempt deadline bounds it as well. Default 10 s. */
  readonly connectTimeoutMs?: number;
  /** Extra TLS options (a test CA); never used to weaken verification in production. */
  readonly tls?: Pick<ConnectionOptions, 'ca'>;
  /** Told about every refusal (blocked address or failed resolution), for logs and `router_ssrf_blocked_total`. */
  readonly onRefused?: (err: EgressError) => void;
}

export function createSsrfConnector(opts: SsrfConnectorOptions): buildConnector.connector {
  const connect = buildConnector({
    timeout: opts.connectTimeoutMs ?? 10_000, // 10 s
    keepAlive: true,
    allowH2: false,
    ...(opts.tls ?? {}),
  });

  return (options, callback) => {
    // undici hands over the host name without IPv6 brackets; ssrf.ts strips them anyway.
    const host = options.hostname;
    resolveChecked(host, options.protocol, opts.policy, opts.lookup).then(
      (verdict) => {
        const tls = options.protocol === 'https:';
        connect(
          {
            ...options,
            hostname: verdict.address,
            // SNI and the certificate check are for the name the subscriber registered, not the address.
            ...(tls ? { servername: options.servername || (isIpLiteral(host) ? undefined : host) } : {}),
          } as buildConnector.Options,
          callback,
        );
      },
      (err: unknown) => {
        if (err instanceof EgressError) opts.onRefused?.(err);
        callback(err instanceof Error ? err : new Error(String(err)), null);
      },
    );
  };
}
