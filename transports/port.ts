/**
 * The transport port: how a delivery leaves the router.
 *
 * - A provider is stateless, one per `transport.kind`: it validates a subscriber's transport config (the REST API
 *   answers 422 with its issues), redacts its secrets for reads, and creates senders.
 * - A sender is stateful (a connection pool, a producer): it sends and is closed when its subscriber changes or it
 *   is evicted from the worker's sender cache.
 *
 * Outcomes are data. `send()` RETURNS for everything the subscriber's side did (2xx, 4xx, 5xx, timeouts, refused
 * connections, an SSRF block of its address): the worker records an attempt and retries or dead-letters. `send()`
 * THROWS only for a fault on our side (shutdown abort, our resolver failing, a bug): the worker records no attempt
 * and spends none of the subscriber's retry budget (hookdeck/outpost#571 is the bug this avoids).
 */
import type { z } from 'zod';
import type { RoutingFields } from '../src/envelope.ts';
import type { Logger } from '../src/logger.ts';
import type { EgressPolicy, LookupAll } from './https/ssrf.ts';

/** Why an attempt did not deliver; stable strings, used in attempts, metrics and the DLQ. */
export type DeliveryCode =
  | 'http_3xx'
  | 'http_4xx'
  | 'http_408'
  | 'http_410'
  | 'http_413'
  | 'http_425'
  | 'http_429'
  | 'http_5xx'
  | 'timeout'
  | 'dns_error'
  | 'connection_refused'
  | 'connection_reset'
  | 'tls_error'
  | 'network_error'
  | 'response_too_large'
  | 'ssrf_blocked'
  | 'broker_error'
  | 'config_invalid';

export type SendOutcome =
  | { readonly kind: 'delivered'; readonly status?: number; readonly durationMs: number; readonly response?: string }
  | {
      readonly kind: 'retryable';
      readonly code: DeliveryCode;
      readonly status?: number;
      /** From a Retry-After header, already parsed. */
      readonly retryAfterMs?: number;
      readonly durationMs: number;
      readonly response?: string;
    }
  | { readonly kind: 'permanent'; readonly code: DeliveryCode; readonly status?: number; readonly durationMs: number; readonly response?: string };

/** The signing secrets of a subscriber: during a rotation both are used and both signatures are sent. */
export interface SigningSecrets {
  readonly current: string;
  readonly previous?: string | undefined;
}

/** Everything a sender needs for one attempt. The body is the exact bytes the source sent. */
export interface OutboundMessage {
  /** The delivery id: `webhook-id`, stable across attempts and replays; the subscriber's idempotency key. */
  readonly deliveryId: string;
  /** 1-based attempt number within the current cycle. */
  readonly attempt: number;
  readonly eventId: string;
  readonly source: string;
  readonly routing: RoutingFields;
  /** Source headers to pass through (X-GitHub-Event, …) plus content-type and traceparent. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
  readonly secrets: SigningSecrets;
}

/** Shared infrastructure every sender may use; the worker builds it once from configuration. */
export interface SenderDeps {
  readonly logger: Logger;
  /** Stable origin of `webhook-timestamp` and deadlines; injectable for tests. */
  readonly now: () => number;
  /** The SSRF rules with the `egress.allow` exceptions: any transport that connects to a subscriber's host obeys them. */
  readonly egress: EgressPolicy;
  /** Name resolution (`dns.promises.lookup` in production; a fake in tests, never real DNS). */
  readonly lookup: LookupAll;
  /** The `delivery` configuration section. */
  readonly delivery: { readonly timeoutMs: number; readonly maxResponseBytes: number; readonly connectionsPerOrigin: number };
}

export interface TransportSender {
  send(message: OutboundMessage, signal: AbortSignal): Promise<SendOutcome>;
  /** Refuses new sends, waits for in-flight ones, releases connections. Idempotent. */
  close(): Promise<void>;
}

export interface TransportProvider<C extends { kind: string }> {
  readonly kind: C['kind'];
  readonly configSchema: z.ZodType<C>;
  /** A copy safe to return from the API: secrets replaced. */
  redact(config: C): C;
  createSender(config: C, deps: SenderDeps): TransportSender;
}
