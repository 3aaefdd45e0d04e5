/**
 * The dispatcher: claims due deliveries from the store, sends them through their subscriber's transport, and records
 * each attempt with the delivery's next state. Every attempt, first or retry, goes through the store's due index, so
 * a worker that dies loses nothing: its leases expire and another worker claims the deliveries.
 *
 * Isolation between subscribers:
 * - a subscriber holds at most `limits.concurrency` claimed deliveries in this process (one while its breaker
 *   probes); saturated, disabled and paused subscribers are excluded from claims, so a slow or dead endpoint never
 *   takes capacity from the others;
 * - `limits.perSecond` spaces out starts with a token bucket;
 * - the circuit breaker (breaker.ts) pauses a failing subscriber and defers its deliveries in the store.
 *
 * Their fault versus ours: a send that returns is an attempt (recorded, retry budget spent). A send that throws
 * (shutdown abort, a bug) and any store trouble release the claim without an attempt.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { ClaimedDelivery, CompletedAttempt, EventRecord, Store } from '../../adapters/store/port.ts';
import { Waiters } from '../../adapters/queue/waiters.ts';
import type { Config } from '../../config/schema.ts';
import type { SendOutcome } from '../../transports/port.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Subscriber } from '../subscribers/model.ts';
import { Breaker } from './breaker.ts';
import { RateLimiter } from './limiter.ts';
import { nextState } from './outcome.ts';
import type { SenderPool } from './senders.ts';
import type { SubscriberCache, SubscriberSnapshot } from './subscriber-cache.ts';

export interface DispatcherDeps {
  readonly store: Store;
  readonly cache: SubscriberCache;
  readonly senders: SenderPool;
  readonly config: Readonly<Pick<Config, 'worker' | 'delivery'>>;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Lease owner name: unique per process. */
  readonly owner: string;
  readonly now: () => number;
  readonly rng: () => number;
}

interface Runtime {
  held: number;
  readonly breaker: Breaker;
  limiter: RateLimiter;
  perSecond: number;
}

/** Completions are written in batches: at most every 2 ms, or at once when this many wait. */
const FLUSH_MS = 2;
const FLUSH_ITEMS = 200;
/** Delay between a freed slot and the claim that refills it (see slotFreed). */
const REFILL_MS = 2;

export function createDispatcher(deps: DispatcherDeps) {
  const { store, cache, senders, metrics, logger, owner } = deps;
  const cfg = deps.config.worker;
  const runtimes = new Map<string, Runtime>();
  const wake = new Waiters();
  /**
   * Claiming is driven by signals, not by every event: new deliveries were ingested, an ordered delivery finished
   * (the next one of its key may be due), or a slot freed while capacity was what held claims back. A signal that
   * arrives while a claim runs is kept, so none is lost; an empty claim costs a store round trip, so none is wasted.
   */
  let signalled = false;
  let starved = false;
  const signal = () => {
    signalled = true;
    wake.wakeAll();
  };
  const abort = new AbortController();
  const inflightRuns = new Set<Promise<void>>();
  /** Attempts waiting to be written, each with the run that waits for its commit. */
  let completions: { item: CompletedAttempt; written: PromiseWithResolvers<void>; ordered: boolean }[] = [];
  let releases: string[] = [];
  let flushTimer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> = Promise.resolve();
  let stopping = false;
  let loop: Promise<void> | undefined;

  function runtime(s: Subscriber): Runtime {
    let rt = runtimes.get(s.id);
    if (!rt) {
      rt = { held: 0, breaker: new Breaker(cfg.breaker), limiter: new RateLimiter(s.limits.perSecond, deps.now()), perSecond: s.limits.perSecond };
      runtimes.set(s.id, rt);
    } else if (rt.perSecond !== s.limits.perSecond) {
      rt.limiter = new RateLimiter(s.limits.perSecond, deps.now());
      rt.perSecond = s.limits.perSecond;
    }
    return rt;
  }

  const capacity = (s: Subscriber, rt: Runtime, now: number) => (rt.breaker.state(now) === 'half-open' ? 1 : s.limits.concurrency);

  /**
   * Subscribers not to claim for (disabled, paused, or at capacity here), and how many deliveries the others can
   * take right now: claiming more would only hand the surplus straight back.
   */
  function claimable(snapshot: SubscriberSnapshot, now: number): { exclude: string[]; room: number; saturated: boolean } {
    const exclude: string[] = [];
    let room = 0;
    let saturated = false;
    for (const { subscriber: s } of snapshot.all) {
      const rt = runtimes.get(s.id);
      const free = rt ? capacity(s, rt, now) - rt.held : s.limits.concurrency;
      if (!s.enabled || rt?.breaker.state(now) === 'open') exclude.push(s.id);
      else if (free <= 0) {
        exclude.push(s.id);
        saturated = true;
      } else room += free;
    }
    return { exclude, room, saturated };
  }

  /** Slots free one by one; one claim a few ms later refills many of them at once. */
  let refill: NodeJS.Timeout | undefined;
  function slotFreed(): void {
    if (!starved || refill) return;
    refill = setTimeout(() => {
      refill = undefined;
      signal();
    }, REFILL_MS);
  }

  function scheduleFlush(): void {
    if (completions.length + releases.length >= FLUSH_ITEMS) {
      void flush();
    } else {
      flushTimer ??= setTimeout(() => void flush(), FLUSH_MS);
    }
  }

  /**
   * Writes gathered completions and releases; serialised, and retried while the store is down. A run keeps its
   * concurrency slot until its attempt is written, so a crash can re-send at most what was in flight.
   */
  function flush(): Promise<void> {
    clearTimeout(flushTimer);
    flushTimer = undefined;
    flushing = flushing.then(async () => {
      const batch = completions;
      const given = releases;
      completions = [];
      releases = [];
      if (batch.length === 0 && given.length === 0) return;
      try {
        await store.complete(owner, batch.map((c) => c.item), deps.now());
        if (given.length > 0) await store.release(owner, given, deps.now());
        for (const c of batch) c.written.resolve();
        if (batch.some((c) => c.ordered)) signal(); // the next delivery of an ordering key may be claimable now
      } catch (err) {
        logger.error({ err, completions: batch.length }, 'recording attempts failed; retrying');
        completions = batch.concat(completions);
        releases = given.concat(releases);
        if (!stopping) {
          flushTimer ??= setTimeout(() => void flush(), 1_000);
        } else {
          // Shutting down: give up; the leases expire and another worker retries these deliveries.
          for (const c of batch) c.written.reject(err);
          completions = [];
          throw err;
        }
      }
    });
    return flushing;
  }

  function giveBack(ids: string[], reason: string): void {
    if (ids.length === 0) return;
    metrics.ourFaults.inc({ reason }, ids.length);
    releases.push(...ids);
    scheduleFlush();
  }

  /**
   * A logger bound to one delivery, made only once something is logged: pino's child() costs about 4 µs (its
   * bindings are serialised and redacted up front), and nearly every delivery logs nothing.
   */
  function deliveryLog(claim: ClaimedDelivery, subscriber: Subscriber): () => Logger {
    let log: Logger | undefined;
    return () => (log ??= logger.child({ deliveryId: claim.id, subscriberId: subscriber.id, attempt: claim.attempt }));
  }

  async function run(claim: ClaimedDelivery, subscriber: Subscriber, event: EventRecord, rt: Runtime, lease: Lease): Promise<void> {
    const log = deliveryLog(claim, subscriber);
    try {
      const wait = rt.limiter.reserve(deps.now());
      if (wait > 0) await delay(wait, undefined, { signal: abort.signal });
      // Too late to finish inside our lease: another worker may already have claimed it.
      if (deps.now() > lease.until - lease.deadlineMs) return giveBack([claim.id], 'lease_expiring');

      const started = deps.now();
      let outcome: SendOutcome;
      try {
        const sender = senders.get(subscriber);
        outcome = await sender.send(
          {
            deliveryId: claim.id,
            attempt: claim.attempt,
            eventId: event.id,
            source: event.source,
            routing: event.routing,
            headers: event.headers,
            body: event.body,
            secrets: subscriber.secrets,
          },
          abort.signal,
        );
      } catch (err) {
        if (!isConfigError(err)) {
          log().warn({ err }, 'send failed on our side; the delivery goes back without an attempt');
          return giveBack([claim.id], abort.signal.aborted ? 'shutdown' : 'send_error');
        }
        outcome = { kind: 'permanent', code: 'config_invalid', durationMs: 0 };
      }
      await record(claim, subscriber, rt, outcome, started, log);
    } catch (err) {
      if (completionFailed(err)) return; // shutting down with the store unreachable: the lease brings it back
      // Aborted while waiting for a token (shutdown) or a bug: either way not an attempt.
      giveBack([claim.id], abort.signal.aborted ? 'shutdown' : 'internal');
      if (!abort.signal.aborted) log().error({ err }, 'dispatch failed');
    }
  }

  function record(claim: ClaimedDelivery, subscriber: Subscriber, rt: Runtime, outcome: SendOutcome, started: number, log: () => Logger): Promise<void> {
    const now = deps.now();
    const next = nextState(outcome, claim.attempt, subscriber.retry, now, deps.rng);
    const transport = subscriber.transport.kind;
    metrics.deliveries.inc({ transport, outcome: outcome.kind });
    metrics.deliverySeconds.observe({ transport }, outcome.durationMs / 1000);
    if (next.status === 'retry') metrics.retriesScheduled.inc();
    if (next.status === 'dead') metrics.dlq.inc({ reason: next.reason });
    if (outcome.kind !== 'delivered' && outcome.code === 'ssrf_blocked') metrics.ssrfBlocked.inc();

    if (outcome.kind === 'delivered') rt.breaker.onSuccess();
    else if (outcome.kind === 'retryable' && rt.breaker.onFailure(now)) {
      metrics.breakerOpened.inc();
      log().warn({ until: new Date(rt.breaker.openUntil).toISOString() }, 'subscriber paused by its circuit breaker');
      store.deferSubscriber(subscriber.id, rt.breaker.openUntil).catch((err: unknown) => log().warn({ err }, 'deferring deliveries failed'));
    }
    if (next.status === 'dead' && next.reason === 'endpoint_gone') disable(subscriber, log());

    if (logger.isLevelEnabled('debug')) log().debug({ outcome: outcome.kind, code: outcome.kind === 'delivered' ? undefined : outcome.code, status: outcome.status, next: next.status }, 'attempt');
    const written = Promise.withResolvers<void>();
    completions.push({
      written,
      ordered: subscriber.ordering !== null,
      item: {
        attempt: {
        deliveryId: claim.id,
        attempt: claim.attempt,
        startedAt: started,
        durationMs: Math.round(outcome.durationMs),
        outcome: outcome.kind,
        code: outcome.kind === 'delivered' ? undefined : outcome.code,
        status: outcome.status,
        response: outcome.response,
        },
        next,
      },
    });
    scheduleFlush();
    return written.promise.catch((err: unknown) => {
      throw Object.assign(new Error('attempt not recorded'), { cause: err, completionFailed: true });
    });
  }

  /** 410 Gone: the endpoint asked to be forgotten (Standard Webhooks). Visible through the API; re-enable by hand. */
  function disable(subscriber: Subscriber, log: Logger): void {
    store
      .updateSubscriber(subscriber.id, { spec: { enabled: false }, disabledReason: 'endpoint_gone' }, deps.now())
      // Nothing may wait forever on an endpoint that is gone: its other pending deliveries go to the DLQ too, from
      // where they can be replayed once the subscriber is fixed and enabled again.
      .then(() => {
        cache.invalidate();
        return store.deadLetterPending(subscriber.id, 'subscriber_disabled', deps.now());
      })
      .then((moved) => {
        if (moved > 0) metrics.dlq.inc({ reason: 'subscriber_disabled' }, moved);
      })
      .catch((err: unknown) => log.error({ err }, 'disabling the subscriber failed'));
    log.warn('subscriber answered 410 Gone; disabled');
  }

  /** Claims one batch; true when more may be due right away (the batch was full). */
  async function claimOnce(): Promise<boolean> {
    const free = cfg.concurrency - inflightRuns.size;
    if (free <= 0) {
      starved = true;
      return false;
    }
    const snapshot = await cache.get();
    const now = deps.now();
    // The lease outlives the longest attempt deadline of any subscriber, so no live attempt loses its claim.
    const deadlineMs = Math.max(deps.config.delivery.timeoutMs, ...snapshot.all.map((c) => transportTimeout(c.subscriber)));
    const lease: Lease = { until: now + deadlineMs + cfg.leaseMarginMs, deadlineMs };
    const { exclude, room, saturated } = claimable(snapshot, now);
    // A saturated subscriber's waiting deliveries become claimable when it frees a slot.
    starved = saturated;
    const limit = Math.min(free, cfg.claimBatch, room);
    if (limit <= 0) return false;
    const claimed = await store.claimDue({ owner, now, leaseMs: lease.until - now, limit, exclude });
    if (claimed.length === 0) return false;
    let events: Map<string, EventRecord>;
    try {
      events = new Map((await store.loadEvents(claimed.map((c) => c.eventId))).map((e) => [e.id, e]));
    } catch (err) {
      giveBack(claimed.map((c) => c.id), 'store_error');
      throw err;
    }
    const back: string[] = [];
    for (const claim of claimed) {
      const subscriber = snapshot.byId.get(claim.subscriberId)?.subscriber;
      const event = events.get(claim.eventId);
      if (!subscriber?.enabled || !event) {
        back.push(claim.id); // deleted (already dead-lettered), disabled meanwhile, or its event was swept
        continue;
      }
      const rt = runtime(subscriber);
      if (rt.held >= capacity(subscriber, rt, now)) {
        back.push(claim.id);
        continue;
      }
      rt.held += 1;
      metrics.inflight.inc();
      const p: Promise<void> = run(claim, subscriber, event, rt, lease).finally(() => {
        rt.held -= 1;
        metrics.inflight.dec();
        inflightRuns.delete(p);
        slotFreed();
      });
      inflightRuns.add(p);
    }
    giveBack(back, 'not_runnable');
    if (claimed.length === limit) starved = true;
    return claimed.length === limit && back.length === 0;
  }

  async function claimLoop(): Promise<void> {
    while (!stopping) {
      signalled = false;
      let more = false;
      try {
        more = await claimOnce();
      } catch (err) {
        logger.error({ err }, 'claiming deliveries failed');
        await wake.wait(1_000);
        continue;
      }
      // Retries fall due without any signal: the poll interval bounds how late they start.
      if (!more && !signalled) await wake.wait(cfg.pollIntervalMs);
    }
  }

  return {
    start(): void {
      loop ??= claimLoop();
    },
    /** New deliveries were ingested: look now instead of at the next poll. */
    wake: signal,
    inflight: () => inflightRuns.size,
    /**
     * Stops claiming, lets in-flight sends finish until `deadline`, then aborts the rest (their claims are released,
     * no attempt recorded) and writes everything still buffered.
     */
    async close(deadline: number): Promise<void> {
      stopping = true;
      clearTimeout(refill);
      wake.wakeAll();
      await loop;
      const left = deadline - Date.now();
      const timer = setTimeout(() => abort.abort(), Math.max(0, left));
      await Promise.allSettled([...inflightRuns]);
      clearTimeout(timer);
      await flush().catch((err: unknown) => logger.error({ err }, 'final write of attempts failed; their leases will expire'));
    },
  };
}

interface Lease {
  /** When the claim expires. */
  readonly until: number;
  /** The longest attempt deadline the lease was sized for. */
  readonly deadlineMs: number;
}

const transportTimeout = (s: Subscriber) => {
  const t = (s.transport as { timeoutMs?: unknown }).timeoutMs;
  return typeof t === 'number' ? t : 0;
};

const completionFailed = (err: unknown) => typeof err === 'object' && err !== null && (err as { completionFailed?: boolean }).completionFailed === true;

const isConfigError = (err: unknown) => typeof err === 'object' && err !== null && (err as { name?: string }).name === 'ZodError';

export type Dispatcher = ReturnType<typeof createDispatcher>;
