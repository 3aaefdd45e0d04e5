/**
 * Kafka queue (kafkajs 2.2.4): one topic whose partitions are keyed by repository, one consumer group of workers,
 * acks=all, offsets committed only after processing.
 *
 * Publish
 * - An idempotent producer, `acks: -1`, one request in flight. Concurrent publishes gather for ~1 ms (and while the
 *   previous request is in flight) and leave as one produce request: awaiting sends one by one reaches only ~2k msg/s
 *   (tulios/kafkajs#772). `publishBatch` is one request when it fits. No request carries more than `maxMessageBytes`,
 *   so no partition's record batch can exceed the topic's max.message.bytes.
 * - A request that fails rejects its publishes (ROUTER_ERR_QUEUE_UNAVAILABLE) and the producer is replaced. kafkajs
 *   rolls its sequence numbers back after a failure, so the next request would reuse the numbers of a batch the broker
 *   may have written after all, and the broker would drop it as that batch's duplicate; a new producer id cannot.
 * - `connect()` creates the topic when it is missing, with max.message.bytes 32 MiB (GitHub sends up to 25 MB) and
 *   min.insync.replicas 2 from replicationFactor 3 on. `capabilities` then describe the topic as found: its
 *   max.message.bytes, and 'power-loss' only when min.insync.replicas ≥ 2 (acks=all is an ack from broker memory,
 *   not an fsync, so one replica survives a broker process crash, not a machine failure).
 *
 * Consume: kafkajs pushes, the port pulls. Each `consumer()` is a group member of its own (a kafkajs consumer that
 * joins on the first `receive`). Fetched messages wait in a bounded buffer (when it is full the fetch loop waits,
 * heartbeating) and `receive` hands them out. Per partition the consumer tracks offsets in fetch order and commits
 * only the first unsettled offset (or the end), so an ack out of order never lets an earlier message be skipped.
 *
 *   fetched ─▶ buffered ─receive─▶ handed out ─ack──────────────────────────────────────▶ settled ─▶ committed
 *                                             └nack─▶ published again (same key, count) ─▶ settled    (once contiguous)
 *
 * - nack: Kafka has no nack. The message is published again (same key, its receive count in a header) to the tail of
 *   its partition, then the original counts as settled. `delayMs` is waited out in this process first; should the
 *   process die meanwhile, the original was never committed and comes back. A nacked message loses its place in line.
 * - receiveCount = the header + earlier hand-outs of the same offset + 1. Before handing out offsets the group has not
 *   heard of, the consumer commits (its unchanged commit point and) metadata saying how far it handed out; the next
 *   owner of the partition reads it. So a message that kills its worker again and again still becomes poison.
 * - Leases: a partition is this consumer's until a rebalance gives it to another member. kafkajs has no revoke hook
 *   (tulios/kafkajs#28): on REBALANCING the consumer stops handing out and commits what is contiguous while its old
 *   generation still may; on GROUP_JOIN it drops the partitions it lost, and settling their deliveries fails with
 *   ROUTER_ERR_LEASE_LOST. The new owner reads from the last commit: duplicates only for what was in flight.
 * - Few partitions move: the group uses a sticky assigner of its own (round-robin as the fallback protocol). Each
 *   member names, when it joins, the partitions it owns and those where it holds unsettled deliveries; the leader
 *   leaves both with their owner up to a fair share and spreads the rest. So a member joining mid-stream does not take
 *   deliveries that are in flight elsewhere, and a member only loses them by leaving (or exceeding its share).
 * - A consumer that does not call `receive` for `maxPollIntervalMs` commits what is contiguous and leaves the group
 *   (Kafka's max.poll.interval.ms): a hung worker does not keep its partitions. A dead process is evicted by the broker
 *   after `sessionTimeoutMs`. `consumer.close()` stops fetching, waits until what it handed out is settled, commits
 *   and leaves; a closed member hands its partitions over at once.
 */
import type { Admin, Consumer, EachBatchPayload, Kafka, KafkaMessage, LogEntry, PartitionAssigner, Producer } from 'kafkajs';
import type { QueueConfig } from '../../config/schema.ts';
import { isRouterError, RouterError } from '../../src/errors.ts';
import { type Logger, silentLogger } from '../../src/logger.ts';
import type { QueueAdapter, QueueCapabilities, QueueConsumer, QueueDelivery, QueueMessage, ReceiveOptions } from './port.ts';
import { Waiters } from './waiters.ts';

export type KafkaQueueConfig = Extract<QueueConfig, { kind: 'kafka' }>;

const MiB = 1024 * 1024;
/** max.message.bytes of a topic created here: GitHub's 25 MB bodies plus the envelope fit. */
export const KAFKA_TOPIC_MAX_MESSAGE_BYTES = 32 * MiB;
/** Kept free below max.message.bytes for record and batch headers, the key and the receive-count header. */
export const KAFKA_RECORD_HEADROOM_BYTES = 16 * 1024;
const RECEIVES_HEADER = 'x-router-receives';
const LINGER_MS = 1;
/** Publishes waiting for the broker beyond this are refused at once (the receiver answers 503). */
const MAX_PENDING_PUBLISHES = 20_000;
/** Fetched, not yet handed out: above either bound the fetch loop waits. */
const BUFFER_MAX_MESSAGES = 2_000;
const BUFFER_MAX_BYTES = 64 * MiB;
/** Fetch long-poll; also bounds how late an idle member notices a rebalance. */
const FETCH_MAX_WAIT_MS = 300;
const PING_TIMEOUT_MS = 5_000;
/** Commit metadata stays far below the broker's offset.metadata.max.bytes (4096). */
const MAX_META_RANGES = 48;
/** Protocol name of the sticky assigner below; bump the version if its member data changes. */
const STICKY_ASSIGNER = 'router-sticky';
/** kafkajs error types meaning "the group moved on": wait for the next join instead of failing. */
const REBALANCE_ERRORS = new Set(['REBALANCE_IN_PROGRESS', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID', 'NOT_COORDINATOR_FOR_GROUP']);
/** kafkajs log lines that are expected and harmless here, logged at debug instead of warn/error. */
const QUIET_LOGS = [
  /Limiting retries for the idempotent producer/, // the producer is replaced after a failure, see the header
  /The group is rebalancing, re-joining/,
  /The group member needs to have a valid member id/, // KIP-394 two-step join
  /The group is rebalancing, so a rejoin is needed/,
  /Specified group generation id is not valid/,
  /coordinator is (loading|not available)/i, // first group use after a broker start
  /Topic creation errors/, // TOPIC_ALREADY_EXISTS at connect; other creation errors fail connect() itself
];

/** Receive counts for a range of offsets: [from, to) handed out `count` times. */
type Range = [from: number, to: number, count: number];

interface Tracked {
  readonly offset: number;
  settled: boolean;
}

/** What this consumer knows about one partition it owns. A fresh object each time the partition is (re)acquired. */
interface PartitionState {
  readonly partition: number;
  /** Taken away by a rebalance, a lease expiry or a stop: settles fail with LEASE_LOST from now on. */
  lost: boolean;
  /** The committed offset and metadata have been read. */
  ready: Promise<void>;
  /** Hand-outs by earlier owners, from the commit metadata. */
  prior: Range[];
  /** First offset this owner may hand out; -1 until known. */
  ownFrom: number;
  /** Next offset to accept from a fetch; earlier ones are refetches after a rejoin. -1: accept anything. */
  position: number;
  /** Offsets below this were handed out by this owner. */
  handedHigh: number;
  /** `handedHigh` as last written into the commit metadata. */
  recordedHigh: number;
  /** Last committed offset (the next one to read); -1 when none. */
  committed: number;
  /** Tracked offsets in fetch order; `entries[head]` is the first that may be unsettled. */
  entries: Tracked[];
  head: number;
  /** Handed out and not settled. */
  inFlight: number;
}

interface Buffered {
  readonly st: PartitionState;
  readonly entry: Tracked;
  readonly message: KafkaMessage;
  readonly bytes: number;
}

interface CommitEntry {
  readonly st: PartitionState;
  readonly offset: number;
  readonly high: number;
  readonly request: { topic: string; partition: number; offset: string; metadata: string };
}

interface OutRecord {
  key: string | Buffer | null;
  value: Buffer;
  headers?: Record<string, string>;
}

interface PendingPublish {
  readonly record: OutRecord;
  readonly bytes: number;
  readonly done: (err?: unknown) => void;
}

export function createKafkaQueue(config: KafkaQueueConfig, deps: { logger?: Logger } = {}): QueueAdapter {
  const logger = deps.logger ?? silentLogger;
  const { topic, groupId } = config;
  const { maxPollIntervalMs } = config;
  // Short heartbeats make a rebalance finish sooner: every member has to notice it before it can complete.
  const heartbeatIntervalMs = Math.max(100, Math.min(500, Math.floor(config.sessionTimeoutMs / 10)));
  let topicMaxBytes = KAFKA_TOPIC_MAX_MESSAGE_BYTES;
  let durability: QueueCapabilities['durability'] = 'process-crash';
  const capabilities = {
    maxBatch: 1_000,
    get maxMessageBytes() {
      return topicMaxBytes - KAFKA_RECORD_HEADROOM_BYTES;
    },
    delayedPublish: false,
    nackRedelivery: 'immediate' as const,
    orderingKey: true,
    get durability() {
      return durability;
    },
  } satisfies QueueCapabilities;

  let lib: typeof import('kafkajs') | undefined;
  let kafka: Kafka | undefined;
  let admin: Admin | undefined;
  let connecting: Promise<void> | undefined;
  let closing: Promise<void> | undefined;
  let closed = false;
  const consumers = new Set<GroupConsumer>();
  /** Settles started before close(); close() lets them finish. */
  const settling = new Set<Promise<unknown>>();
  /** Cuts nack delays short at close(): the re-publish happens at once instead. */
  const shutdown = new AbortController();

  const closedError = () => new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'kafka queue is not open');
  const unavailable = (err: unknown, what: string) =>
    err instanceof RouterError ? err : new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', `kafka: ${what}`, { cause: err });
  const leaseLost = (st: PartitionState, offset: number) =>
    new RouterError('ROUTER_ERR_LEASE_LOST', `partition ${st.partition} of ${topic} went to another consumer before offset ${offset} was committed`);

  // ---- publishing: gather, one request in flight ----------------------------------------------------------------

  let producer: Promise<Producer> | undefined;
  let pending: PendingPublish[] = [];
  let sending: Promise<void> | undefined;
  let linger: NodeJS.Timeout | undefined;
  const idle = new Waiters();

  function newProducer(): Promise<Producer> {
    const k = kafka;
    if (!k || !lib) return Promise.reject(closedError());
    const p = k.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: lib.Partitioners.DefaultPartitioner, // murmur2 of the key, as Java clients do
      // Bounded: a publish must fail in time (the receiver answers 503); see the header for why that is safe.
      retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2_000 },
    });
    return p.connect().then(
      () => p,
      (err: unknown) => {
        void p.disconnect().catch(() => {});
        throw err;
      },
    );
  }

  /** `internal`: a nack's re-publish, accepted until the consumers are closed. */
  function enqueue(records: OutRecord[], internal = false): Promise<void> {
    if (!kafka || (closed && !internal)) return Promise.reject(closedError());
    const limit = capabilities.maxMessageBytes;
    for (const r of records) {
      if (r.value.byteLength > limit) {
        return Promise.reject(
          new RouterError('ROUTER_ERR_MESSAGE_TOO_LARGE', `a ${r.value.byteLength}-byte message exceeds the topic's limit of ${limit} bytes`),
        );
      }
    }
    if (records.length === 0) return Promise.resolve();
    if (!internal && pending.length + records.length > MAX_PENDING_PUBLISHES) {
      return Promise.reject(new RouterError('ROUTER_ERR_QUEUE_OVERLOADED', `${pending.length} publishes are waiting for the broker`));
    }
    return new Promise<void>((resolve, reject) => {
      let left = records.length;
      let failed = false;
      const done = (err?: unknown) => {
        if (failed) return;
        if (err) {
          failed = true;
          reject(err);
        } else if (--left === 0) resolve();
      };
      for (const record of records) {
        const keyBytes = record.key === null ? 0 : Buffer.byteLength(record.key);
        pending.push({ record, bytes: record.value.byteLength + keyBytes + 128, done });
      }
      if (!sending && !linger) linger = setTimeout(flush, LINGER_MS);
    });
  }

  function flush(): void {
    linger = undefined;
    if (sending || pending.length === 0) return;
    // One request per round; its size bounded so that no partition's record batch outgrows the topic limit.
    let bytes = 0;
    let n = 0;
    while (n < pending.length && (n === 0 || bytes + (pending[n] as PendingPublish).bytes <= capabilities.maxMessageBytes)) {
      bytes += (pending[n] as PendingPublish).bytes;
      n += 1;
    }
    const chunk = pending.slice(0, n);
    pending = pending.slice(n);
    sending = send(chunk).finally(() => {
      sending = undefined;
      // Whatever gathered meanwhile goes out at once: it already waited for a whole round trip.
      if (pending.length > 0) flush();
      else idle.wakeAll();
    });
  }

  async function send(chunk: PendingPublish[]): Promise<void> {
    try {
      producer ??= newProducer();
      const ready = producer;
      // A broker that neither confirms nor refuses within connectTimeoutMs counts as unavailable: the requests behind
      // this one must not wait for kafkajs's own retries to run out.
      await withTimeout(
        ready.then((p) => p.send({ topic, acks: -1, messages: chunk.map((c) => c.record) })),
        config.connectTimeoutMs,
      );
      for (const c of chunk) c.done();
    } catch (err) {
      logger.warn({ err, messages: chunk.length }, 'kafka did not confirm a publish; replacing the producer');
      const failure = unavailable(err, 'the broker did not confirm the publish');
      for (const c of chunk) c.done(failure);
      const old = producer;
      producer = undefined;
      void old?.then((p) => p.disconnect()).catch(() => {});
    }
  }

  async function drainPublishes(): Promise<void> {
    while (sending || linger || pending.length > 0) {
      if (linger) {
        clearTimeout(linger);
        flush();
      }
      if (sending) await sending;
      else if (pending.length > 0) flush();
      else await idle.wait(10);
    }
  }

  function toRecord(message: QueueMessage): OutRecord {
    const b = message.body;
    // A view, not a copy: the bytes are encoded into the request within the linger window.
    return { key: message.key ?? null, value: Buffer.from(b.buffer, b.byteOffset, b.byteLength) };
  }

  // ---- consuming: one group member per consumer() ----------------------------------------------------------------

  class GroupConsumer implements QueueConsumer {
    #kc: Consumer | undefined;
    /** Settles once kafkajs's run() returned: the first join is done (or failed). */
    #started: Promise<void> | undefined;
    /** Settles once the previous member of this consumer has left. */
    #stopped: Promise<void> = Promise.resolve();
    #stopping = false;
    #failure: unknown;
    /** Joined, with a known assignment. */
    #active = false;
    /** A rebalance is under way: nothing is handed out and commits wait for the next join. */
    #frozen = false;
    #closed = false;
    #closing: Promise<void> | undefined;
    #parts = new Map<number, PartitionState>();
    #buffer: Buffered[] = [];
    #bufferBytes = 0;
    readonly #wake = new Waiters();
    readonly #space = new Waiters();
    readonly #joins = new Waiters();
    readonly #drained = new Waiters();
    #polling = 0;
    #lastPoll = Date.now();
    #leaseTimer: NodeJS.Timeout | undefined;
    #round: Promise<void> | undefined;
    #queued: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void } | undefined;

    async receive(options: ReceiveOptions): Promise<QueueDelivery[]> {
      if (this.#closed || closed || options.signal?.aborted) return [];
      const max = Math.max(1, Math.min(options.max, capabilities.maxBatch));
      const deadline = Date.now() + Math.max(0, options.waitMs);
      this.#polling += 1;
      clearTimeout(this.#leaseTimer);
      try {
        for (;;) {
          if (this.#closed || closed || options.signal?.aborted) return [];
          this.#start(); // again after a lease expiry or a crash ended the previous member
          if (this.#failure !== undefined) {
            const err = this.#failure;
            this.#failure = undefined;
            throw unavailable(err, 'the consumer could not join its group');
          }
          const taken = this.#take(max);
          if (taken.length > 0) {
            const out = await this.#handOut(taken);
            if (out.length > 0) return out;
          }
          const left = deadline - Date.now();
          if (left <= 0) return [];
          await this.#wake.wait(left, options.signal);
        }
      } finally {
        this.#polling -= 1;
        this.#lastPoll = Date.now();
        this.#armLease();
      }
    }

    /** Stops fetching. Resolves once the member left, or at once while deliveries it handed out are unsettled. */
    close(): Promise<void> {
      if (!this.#closing) {
        this.#closed = true;
        this.#dropBuffer();
        this.#wake.wakeAll();
        try {
          this.#kc?.pause([{ topic }]);
        } catch {
          // not running yet: nothing is fetched anyway
        }
        this.#closing = (async () => {
          while (this.#inFlight() > 0 && this.#kc) await this.#drained.wait(1_000);
          await this.#stop('closed');
          consumers.delete(this);
        })();
      }
      return this.#inFlight() > 0 ? Promise.resolve() : this.#closing;
    }

    /** adapter.close(): settles issued before it have finished; commit what is contiguous and leave. */
    async shutdown(): Promise<void> {
      this.#closed = true;
      this.#dropBuffer();
      this.#wake.wakeAll();
      await this.#stop('adapter closed');
    }

    #start(): void {
      if (this.#kc || this.#closed || closed || !kafka || !lib) return;
      const kc = kafka.consumer({
        groupId,
        sessionTimeout: config.sessionTimeoutMs,
        heartbeatInterval: heartbeatIntervalMs,
        maxWaitTimeInMs: FETCH_MAX_WAIT_MS,
        // Soft limits since KIP-74: a larger first record batch still arrives whole.
        maxBytesPerPartition: MiB,
        maxBytes: 16 * MiB,
        allowAutoTopicCreation: false,
        partitionAssigners: [this.#assigner(lib), lib.PartitionAssigners.roundRobin],
      });
      this.#kc = kc;
      this.#active = false;
      this.#frozen = false;
      this.#stopping = false;
      this.#failure = undefined;
      kc.on(kc.events.GROUP_JOIN, (e) => this.#onJoin(kc, e.payload.memberAssignment));
      kc.on(kc.events.REBALANCING, () => this.#onRebalancing(kc));
      kc.on(kc.events.CRASH, (e) => this.#onCrash(kc, e.payload.error, e.payload.restart));
      const previous = this.#stopped;
      this.#started = (async () => {
        await previous;
        await kc.connect();
        await kc.subscribe({ topic, fromBeginning: true }); // a new group reads what was published before it existed
        await kc.run({ autoCommit: false, eachBatchAutoResolve: true, eachBatch: (payload) => this.#onBatch(kc, payload) });
      })().catch((err: unknown) => {
        logger.error({ err, topic, groupId }, 'kafka consumer could not start');
        if (this.#kc === kc) {
          this.#kc = undefined;
          this.#failure = err;
          this.#wake.wakeAll();
        }
        void kc.disconnect().catch(() => {});
      });
    }

    /** The sticky assigner: members claim what they own and what is in flight (see the header). */
    #assigner(kafkajs: typeof import('kafkajs')): PartitionAssigner {
      const { MemberMetadata, MemberAssignment } = kafkajs.AssignerProtocol;
      return ({ cluster }) => ({
        name: STICKY_ASSIGNER,
        version: 1,
        protocol: ({ topics }) => {
          // Called as the member (re)joins, i.e. after REBALANCING froze hand-outs: the busy set can only shrink now.
          const owned = [...this.#parts.values()].filter((st) => !st.lost);
          const claims = { owned: owned.map((st) => st.partition), busy: owned.filter((st) => st.inFlight > 0).map((st) => st.partition) };
          return { name: STICKY_ASSIGNER, metadata: MemberMetadata.encode({ version: 1, topics, userData: Buffer.from(JSON.stringify(claims)) }) };
        },
        assign: async ({ members, topics }) => {
          const claims = members.map(({ memberId, memberMetadata }) => ({ id: memberId, ...parseClaims(MemberMetadata.decode(memberMetadata)?.userData) }));
          const result = new Map<string, Record<string, number[]>>(members.map((m) => [m.memberId, {}]));
          for (const t of topics) {
            const partitions = cluster.findTopicPartitionMetadata(t).map((m) => m.partitionId);
            // Claims are about this adapter's topic; any other topic is simply spread.
            const split = assignPartitions(partitions, t === topic ? claims : claims.map((c) => ({ id: c.id, owned: [], busy: [] })));
            for (const [id, ps] of split) (result.get(id) as Record<string, number[]>)[t] = ps;
          }
          return [...result].map(([memberId, assignment]) => ({
            memberId,
            memberAssignment: MemberAssignment.encode({ version: 1, assignment, userData: Buffer.alloc(0) }),
          }));
        },
      });
    }

    #onJoin(kc: Consumer, assignment: Record<string, number[]>): void {
      if (kc !== this.#kc) return;
      const mine = new Set(assignment[topic] ?? []);
      for (const st of [...this.#parts.values()]) if (!mine.has(st.partition)) this.#revoke(st);
      // While leaving, partitions kept are still committed; new ones are not taken up.
      const fresh = this.#stopping ? [] : [...mine].filter((p) => !this.#parts.has(p));
      if (fresh.length > 0) {
        const committed = readCommitted();
        for (const p of fresh) this.#parts.set(p, newPartitionState(p, committed));
      }
      logger.debug({ topic, groupId, partitions: [...mine].sort((a, b) => a - b) }, 'kafka consumer joined its group');
      this.#active = true;
      this.#frozen = false;
      this.#joins.wakeAll();
      this.#wake.wakeAll();
    }

    #onRebalancing(kc: Consumer): void {
      if (kc !== this.#kc) return;
      // Commit what is contiguous while this generation still may (the group waits for us to rejoin), then hold
      // everything until the new assignment is known.
      const offsets = this.#dirty();
      if (offsets.length > 0) {
        kc.commitOffsets(offsets.map((o) => o.request)).then(
          () => this.#committed(offsets),
          (err: unknown) => logger.debug({ err }, 'kafka commit before a rebalance was refused'),
        );
      }
      this.#frozen = true;
    }

    #onCrash(kc: Consumer, error: Error, restart: boolean): void {
      if (kc !== this.#kc) return;
      logger.error({ err: error, restart, topic, groupId }, 'kafka consumer crashed; its partitions are given up');
      for (const st of [...this.#parts.values()]) this.#revoke(st);
      this.#active = false;
      this.#frozen = false;
      if (!restart) {
        this.#kc = undefined;
        this.#failure = error;
      }
      this.#joins.wakeAll();
      this.#wake.wakeAll();
    }

    async #onBatch(kc: Consumer, { batch, heartbeat, isRunning }: EachBatchPayload): Promise<void> {
      const st = this.#parts.get(batch.partition);
      if (!st || kc !== this.#kc || this.#closed || this.#stopping) return;
      await st.ready;
      if (st.lost || kc !== this.#kc || this.#closed || this.#stopping) return;
      for (const message of batch.messages) {
        const offset = Number(message.offset);
        if (offset < st.position) continue; // refetched after a rejoin: already buffered or handed out
        if (st.ownFrom < 0) st.ownFrom = st.handedHigh = st.recordedHigh = offset;
        st.position = offset + 1;
        const entry: Tracked = { offset, settled: false };
        st.entries.push(entry);
        const bytes = (message.value?.byteLength ?? 0) + 128;
        this.#buffer.push({ st, entry, message, bytes });
        this.#bufferBytes += bytes;
      }
      this.#wake.wakeAll();
      // Backpressure: hold the fetch loop while the buffer is full, heartbeating so the group keeps us. A heartbeat
      // that reports a rebalance throws, and kafkajs rejoins.
      while (
        (this.#buffer.length > BUFFER_MAX_MESSAGES || this.#bufferBytes > BUFFER_MAX_BYTES) &&
        kc === this.#kc &&
        !this.#closed &&
        !this.#stopping &&
        isRunning()
      ) {
        await this.#space.wait(heartbeatIntervalMs);
        await heartbeat();
      }
    }

    #take(max: number): Buffered[] {
      if (!this.#active || this.#frozen || this.#closed || this.#stopping) return [];
      const out: Buffered[] = [];
      let i = 0;
      for (; i < this.#buffer.length && out.length < max; i++) {
        const b = this.#buffer[i] as Buffered;
        this.#bufferBytes -= b.bytes;
        if (!b.st.lost) out.push(b);
      }
      this.#buffer.splice(0, i);
      this.#space.wakeAll();
      return out;
    }

    async #handOut(taken: Buffered[]): Promise<QueueDelivery[]> {
      let record = false;
      for (const b of taken) {
        b.st.handedHigh = Math.max(b.st.handedHigh, b.entry.offset + 1);
        if (b.st.handedHigh > b.st.recordedHigh) record = true;
      }
      if (record) {
        // The group learns how far this consumer handed out before anything is handed out (receive counts survive it).
        try {
          await this.#commit();
        } catch (err) {
          this.#putBack(taken);
          throw unavailable(err, 'could not record the hand-out in the group');
        }
        if (taken.some((b) => !b.st.lost && b.st.recordedHigh <= b.entry.offset)) {
          this.#putBack(taken); // a rebalance got in the way: try again once it settled
          return [];
        }
      }
      const out: QueueDelivery[] = [];
      for (const b of taken) {
        if (b.st.lost) continue;
        b.st.inFlight += 1;
        out.push(this.#delivery(b));
      }
      return out;
    }

    #putBack(taken: Buffered[]): void {
      const keep = taken.filter((b) => !b.st.lost);
      for (const b of keep) this.#bufferBytes += b.bytes;
      this.#buffer.unshift(...keep);
    }

    #delivery({ st, entry, message }: Buffered): QueueDelivery {
      const original = message.value ?? Buffer.alloc(0);
      const receiveCount = (Number(headerText(message.headers?.[RECEIVES_HEADER])) || 0) + countAt(st.prior, entry.offset) + 1;
      const key = message.key === null ? undefined : message.key.toString('utf8');
      let settled = false;
      const settle = (how: () => Promise<void>): Promise<void> => {
        if (settled) return Promise.reject(new RouterError('ROUTER_ERR_ALREADY_SETTLED', `message ${st.partition}@${entry.offset} was already settled`));
        settled = true;
        if (closed) return Promise.reject(closedError());
        if (st.lost) return Promise.reject(leaseLost(st, entry.offset));
        const p = how();
        settling.add(p);
        void p.catch(() => {}).finally(() => settling.delete(p));
        return p;
      };
      return {
        body: Buffer.from(original), // the consumer's own copy; `original` stays intact for a nack
        key,
        brokerId: `${st.partition}@${entry.offset}`,
        receiveCount,
        ack: () => settle(() => this.#settle(st, entry)),
        nack: (options) =>
          settle(async () => {
            const republish = async () => {
              if (st.lost) throw leaseLost(st, entry.offset);
              await enqueue([{ key: message.key, value: original, headers: { [RECEIVES_HEADER]: String(receiveCount) } }], true);
              await this.#settle(st, entry);
            };
            if (!options?.delayMs) return republish();
            // The original stays unsettled (uncommitted) until its copy is out, so dying meanwhile loses nothing.
            const later = delay(options.delayMs, shutdown.signal)
              .then(republish)
              .catch((err: unknown) => {
                if (isRouterError(err, 'ROUTER_ERR_LEASE_LOST')) return; // its new owner reads the original again
                logger.error({ err, brokerId: `${st.partition}@${entry.offset}` }, 'kafka: a delayed nack could not re-publish; the message returns after a rebalance');
              });
            settling.add(later);
            void later.finally(() => settling.delete(later));
          }),
      };
    }

    async #settle(st: PartitionState, entry: Tracked): Promise<void> {
      if (st.lost) throw leaseLost(st, entry.offset);
      entry.settled = true;
      st.inFlight -= 1;
      if (this.#inFlight() === 0) this.#drained.wakeAll();
      try {
        await this.#commit();
      } catch (err) {
        if (st.committed > entry.offset) return;
        throw st.lost ? leaseLost(st, entry.offset) : unavailable(err, 'offset commit failed');
      }
      // Settled here but not committed, and the partition went elsewhere: its new owner reads it again.
      if (st.lost && st.committed <= entry.offset) throw leaseLost(st, entry.offset);
    }

    /** Resolves once a commit round that started after this call has finished (rounds coalesce). */
    #commit(): Promise<void> {
      if (!this.#queued) {
        let resolve!: () => void;
        let reject!: (err: unknown) => void;
        const promise = new Promise<void>((res, rej) => {
          resolve = res;
          reject = rej;
        });
        this.#queued = { promise, resolve, reject };
        if (!this.#round) this.#nextRound();
        return promise;
      }
      return this.#queued.promise;
    }

    #nextRound(): void {
      const q = this.#queued;
      if (!q) return;
      this.#queued = undefined;
      this.#round = this.#commitRound()
        .then(q.resolve, q.reject)
        .finally(() => {
          this.#round = undefined;
          this.#nextRound();
        });
    }

    async #commitRound(): Promise<void> {
      for (let attempt = 0; ; attempt++) {
        if (this.#frozen) await this.#joins.wait(config.sessionTimeoutMs);
        const kc = this.#kc;
        if (!kc || !this.#active || this.#frozen) return; // nothing left to commit for
        const offsets = this.#dirty();
        if (offsets.length === 0) return;
        try {
          await kc.commitOffsets(offsets.map((o) => o.request));
          this.#committed(offsets);
          return;
        } catch (err) {
          if (!isRebalanceError(err) || attempt >= 3) throw err;
          // The group moved to a new generation: kafkajs rejoins; commit what is still ours afterwards.
          await this.#joins.wait(config.sessionTimeoutMs);
        }
      }
    }

    /** Partitions whose commit point or hand-out mark moved since the last commit. */
    #dirty(): CommitEntry[] {
      const out: CommitEntry[] = [];
      for (const st of this.#parts.values()) {
        if (st.lost) continue;
        const offset = commitPoint(st);
        if (offset < 0 || (offset <= st.committed && st.handedHigh <= st.recordedHigh)) continue;
        const ranges = handOutRanges(st.prior, st.ownFrom, st.handedHigh, offset);
        const metadata = ranges.length > 0 ? JSON.stringify({ v: 1, r: ranges }) : '';
        out.push({ st, offset, high: st.handedHigh, request: { topic, partition: st.partition, offset: String(offset), metadata } });
      }
      return out;
    }

    #committed(offsets: CommitEntry[]): void {
      for (const o of offsets) {
        o.st.committed = Math.max(o.st.committed, o.offset);
        o.st.recordedHigh = Math.max(o.st.recordedHigh, o.high);
      }
    }

    #revoke(st: PartitionState): void {
      st.lost = true;
      this.#parts.delete(st.partition);
      st.inFlight = 0;
      const before = this.#buffer.length;
      this.#buffer = this.#buffer.filter((b) => b.st !== st);
      if (this.#buffer.length !== before) this.#bufferBytes = this.#buffer.reduce((n, b) => n + b.bytes, 0);
      if (this.#inFlight() === 0) this.#drained.wakeAll();
    }

    #inFlight(): number {
      let n = 0;
      for (const st of this.#parts.values()) n += st.inFlight;
      return n;
    }

    #dropBuffer(): void {
      // Never handed out: they stay unsettled, so the commit point stops before them and the next owner reads them.
      this.#buffer = [];
      this.#bufferBytes = 0;
      this.#space.wakeAll();
    }

    #armLease(): void {
      clearTimeout(this.#leaseTimer);
      if (this.#polling > 0 || !this.#kc || this.#stopping) return;
      const due = this.#lastPoll + maxPollIntervalMs - Date.now();
      this.#leaseTimer = setTimeout(() => {
        if (this.#polling > 0 || !this.#kc || this.#stopping) return;
        if (Date.now() - this.#lastPoll < maxPollIntervalMs) return this.#armLease();
        logger.warn({ topic, groupId, maxPollIntervalMs }, 'kafka consumer did not call receive() within maxPollIntervalMs; leaving the group');
        void this.#stop('maxPollIntervalMs passed');
      }, Math.max(0, due));
      this.#leaseTimer.unref();
    }

    /** Commits what is contiguous, gives every partition up (LEASE_LOST for what is still in flight) and leaves. */
    #stop(reason: string): Promise<void> {
      const kc = this.#kc;
      if (!kc || this.#stopping) return this.#stopped;
      this.#stopping = true;
      clearTimeout(this.#leaseTimer);
      const started = this.#started;
      this.#stopped = (async () => {
        // Leave only after the join finished: a member dropped mid-join would hold partitions until its session ends.
        await withTimeout(started ?? Promise.resolve(), config.sessionTimeoutMs).catch(() => {});
        if (this.#active) {
          await this.#commit().catch((err: unknown) => logger.warn({ err, reason }, 'kafka commit before leaving failed'));
        }
        for (const st of [...this.#parts.values()]) this.#revoke(st);
        this.#dropBuffer();
        this.#active = false;
        this.#kc = undefined;
        this.#started = undefined;
        this.#joins.wakeAll();
        await kc.disconnect().catch((err: unknown) => logger.warn({ err }, 'kafka consumer did not disconnect cleanly'));
        this.#stopping = false;
        this.#wake.wakeAll();
        logger.debug({ topic, groupId, reason }, 'kafka consumer left its group');
      })();
      return this.#stopped;
    }
  }

  /** Committed offsets and hand-out metadata of the group, read once per join for the partitions it brought. */
  function readCommitted(): Promise<Map<number, { offset: number; prior: Range[] }>> {
    const a = admin;
    const attempt = async () => {
      if (!a) throw closedError();
      const [entry] = await a.fetchOffsets({ groupId, topics: [topic] });
      return new Map(
        (entry?.partitions ?? []).map((p) => {
          const offset = Number(p.offset);
          return [p.partition, { offset, prior: parseMeta(p.metadata, offset) }] as const;
        }),
      );
    };
    return attempt()
      .catch(() => delay(200).then(attempt))
      .catch(() => delay(500).then(attempt))
      .catch((err: unknown) => {
        // Consuming goes on; only receive counts of messages handed out by an earlier owner come out too low.
        logger.warn({ err, topic, groupId }, 'kafka: cannot read committed offsets; receive counts may be low');
        return new Map();
      });
  }

  function newPartitionState(partition: number, committed: Promise<Map<number, { offset: number; prior: Range[] }>>): PartitionState {
    const st: PartitionState = {
      partition,
      lost: false,
      ready: Promise.resolve(),
      prior: [],
      ownFrom: -1,
      position: -1,
      handedHigh: -1,
      recordedHigh: -1,
      committed: -1,
      entries: [],
      head: 0,
      inFlight: 0,
    };
    st.ready = committed.then((map) => {
      const c = map.get(partition);
      if (!c || c.offset < 0) return;
      st.committed = st.ownFrom = st.position = st.handedHigh = st.recordedHigh = c.offset;
      st.prior = c.prior;
    });
    return st;
  }

  // ---- connection ------------------------------------------------------------------------------------------------

  async function ensureTopic(a: Admin): Promise<void> {
    const minIsr = config.replicationFactor >= 3 ? 2 : 1;
    const created = await a.createTopics({
      waitForLeaders: true,
      topics: [
        {
          topic,
          numPartitions: config.partitions,
          replicationFactor: config.replicationFactor,
          configEntries: [
            { name: 'max.message.bytes', value: String(KAFKA_TOPIC_MAX_MESSAGE_BYTES) },
            { name: 'min.insync.replicas', value: String(minIsr) },
          ],
        },
      ],
    });
    const described = await a.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2 /* ConfigResourceTypes.TOPIC */, name: topic, configNames: ['max.message.bytes', 'min.insync.replicas'] }],
    });
    const entries = described.resources[0]?.configEntries ?? [];
    const value = (name: string) => Number(entries.find((e) => e.configName === name)?.configValue);
    topicMaxBytes = value('max.message.bytes') || KAFKA_TOPIC_MAX_MESSAGE_BYTES;
    const isr = value('min.insync.replicas') || 1;
    durability = isr >= 2 ? 'power-loss' : 'process-crash';
    const meta = await a.fetchTopicMetadata({ topics: [topic] });
    const partitions = meta.topics[0]?.partitions ?? [];
    const replicas = Math.min(...partitions.map((p) => p.replicas.length));
    if (!created && partitions.length !== config.partitions) {
      logger.info({ topic, partitions: partitions.length, configured: config.partitions }, 'kafka topic exists with another partition count; using it as it is');
    }
    if (topicMaxBytes < KAFKA_TOPIC_MAX_MESSAGE_BYTES) {
      logger.warn(
        { topic, maxMessageBytes: capabilities.maxMessageBytes },
        `kafka topic max.message.bytes is ${topicMaxBytes}, below ${KAFKA_TOPIC_MAX_MESSAGE_BYTES}: larger webhooks cannot be queued`,
      );
    }
    const fields = { topic, created, partitions: partitions.length, replicas, minInsyncReplicas: isr, maxMessageBytes: capabilities.maxMessageBytes, durability };
    if (durability === 'power-loss') logger.info(fields, 'kafka queue ready');
    else {
      logger.warn(
        fields,
        'kafka queue ready, but min.insync.replicas is 1: an acked publish may sit in one broker\'s memory only (use replicationFactor 3, which sets min.insync.replicas 2)',
      );
    }
  }

  async function doConnect(): Promise<void> {
    if (closed) throw closedError();
    lib ??= await import('kafkajs');
    const k = new lib.Kafka({
      clientId: config.clientId,
      brokers: config.brokers,
      connectionTimeout: Math.min(config.connectTimeoutMs, 3_000),
      // Reconnects back off 100 ms → 2 s, five times, instead of kafkajs's 300 ms → 30 s.
      retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2_000 },
      logLevel: lib.logLevel.WARN,
      logCreator: () => (entry) => kafkaLog(logger, entry),
    });
    const a = k.admin();
    kafka = k;
    admin = a;
    try {
      await withTimeout(
        (async () => {
          await a.connect();
          // A topic just created may not be in every broker's metadata yet (UNKNOWN_TOPIC_OR_PARTITION,
          // LEADER_NOT_AVAILABLE are retriable): try again until the connect deadline.
          for (let attempt = 1; ; attempt++) {
            try {
              await ensureTopic(a);
              break;
            } catch (err) {
              const e = err as { retriable?: boolean; type?: string; cause?: { retriable?: boolean; type?: string } };
              const transient = e.retriable || e.cause?.retriable || /UNKNOWN_TOPIC_OR_PARTITION|LEADER_NOT_AVAILABLE/.test(`${e.type} ${e.cause?.type}`);
              if (!transient || attempt >= 20) throw err;
              await new Promise((r) => setTimeout(r, 100 * attempt));
            }
          }
          producer = newProducer();
          await producer;
        })(),
        config.connectTimeoutMs,
      );
    } catch (err) {
      kafka = undefined;
      admin = undefined;
      const p = producer;
      producer = undefined;
      void p?.then((x) => x.disconnect()).catch(() => {});
      void a.disconnect().catch(() => {});
      throw unavailable(err, `cannot reach brokers ${config.brokers.join(',')} or prepare topic ${topic}`);
    }
  }

  return {
    kind: 'kafka',
    capabilities,

    connect() {
      connecting ??= doConnect().catch((err: unknown) => {
        connecting = undefined;
        throw err;
      });
      return connecting;
    },

    async ping() {
      const a = admin;
      if (!a || closed) throw closedError();
      try {
        await withTimeout(a.describeCluster(), Math.min(config.connectTimeoutMs, PING_TIMEOUT_MS));
      } catch (err) {
        throw unavailable(err, 'no answer to a cluster description request');
      }
    },

    producer() {
      return {
        publish: (message) => enqueue([toRecord(message)]),
        publishBatch: (messages) => enqueue(messages.map(toRecord)),
      };
    },

    consumer() {
      const c = new GroupConsumer();
      consumers.add(c);
      return c;
    },

    close() {
      closing ??= (async () => {
        closed = true;
        shutdown.abort();
        // Settles started before close() take effect (a nack re-publishes at once), then members commit and leave,
        // then the accepted publishes (re-publishes included) are confirmed before the producer goes.
        await Promise.allSettled([...settling]);
        await Promise.allSettled([...consumers].map((c) => c.shutdown()));
        consumers.clear();
        await drainPublishes();
        const p = producer;
        producer = undefined;
        await p?.then((x) => x.disconnect()).catch(() => {});
        await admin?.disconnect().catch(() => {});
        admin = undefined;
        kafka = undefined;
      })();
      return closing;
    },
  };
}

interface Claims {
  readonly id: string;
  readonly owned: readonly number[];
  readonly busy: readonly number[];
}

/**
 * Sticky, in-flight-aware split of `partitions` over members (sorted by id, as every leader sorts them):
 *   1. each member keeps the partitions it holds unsettled deliveries on, up to ceil(P / n);
 *   2. then the rest of what it owned, up to floor(P / n);
 *   3. what is left goes, in partition order, to whoever has fewest.
 * Counts end within one of each other unless step 1 had to keep more (it never keeps more than ceil(P / n)).
 */
export function assignPartitions(partitions: readonly number[], members: readonly Claims[]): Map<string, number[]> {
  const sorted = [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const out = new Map<string, number[]>(sorted.map((m) => [m.id, []]));
  if (sorted.length === 0) return out;
  const exists = new Set(partitions);
  const taken = new Set<number>();
  const give = (id: string, p: number) => {
    taken.add(p);
    (out.get(id) as number[]).push(p);
  };
  const ceil = Math.ceil(partitions.length / sorted.length);
  const floor = Math.floor(partitions.length / sorted.length);
  for (const [claim, cap] of [['busy', ceil], ['owned', floor]] as const) {
    for (const m of sorted) {
      for (const p of m[claim]) {
        if ((out.get(m.id) as number[]).length >= cap) break;
        if (exists.has(p) && !taken.has(p)) give(m.id, p);
      }
    }
  }
  for (const p of [...partitions].sort((a, b) => a - b)) {
    if (taken.has(p)) continue;
    let fewest = sorted[0] as Claims;
    for (const m of sorted) if ((out.get(m.id) as number[]).length < (out.get(fewest.id) as number[]).length) fewest = m;
    give(fewest.id, p);
  }
  for (const ps of out.values()) ps.sort((a, b) => a - b);
  return out;
}

function parseClaims(userData: Buffer | undefined): { owned: number[]; busy: number[] } {
  const ints = (v: unknown) => (Array.isArray(v) ? v.filter((n): n is number => Number.isSafeInteger(n) && n >= 0) : []);
  try {
    const parsed = JSON.parse(userData?.toString('utf8') || '{}') as { owned?: unknown; busy?: unknown };
    return { owned: ints(parsed.owned), busy: ints(parsed.busy) };
  } catch {
    return { owned: [], busy: [] };
  }
}

/** The first unsettled tracked offset, else the next one to fetch; -1 when nothing is known yet. */
function commitPoint(st: PartitionState): number {
  while (st.head < st.entries.length && (st.entries[st.head] as Tracked).settled) st.head += 1;
  if (st.head > 1_024 && st.head * 2 > st.entries.length) {
    st.entries = st.entries.slice(st.head);
    st.head = 0;
  }
  const first = st.entries[st.head];
  if (first) return first.offset;
  return st.position >= 0 ? st.position : st.committed;
}

function countAt(ranges: readonly Range[], offset: number): number {
  for (const [from, to, count] of ranges) if (offset >= from && offset < to) return count;
  return 0;
}

/** Receive counts for offsets ≥ `from`: earlier owners' ranges plus one for [ownFrom, ownTo). */
function handOutRanges(prior: readonly Range[], ownFrom: number, ownTo: number, from: number): Range[] {
  const cuts = new Set<number>([from]);
  for (const [a, b] of prior) cuts.add(a).add(b);
  if (ownFrom >= 0 && ownTo > ownFrom) cuts.add(ownFrom).add(ownTo);
  const points = [...cuts].filter((x) => x >= from).sort((a, b) => a - b);
  const out: Range[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const a = points[i] as number;
    const b = points[i + 1] as number;
    const count = countAt(prior, a) + (a >= ownFrom && a < ownTo ? 1 : 0);
    if (count === 0) continue;
    const last = out[out.length - 1];
    if (last && last[1] === a && last[2] === count) last[1] = b;
    else out.push([a, b, count]);
  }
  return out.slice(0, MAX_META_RANGES);
}

/** Commit metadata written by handOutRanges; anything else (another tool's metadata) counts as none. */
function parseMeta(metadata: string | null | undefined, committed: number): Range[] {
  if (!metadata) return [];
  try {
    const parsed = JSON.parse(metadata) as { v?: unknown; r?: unknown };
    if (parsed.v !== 1 || !Array.isArray(parsed.r)) return [];
    return parsed.r.filter(
      (r): r is Range =>
        Array.isArray(r) && r.length === 3 && r.every((n) => Number.isSafeInteger(n) && n >= 0) && r[0] < r[1] && r[1] > committed && r[2] > 0,
    );
  } catch {
    return [];
  }
}

function headerText(value: Buffer | string | (Buffer | string)[] | undefined): string | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  return v === undefined ? undefined : v.toString();
}

function isRebalanceError(err: unknown): boolean {
  for (let e = err as { type?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.type === 'string' && REBALANCE_ERRORS.has(e.type)) return true;
  }
  return false;
}

function kafkaLog(logger: Logger, { namespace, level, log }: LogEntry): void {
  const { message, timestamp: _t, logger: _l, ...extra } = log as typeof log & { logger?: unknown };
  const fields = { kafkajs: namespace, ...extra };
  if (QUIET_LOGS.some((re) => re.test(message) || (typeof extra.error === 'string' && re.test(extra.error)))) logger.debug(fields, message);
  else if (level <= 1) logger.error(fields, message);
  else logger.warn(fields, message);
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', `kafka: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
