/**
 * Prometheus metrics. One registry per app instance (never prom-client's global), so tests can run several apps in
 * one process. Names and labels follow design §10; label values come from configuration or verified requests only,
 * so an unauthenticated caller cannot blow up the series count.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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
    dedupeHits: new Counter({
      name: 'router_dedupe_hits_total',
      help: 'Repeated webhooks recognised by their dedupe key, by where they were caught.',
      labelNames: ['source', 'stage'] as const,
      registers,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
