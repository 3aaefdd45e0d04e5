/**
 * The store port: subscribers, events, deliveries with their attempts, the retry schedule, the dead-letter queue,
 * dedupe keys and retention. SQL (SQLite, PostgreSQL) and MongoDB implement it; test/contract/store.contract.ts is
 * the conformance suite every implementation passes unchanged.
 *
 * A delivery's life (one row per (event, subscriber); its id is the `webhook-id` subscribers see):
 *
 *   pending ──claim (lease)──▶ in flight ──outcome──▶ delivered                      (final)
 *      ▲                         │        ├────────▶ pending, next_attempt_at later  (retry)
 *      │                         │        └────────▶ dead + dead letter with reason  (final until replayed)
 *      └──── lease expires ──────┘  (the worker died: any worker may claim it again; no attempt was recorded)
 *      └──── replay ◀──── dead       (a new cycle: attempts restart, the id stays)
 *
 * Claiming moves `next_attempt_at` to the lease's end, so in-flight rows leave the due range and come back by
 * themselves if the holder dies; completing or releasing checks the lease owner, so a worker that lost its lease
 * cannot overwrite the new holder's result. Deliveries with an ordering key are claimable only when no earlier
 * delivery (by event acceptance order) of the same subscriber and key is still pending.
 */
import type { RoutingFields } from '../../src/envelope.ts';
import type { Subscriber, SubscriberSecrets, SubscriberSpec } from '../../src/subscribers/model.ts';
import type { DeliveryCode } from '../../transports/port.ts';

export interface EventRecord {
  readonly id: string;
  readonly source: string;
  readonly sourceKind: string;
  readonly dedupeKey: string;
  readonly receivedAt: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly routing: RoutingFields;
  readonly body: Uint8Array;
}

export interface NewDelivery {
  readonly id: string;
  readonly subscriberId: string;
  readonly orderingKey: string | undefined;
}

export interface IngestItem {
  readonly event: EventRecord;
  readonly deliveries: readonly NewDelivery[];
}

export type IngestResult = 'created' | 'duplicate';

export interface ClaimedDelivery {
  readonly id: string;
  readonly eventId: string;
  readonly subscriberId: string;
  /** The attempt about to be made, 1-based within the current cycle. */
  readonly attempt: number;
}

export type DeadReason =
  | 'max_attempts'
  | 'endpoint_gone'
  | 'rejected'
  | 'ssrf_blocked'
  | 'poison'
  | 'subscriber_deleted'
  | 'subscriber_disabled';

export interface AttemptRecord {
  readonly deliveryId: string;
  readonly attempt: number;
  readonly startedAt: number;
  readonly durationMs: number;
  readonly outcome: 'delivered' | 'retryable' | 'permanent';
  readonly code: DeliveryCode | undefined;
  readonly status: number | undefined;
  /** First bytes of the response; never returned by the API unless asked for. */
  readonly response: string | undefined;
}

export type NextState =
  | { readonly status: 'delivered' }
  | { readonly status: 'retry'; readonly at: number }
  | { readonly status: 'dead'; readonly reason: DeadReason };

export interface CompletedAttempt {
  readonly attempt: AttemptRecord;
  readonly next: NextState;
}

export interface DeliveryView {
  readonly id: string;
  readonly eventId: string;
  readonly subscriberId: string;
  readonly status: 'pending' | 'delivered' | 'dead';
  readonly attempts: number;
  readonly cycle: number;
  readonly nextAttemptAt: number | undefined;
  readonly lastCode: string | undefined;
  readonly lastStatus: number | undefined;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface DeadLetter {
  readonly id: string;
  /** Undefined for poison messages, which never became a delivery. */
  readonly deliveryId: string | undefined;
  readonly eventId: string | undefined;
  readonly subscriberId: string | undefined;
  readonly reason: DeadReason;
  readonly lastCode: string | undefined;
  readonly lastStatus: number | undefined;
  readonly attempts: number;
  readonly detail: string | undefined;
  readonly createdAt: number;
}

export interface DeadLetterFilter {
  readonly subscriber?: string | undefined;
  readonly event?: string | undefined;
  readonly reason?: string | undefined;
  readonly since?: number | undefined;
  readonly until?: number | undefined;
}

export interface DeliveryFilter {
  readonly subscriber?: string | undefined;
  readonly status?: DeliveryView['status'] | undefined;
  readonly event?: string | undefined;
  /** created at or after (ms) */
  readonly since?: number | undefined;
  /** created before (ms) */
  readonly until?: number | undefined;
}

export interface Page<T> {
  readonly items: T[];
  readonly nextCursor: string | undefined;
}

export interface PageRequest {
  readonly limit: number;
  readonly cursor?: string | undefined;
}

export interface RetentionPolicy {
  readonly eventsDays: number;
  readonly dlqDays: number;
  readonly dedupeDays: number;
}

export interface SweepResult {
  readonly events: number;
  readonly deliveries: number;
  readonly deadLetters: number;
}

export interface NewSubscriber extends SubscriberSpec {
  readonly id: string;
  readonly secrets: SubscriberSecrets;
}

export interface SubscriberPatch {
  readonly spec?: Partial<SubscriberSpec>;
  readonly secrets?: SubscriberSecrets;
  readonly disabledReason?: string | null;
}

export interface SchemaStatus {
  readonly current: number;
  readonly latest: number;
}

export interface Store {
  readonly kind: string;
  /** Opens connections; fails fast. Does not migrate. */
  connect(): Promise<void>;
  /** Applies pending migrations (under a lock where several processes may race). */
  migrate(): Promise<SchemaStatus>;
  schemaStatus(): Promise<SchemaStatus>;
  ping(): Promise<void>;
  close(): Promise<void>;

  // Subscribers
  createSubscriber(subscriber: NewSubscriber, now: number): Promise<Subscriber>;
  getSubscriber(id: string): Promise<Subscriber | undefined>;
  listSubscribers(page: PageRequest): Promise<Page<Subscriber>>;
  /** All subscribers, for the worker's matcher (cached there by `subscribersVersion`). */
  allSubscribers(): Promise<Subscriber[]>;
  /** Changes whenever any subscriber is created, changed or deleted. */
  subscribersVersion(): Promise<string>;
  /** Optimistic update: undefined when `expectedVersion` is given and does not match (or the row is gone). */
  updateSubscriber(id: string, patch: SubscriberPatch, now: number, expectedVersion?: number): Promise<Subscriber | undefined>;
  /** Deletes it and dead-letters its pending deliveries with reason `subscriber_deleted`. */
  deleteSubscriber(id: string, now: number): Promise<boolean>;

  // Ingest and delivery
  /**
   * Per item, atomically: the event and its deliveries, or nothing when the event id is already known. The id is
   * derived from the dedupe key, so the events kept (at least `retention.dedupeDays`, see sweep) are the dedupe window.
   */
  ingest(items: readonly IngestItem[], now: number): Promise<IngestResult[]>;
  claimDue(options: { owner: string; now: number; leaseMs: number; limit: number; exclude: readonly string[] }): Promise<ClaimedDelivery[]>;
  loadEvents(ids: readonly string[]): Promise<EventRecord[]>;
  /** Records attempts and moves their deliveries on; entries whose lease `owner` no longer holds are skipped. */
  complete(owner: string, results: readonly CompletedAttempt[], now: number): Promise<void>;
  /** Gives leased deliveries back without recording an attempt (our fault, shutdown, a local limit). */
  release(owner: string, deliveryIds: readonly string[], nextAttemptAt: number): Promise<void>;
  /**
   * Pushes every pending delivery of a subscriber to at least `until` (circuit breaker). A delivery in flight keeps
   * its holder, who may still complete it; should the holder die, it comes back at `until`. Returns how many moved.
   */
  deferSubscriber(subscriberId: string, until: number): Promise<number>;
  /** Dead-letters every pending delivery of a subscriber not currently in flight (after a 410). Returns how many. */
  deadLetterPending(subscriberId: string, reason: DeadReason, now: number): Promise<number>;
  /** Makes delivery ids pending again now, keeping their ids (API retry, DLQ replay). */
  requeue(deliveryIds: readonly string[], now: number): Promise<number>;
  getDelivery(id: string): Promise<(DeliveryView & { attemptLog: AttemptRecord[] }) | undefined>;
  /** Newest first; the cursor is stable under inserts. */
  listDeliveries(filter: DeliveryFilter, page: PageRequest): Promise<Page<DeliveryView>>;
  getEvent(id: string): Promise<EventRecord | undefined>;

  // Dead letters
  recordPoison(detail: string, now: number): Promise<void>;
  listDeadLetters(filter: DeadLetterFilter, page: PageRequest): Promise<Page<DeadLetter>>;
  getDeadLetter(id: string): Promise<DeadLetter | undefined>;
  /**
   * Replays dead deliveries: a new attempt cycle with the same webhook-id. With `toSubscriber`, a new delivery to that
   * subscriber is created instead (its own id). Poison entries cannot be replayed and are skipped.
   */
  replayDeadLetters(ids: readonly string[], now: number, options?: { toSubscriber?: string }): Promise<number>;
  purgeDeadLetters(ids: readonly string[]): Promise<number>;

  // Retention
  sweep(now: number, retention: RetentionPolicy): Promise<SweepResult>;
}
