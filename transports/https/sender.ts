/**
 * The HTTPS sender: one undici Agent per subscriber transport, POSTing each delivery's exact bytes.
 *
 * - Connections go through the SSRF connector (connector.ts): every new socket is checked, a blocked destination
 *   yields a permanent `ssrf_blocked` outcome without a single connection attempt. Redirects are never followed
 *   (undici's dispatcher.request does not follow them; a 3xx is classified as retryable http_3xx).
 * - Keep-alive pool per origin, `connectionsPerOrigin` sockets at most, HTTP/1.1 only.
 * - One deadline per attempt (`timeoutMs`, from the transport config or `delivery.timeoutMs`) covers resolve,
 *   connect, TLS, headers and the body read; the caller's signal aborts the attempt too.
 * - At most `maxResponseBytes` of the response are read, then the body is destroyed; a ≤ 1 KiB UTF-8 snippet is kept.
 *   A 2xx with a huge or stalled body is still delivered: the status decides (classify.ts).
 *
 * Lifecycle: open → closing (close() called: new sends throw ROUTER_ERR_SENDER_CLOSED, in-flight ones finish within
 * their deadline) → closed (Agent closed). close() is idempotent; concurrent callers share one promise.
 *
 * Our fault versus theirs (transports/port.ts): if the caller's signal aborts (shutdown) before the endpoint
 * answered, send() throws and no attempt is recorded. Once a status arrived the attempt happened, so it is returned
 * even if the abort comes during the body read.
 */
import { addAbortListener } from 'node:events';
import { Agent } from 'undici';
import type { Dispatcher } from 'undici';
import { RouterError } from '../../src/errors.ts';
import { SigningKeys, outboundHeaders } from '../outbound-headers.ts';
import type { OutboundMessage, SendOutcome, SenderDeps, TransportSender } from '../port.ts';
import { classifyError, classifyStatus } from './classify.ts';
import { createSsrfConnector, type SsrfConnectorOptions } from './connector.ts';
import type { EgressPolicy, LookupAll } from './ssrf.ts';
import type { HttpsTransportConfig } from './index.ts';

/** What the https sender needs beyond SenderDeps; see index.ts for the defaults when the worker omits them. */
export interface HttpsSenderDeps extends SenderDeps {
  /** Built once from `egress.allow` with createEgressPolicy. */
  readonly egress: EgressPolicy;
  /** `dns.promises.lookup` in production; a fake in tests. */
  readonly lookup: LookupAll;
  /** The `delivery` configuration section. */
  readonly delivery: {
    /** Default per-attempt deadline when the transport config has no timeoutMs. */
    readonly timeoutMs: number;
    /** Bytes of a response read at most (64 KiB by default). */
    readonly maxResponseBytes: number;
    readonly connectionsPerOrigin: number;
  };
  /** Extra TLS trust (a test CA). */
  readonly tls?: SsrfConnectorOptions['tls'];
}

/** Snippet kept from a response body, in bytes (cut at a character boundary). */
export const SNIPPET_BYTES = 1024;

async function readCapped(body: Dispatcher.ResponseData['body'], maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    if (maxBytes > 0) {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        const take = Math.min(chunk.length, maxBytes - total);
        chunks.push(take === chunk.length ? chunk : chunk.subarray(0, take));
        total += take;
        if (total >= maxBytes) break; // leaving the loop destroys the body: the rest is never read
      }
    }
  } catch {
    // Reset or deadline in the middle of the body: the status already decided the outcome.
  } finally {
    if (!body.destroyed && !body.readableEnded) body.destroy();
  }
  return Buffer.concat(chunks, total);
}

function snippet(bytes: Buffer): string | undefined {
  if (bytes.length === 0) return undefined;
  // stream: true holds back a trailing partial character instead of emitting U+FFFD for it.
  return new TextDecoder('utf-8').decode(bytes.subarray(0, SNIPPET_BYTES), { stream: true });
}

export function createHttpsSender(config: HttpsTransportConfig, deps: HttpsSenderDeps): TransportSender & AsyncDisposable {
  const url = new URL(config.url);
  const origin = url.origin;
  const path = `${url.pathname}${url.search}`;
  const timeoutMs = config.timeoutMs ?? deps.delivery.timeoutMs;
  const maxResponseBytes = deps.delivery.maxResponseBytes;
  const keys = new SigningKeys();
  const custom: Record<string, string> = {};
  for (const [name, value] of Object.entries(config.headers)) custom[name.toLowerCase()] = value;

  const agent = new Agent({
    connect: createSsrfConnector({
      policy: deps.egress,
      lookup: deps.lookup,
      connectTimeoutMs: timeoutMs,
      ...(deps.tls ? { tls: deps.tls } : {}),
      onRefused: (err) => deps.logger.warn({ host: err.host, reason: err.reason, code: err.code }, 'egress refused'),
    }),
    connections: deps.delivery.connectionsPerOrigin,
    allowH2: false,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });

  let inFlight = 0;
  let closing: Promise<void> | undefined;
  let onDrained: (() => void) | undefined;

  async function attempt(message: OutboundMessage, signal: AbortSignal): Promise<SendOutcome> {
    const started = deps.now();
    const elapsed = () => Math.max(0, deps.now() - started);
    // One controller for the attempt, aborted by its deadline or by the caller's signal. AbortSignal.any() did the
    // same at about 10 µs more CPU per delivery (its weakly held dependants are work for the GC), measured with a
    // loopback sink: 63–71 against 75–81 µs per send.
    const cancel = new AbortController();
    const timer = setTimeout(() => cancel.abort(new DOMException(`attempt exceeded ${timeoutMs} ms`, 'TimeoutError')), timeoutMs);
    // Node's helper: it also fires for a signal that is already aborted, and hands back the removal.
    const following = addAbortListener(signal, () => cancel.abort(signal.reason));
    try {
      // Custom headers first: the router's own (webhook-*, signatures, user-agent, pass-through) always win.
      const headers = { ...custom, ...outboundHeaders(message, config.signing, started, keys) };
      let res: Dispatcher.ResponseData;
      try {
        res = await agent.request({
          origin,
          path,
          method: 'POST',
          headers,
          body: message.body,
          signal: cancel.signal,
        });
      } catch (err) {
        if (signal.aborted) throw signal.reason ?? err;
        // Not the caller's, so the attempt's own timer.
        if (cancel.signal.aborted) return { kind: 'retryable', code: 'timeout', durationMs: elapsed() };
        const outcome = classifyError(err, elapsed());
        if (outcome === null) throw err;
        return outcome;
      }
      const bytes = await readCapped(res.body, maxResponseBytes);
      return classifyStatus(res.statusCode, res.headers['retry-after'], { nowMs: deps.now(), durationMs: elapsed(), response: snippet(bytes) });
    } finally {
      clearTimeout(timer);
      following[Symbol.dispose]();
    }
  }

  const sender = {
    async send(message: OutboundMessage, signal: AbortSignal): Promise<SendOutcome> {
      if (closing) throw new RouterError('ROUTER_ERR_SENDER_CLOSED', 'the https sender is closed');
      signal.throwIfAborted();
      inFlight++;
      try {
        return await attempt(message, signal);
      } finally {
        inFlight--;
        if (inFlight === 0) onDrained?.();
      }
    },
    close(): Promise<void> {
      closing ??= (async () => {
        if (inFlight > 0) await new Promise<void>((resolve) => (onDrained = resolve));
        await agent.close();
      })();
      return closing;
    },
    [Symbol.asyncDispose](): Promise<void> {
      return sender.close();
    },
  };
  return sender;
}
