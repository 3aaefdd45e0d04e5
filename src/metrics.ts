/**
 * Prometheus metrics. One registry per app instance (never prom-client's global), so tests can run several apps in
 * one process. Names and labels follow design §10; label values come from configuration or verified requests only,
 * so an unauthenticated caller cannot blow up the series count.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type ReceiveOutcome =
  | 'accepted'
  | 'duplicate'
  | 'bad_request'
  | 'unauthorized'
  | 'too_large'
  | 'unsupported_media_type'
  | 'unknown_source'
  | 'unavailable';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    received: new Counter({
      name: 'router_received_total',
      help: 'Webhooks received, by source, event (verified requests only) and outcome.',
      labelNames: ['source', 'event', 'outcome'] as const,
      registers,
    }),
    publishSeconds: new Histogram({
      name: 'router_publish_seconds',
      help: 'Time from the start of a publish to its durable confirmation (or failure) by the internal queue.',
      labelNames: ['queue', 'result'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    publishConfirmed: new Counter({
      name: 'router_publish_confirmed_total',
      help: 'Publishes the internal queue confirmed as durable.',
      labelNames: ['queue'] as const,
      registers,
    }),
    deliveries: new Counter({
      name: 'router_deliveries_total',
      help: 'Delivery attempts by transport and outcome (delivered, retryable, permanent).',
      labelNames: ['transport', 'outcome'] as const,
      registers,
    }),
    deliverySeconds: new Histogram({
      name: 'router_delivery_seconds',
      help: 'Duration of one delivery attempt, by transport.',
      labelNames: ['transport'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    retriesScheduled: new Counter({ name: 'router_retries_scheduled_total', help: 'Retries scheduled after a failed attempt.', registers }),
    dlq: new Counter({ name: 'router_dlq_total', help: 'Deliveries (and poison messages) dead-lettered, by reason.', labelNames: ['reason'] as const, registers }),
    inflight: new Gauge({ name: 'router_inflight_deliveries', help: 'Deliveries being sent right now by this process.', registers }),
    ssrfBlocked: new Counter({ name: 'router_ssrf_blocked_total', help: 'Deliveries refused by the SSRF guard.', registers }),
    ourFaults: new Counter({
      name: 'router_delivery_released_total',
      help: 'Claimed deliveries given back without an attempt (shutdown, store trouble, local limits), by reason.',
      labelNames: ['reason'] as const,
      registers,
    }),
    breakerOpened: new Counter({ name: 'router_breaker_opened_total', help: 'Times a subscriber was paused by its circuit breaker.', registers }),
    apiRequests: new Counter({
      name: 'router_api_requests_total',
      help: 'REST API requests by method, route template ("unmatched" for unknown paths) and status.',
      labelNames: ['method', 'route', 'status'] as const,
      registers,
    }),
    apiRequestSeconds: new Histogram({
      name: 'router_api_request_seconds',
      help: 'REST API request duration by method and route template.',
      labelNames: ['method', 'route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers,
    }),
    dedupeHits: new Counter({
      name: 'router_dedupe_hits_total',
      help: 'Repeated webhooks recognised by their dedupe key, by where they were caught.',
      labelNames: ['source', 'stage'] as const,
      registers,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
