/**
 * The internal queue port: what receivers publish to and workers consume from.
 *
 * Glossary
 * - message:   what a producer hands over: opaque envelope bytes (src/envelope.ts) plus an optional ordering key.
 * - delivery:  one received copy of a message, held by one consumer until it settles it. Only the handle settles:
 *              there is no "delete by id". `ack()` removes the message for good; `nack()` hands it back for
 *              redelivery. Settling twice throws ROUTER_ERR_ALREADY_SETTLED.
 * - lease:     how long a delivery stays invisible to other consumers. A consumer that dies without settling loses
 *              its lease and the message comes back (at-least-once). `extendDeadline` renews it where the broker can.
 * - consumer group: adapter configuration (a stream group, a Kafka group id, the SQS queue itself), not a method.
 *
 * Guarantees every adapter keeps (the contract suite in test/contract/queue.contract.ts checks them):
 * - `publish` resolves only once the broker confirmed a durable write; a rejection means "not accepted".
 * - A message is delivered until some consumer acks it. Order is best effort unless `capabilities.orderingKey`.
 * - `close()` is idempotent. Settles issued before it is called take effect; after that they are refused and the
 *   message simply comes back later (at-least-once).
 */

export interface QueueMessage {
  /** The encoded envelope. */
  readonly body: Uint8Array;
  /** Ordering / partition key (repository), for adapters that declare `orderingKey`. */
  readonly key?: string | undefined;
  /** Publish now but deliver no earlier than this many ms later (requires `delayedPublish`). */
  readonly delayMs?: number | undefined;
}

export interface QueueProducer {
  publish(message: QueueMessage): Promise<void>;
  publishBatch(messages: readonly QueueMessage[]): Promise<void>;
}

export interface ReceiveOptions {
  /** At most this many deliveries (capped by `capabilities.maxBatch`). */
  readonly max: number;
  /** Return after this long even when nothing arrived. */
  readonly waitMs: number;
  /** Aborting returns what has been received so far (possibly nothing); it never throws. */
  readonly signal?: AbortSignal | undefined;
}

export interface QueueConsumer {
  receive(options: ReceiveOptions): Promise<QueueDelivery[]>;
  /** Stops fetching. Deliveries already returned may still be settled while the adapter stays open. */
  close(): Promise<void>;
}

export interface QueueDelivery {
  readonly body: Uint8Array;
  readonly key: string | undefined;
  /** Broker-side identity (row id, stream id, offset, receipt): for logs only. */
  readonly brokerId: string;
  /** How many times this message has been handed out, this time included, where the broker counts. */
  readonly receiveCount: number | undefined;
  ack(): Promise<void>;
  /** Hand the message back; `delayMs` postpones its redelivery where the broker allows. */
  nack(options?: { delayMs?: number }): Promise<void>;
  extendDeadline?(ms: number): Promise<void>;
}

export interface QueueCapabilities {
  readonly maxBatch: number;
  /** Larger envelopes must travel by claim check (body in the store, a reference in the queue). */
  readonly maxMessageBytes: number;
  readonly delayedPublish: boolean;
  readonly nackRedelivery: 'immediate' | 'after-visibility-timeout';
  readonly orderingKey: boolean;
  /** What a confirmed publish survives, for start-up logs and docs. */
  readonly durability: 'none' | 'process-crash' | 'power-loss';
}

export interface QueueAdapter {
  readonly kind: string;
  readonly capabilities: QueueCapabilities;
  /** Opens connections and fails fast; never done lazily on the first publish. */
  connect(): Promise<void>;
  /** Resolves when the broker answers; rejects (with a RouterError) when it does not. Used by /readyz. */
  ping(): Promise<void>;
  producer(): QueueProducer;
  /** Each call returns a new consumer in the adapter's consumer group. */
  consumer(): QueueConsumer;
  /** Idempotent; flushes pending publishes, closes consumers, then the connection. */
  close(): Promise<void>;
}
