/**
 * The webhook receiver: `POST /webhooks/{sourceId}` on plain node:http (express costs about 3× the CPU per request on
 * this route; shared/reference/performance.md).
 *
 * Order of checks, cheapest and least revealing first; nothing is published on any 4xx:
 *   404 unknown source → 405 not POST → 415 content type → 413 declared length → 400 identifying headers
 *   → read body (413 as soon as the cap is crossed) → 401 signature → 400 unparsable body
 *   → repeat of a recently accepted key: 200 → publish, wait for the durable confirm → 202 (ping: 200)
 *   → queue refused or did not confirm within receiver.publishTimeoutMs: 503 + Retry-After.
 *
 * The event id is derived from (source, dedupe key). A repeat that slips past this pod's recent-keys hint therefore
 * carries the same id, and the worker's insert-if-absent on it collapses the copies: a repeat never becomes a second
 * outbound delivery. A publish that timed out here but committed later is the same case.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../../config/schema.ts';
import type { QueueProducer } from '../../adapters/queue/port.ts';
import { RouterError, type RouterErrorCode } from '../errors.ts';
import { encodeEnvelope } from '../envelope.ts';
import { parsePayload } from '../payload.ts';
import type { Logger } from '../logger.ts';
import type { Metrics, ReceiveOutcome } from '../metrics.ts';
import { readBody } from './body.ts';
import { RecentKeys } from './recent-keys.ts';
import { type CompiledSource, compileSource, isRejection, sourceKindHandlers } from './sources.ts';

export interface ReceiverDeps {
  readonly config: Readonly<Config>;
  readonly producer: QueueProducer;
  readonly queueKind: string;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** True once shutdown began: responses close their connection so clients move to another pod. */
  readonly draining: () => boolean;
}

const ROUTE = /^\/webhooks\/([^/?#]+)\/?(?:[?#].*)?$/;
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

export function createReceiver(deps: ReceiverDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { config, producer, metrics, logger } = deps;
  const sources = new Map<string, CompiledSource>(config.sources.map((s) => [s.id, compileSource(s)]));
  const recent = new RecentKeys(config.receiver.recentKeys);

  const count = (source: string, event: string, outcome: ReceiveOutcome) => metrics.received.inc({ source, event, outcome });

  function reply(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const payload = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(payload),
      ...(deps.draining() ? { connection: 'close' } : {}),
      ...headers,
    });
    res.end(payload);
  }

  function fail(res: ServerResponse, status: number, code: RouterErrorCode, message: string, headers?: Record<string, string>): void {
    reply(res, status, { error: { code, message } }, headers);
  }

  /**
   * Answers before the body was read. The rest is read and discarded (never buffered) for at most a second, then the
   * connection is cut: closing at once would make the kernel reset the client's in-flight bytes, and the client
   * would lose this answer (RFC 9112 §9.6).
   */
  function failEarly(req: IncomingMessage, res: ServerResponse, status: number, code: RouterErrorCode, message: string): void {
    fail(res, status, code, message);
    if (req.complete) return;
    req.resume();
    const timer = setTimeout(() => req.destroy(), 1_000).unref();
    req.once('end', () => clearTimeout(timer));
    req.once('close', () => clearTimeout(timer));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const match = ROUTE.exec(req.url ?? '');
    const sourceId = match?.[1] ? safeDecode(match[1]) : undefined;
    const source = sourceId === undefined ? undefined : sources.get(sourceId);
    if (!source) {
      count('unknown', '', 'unknown_source');
      return failEarly(req, res, 404, 'ROUTER_ERR_SOURCE_UNKNOWN', 'no such webhook source');
    }
    const id = source.config.id;
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      count(id, '', 'bad_request');
      return failEarly(req, res, 405, 'ROUTER_ERR_METHOD_NOT_ALLOWED', 'only POST is accepted');
    }
    const mediaType = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (mediaType !== 'application/json' && mediaType !== 'application/x-www-form-urlencoded') {
      count(id, '', 'unsupported_media_type');
      return failEarly(req, res, 415, 'ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE', 'content-type must be application/json or application/x-www-form-urlencoded');
    }
    const handler = sourceKindHandlers[source.config.kind];
    const identity = handler.identify(req.headers);
    if (isRejection(identity)) {
      count(id, '', 'bad_request');
      return failEarly(req, res, identity.status, identity.code, identity.message);
    }

    let body: Buffer;
    try {
      body = await readBody(req, source.config.maxBodyBytes);
    } catch (err) {
      if (err instanceof RouterError && err.code === 'ROUTER_ERR_BODY_TOO_LARGE') {
        count(id, '', 'too_large');
        return failEarly(req, res, 413, err.code, err.message);
      }
      // The client went away mid-body: nobody is left to answer.
      logger.debug({ err, source: id }, 'request body aborted');
      req.destroy();
      return;
    }

    const rejection = handler.verify(source, body, req.headers, {
      nowSec: Math.floor(Date.now() / 1000),
      toleranceSec: config.receiver.timestampToleranceSec,
    });
    if (rejection) {
      count(id, '', 'unauthorized');
      logger.debug({ source: id, code: rejection.code }, 'webhook rejected');
      return fail(res, rejection.status, rejection.code, rejection.message);
    }

    const payload = parsePayload(body, mediaType);
    if (payload === undefined) {
      count(id, identity.headerEvent ?? '', 'bad_request');
      return fail(res, 400, 'ROUTER_ERR_BODY_INVALID', mediaType === 'application/json' ? 'body is not valid JSON' : 'form body has no JSON "payload" field');
    }
    const routing = handler.routing(payload, identity);
    const eventId = eventIdFor(id, identity.dedupeKey);
    const recentKey = `${id}\n${identity.dedupeKey}`;
    const success = handler.isPing(identity) ? 200 : 202;

    if (recent.has(recentKey)) {
      count(id, routing.event, 'duplicate');
      metrics.dedupeHits.inc({ source: id, stage: 'receiver' });
      return reply(res, 200, { id: eventId, duplicate: true });
    }

    const headers: Record<string, string> = { ...identity.passHeaders, 'content-type': String(req.headers['content-type']) };
    const traceparent = req.headers.traceparent;
    if (typeof traceparent === 'string' && TRACEPARENT.test(traceparent)) headers.traceparent = traceparent;
    const envelope = encodeEnvelope(
      { id: eventId, source: id, sourceKind: source.config.kind, dedupeKey: identity.dedupeKey, receivedAt: Date.now(), headers, routing },
      body,
    );

    const started = process.hrtime.bigint();
    try {
      await withTimeout(producer.publish({ body: envelope, key: routing.repository }), config.receiver.publishTimeoutMs);
    } catch (err) {
      metrics.publishSeconds.observe({ queue: deps.queueKind, result: 'failed' }, seconds(started));
      count(id, routing.event, 'unavailable');
      logger.warn({ err, source: id, eventId }, 'queue did not confirm the publish; answering 503');
      return fail(res, 503, 'ROUTER_ERR_QUEUE_UNAVAILABLE', 'the queue is unavailable; retry later', {
        'retry-after': String(config.receiver.retryAfterSec),
      });
    }
    metrics.publishSeconds.observe({ queue: deps.queueKind, result: 'confirmed' }, seconds(started));
    metrics.publishConfirmed.inc({ queue: deps.queueKind });
    recent.add(recentKey);
    count(id, routing.event, 'accepted');
    reply(res, success, { id: eventId });
  }

  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      // Only a bug gets here; answer 500 without detail and keep serving.
      logger.error({ err }, 'receiver failed to handle a request');
      if (!res.headersSent) fail(res, 500, 'ROUTER_ERR_INTERNAL', 'internal error');
      else res.destroy();
    });
  };
}

/** Stable across repeats of one webhook: `evt_` + 128 bits of SHA-256(source, dedupe key). */
export function eventIdFor(sourceId: string, dedupeKey: string): string {
  return `evt_${createHash('sha256').update(`${sourceId}\n${dedupeKey}`).digest('hex').slice(0, 32)}`;
}

function safeDecode(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', `no confirmation within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const seconds = (started: bigint) => Number(process.hrtime.bigint() - started) / 1e9;
