/**
 * Redis Streams queue (ioredis): one stream, one consumer group of workers.
 *
 * - publish = XADD (auto-pipelined) of a copy of the body. What a confirmed publish survives depends on the server's
 *   persistence, read at connect: AOF with `appendfsync always` survives power loss; `everysec` may lose the last
 *   second; no AOF loses everything on restart (the shared test Redis runs like that). `connect()` logs which applies.
 * - receive = first take over entries another consumer left idle past the visibility timeout (XPENDING + XCLAIM:
 *   that consumer died), then XREADGROUP new ones, blocking on a connection of the consumer's own. The block is cut
 *   into slices (a quarter of the visibility timeout, at most 1 s) so a waiting consumer also notices entries that
 *   expire while it waits. An abort unblocks the read with CLIENT UNBLOCK (or, failing that, drops the connection).
 * - ack = XACK + XDEL in one script that first checks this consumer still owns the entry, so a consumer whose entry
 *   was taken over gets ROUTER_ERR_LEASE_LOST instead of acking the new holder's copy. Deleting acked entries keeps
 *   the stream as small as the backlog.
 * - nack = the same check, then the script re-adds the entry's fields at the tail (server side: the body does not
 *   travel again) with its receive count, and removes the old one: redelivery is immediate. With `delayMs` the entry
 *   stays pending, its lease renewed in this process until the delay is over, then it is re-added; should the
 *   process die (or the adapter close) first, it is taken over after the visibility timeout.
 * - extendDeadline(ms) = the same check, then XCLAIM to ourselves with IDLE set so the lease ends in `ms`; a lease
 *   longer than the visibility timeout is kept alive from this process (Redis clamps future delivery times to now).
 * - receiveCount = re-adds carried in the entry + Redis's own delivery counter of the current entry.
 * - If the stream or group disappears (a Redis restart without persistence, a FLUSHALL), NOGROUP errors recreate
 *   them and consuming goes on (svix/svix-webhooks#1844 is the stuck-worker bug this avoids).
 * - Failing fast: the command connection has no offline queue and no retries, so while Redis is away commands reject
 *   at once (ROUTER_ERR_QUEUE_UNAVAILABLE; the receiver answers 503), commands in flight when the connection drops
 *   reject when it drops, and a server that stops answering is cut off after `connectTimeoutMs`. ioredis reconnects
 *   in the background; consuming resumes once it is back.
 * - close() stops the consumers, waits (bounded) for the publishes and settles issued before it, then quits.
 *
 * Needs Redis 6.2 or later (XPENDING … IDLE).
 */
import { hostname } from 'node:os';
import { Redis, type RedisOptions } from 'ioredis';
import type { QueueConfig } from '../../config/schema.ts';
import { RouterError } from '../../src/errors.ts';
import { type Logger, silentLogger } from '../../src/logger.ts';
import type { QueueAdapter, QueueCapabilities, QueueConsumer, QueueDelivery, QueueMessage, ReceiveOptions } from './port.ts';

export type RedisStreamsConfig = Extract<QueueConfig, { kind: 'redis' }>;

/**
 * Shared prologue: `p` is the entry's PEL record. A vanished stream or group (NOGROUP) counts as "not ours".
 * KEYS[1] stream; ARGV[1] group, ARGV[2] id, ARGV[3] consumer.
 */
const OWNER_CHECK = `
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if p.err or #p == 0 or p[1][2] ~= ARGV[3] then return -1 end`;

/** -1 when the entry is no longer ours. */
const OWNED_ACK = `${OWNER_CHECK}
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1`;

/** ARGV[4]: receives so far. Re-adds the entry's fields at the tail with 'r' replaced; -1 when not ours. */
const OWNED_REQUEUE = `${OWNER_CHECK}
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if #e == 0 then return -1 end
local f = e[1][2]
local out = {}
for i = 1, #f, 2 do
  if f[i] ~= 'r' then
    out[#out + 1] = f[i]
    out[#out + 1] = f[i + 1]
  end
end
out[#out + 1] = 'r'
out[#out + 1] = ARGV[4]
redis.call('XADD', KEYS[1], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[2])
return 1`;

/** ARGV[4]: the idle time to set, i.e. the lease then ends visibilityTimeout - idle from now. -1 when not ours. */
const OWNED_TOUCH = `${OWNER_CHECK}
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[4], 'JUSTID')
return 1`;

/** KEYS[1] stream; ARGV: group, consumer. Forgets a consumer that holds nothing (names would pile up otherwise). */
const RELEASE_CONSUMER = `
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if p.err or #p > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])`;

type RawEntry = [id: Buffer, fields: Buffer[] | null];

interface RedisWithScripts extends Redis {
  ownedAck(stream: string, group: string, id: string, consumer: string): Promise<number>;
  ownedRequeue(stream: string, group: string, id: string, consumer: string, receives: number): Promise<number>;
  ownedTouch(stream: string, group: string, id: string, consumer: string, idleMs: number): Promise<number>;
  releaseConsumer(stream: string, group: string, consumer: string): Promise<number>;
  /** Generated by ioredis for every command, but not in its typings. */
  xclaimBuffer(stream: string, group: string, consumer: string, minIdleMs: number, ...ids: string[]): Promise<unknown>;
}

/** A consumer's blocking connection and its server-side client id (for CLIENT UNBLOCK). */
interface BlockingConnection {
  readonly redis: Redis;
  id: number | undefined;
}

/** A lease kept alive from this process (extendDeadline past the visibility timeout, nack with a delay). */
interface Hold {
  cancel(): void;
}

/** After an abort, how long CLIENT UNBLOCK gets before the blocking connection is dropped instead. */
const ABORT_GRACE_MS = 100;

/** Consumer names are unique per process (two adapters in one process must not share one). */
let consumerSeq = 0;

export function createRedisStreamsQueue(config: RedisStreamsConfig, deps: { logger?: Logger } = {}): QueueAdapter {
  const logger = deps.logger ?? silentLogger;
  const vis = config.visibilityTimeoutMs;
  // Known only once connected: the server's persistence settings. Until then the safe answer, 'none'.
  let durability: QueueCapabilities['durability'] = 'none';
  const capabilities = {
    maxBatch: 1_000,
    maxMessageBytes: 64 * 1024 * 1024, // far below Redis's 512 MB string limit; bodies are capped at 25 MB upstream
    delayedPublish: false,
    nackRedelivery: 'immediate' as const,
    orderingKey: false,
    get durability() {
      return durability;
    },
  } satisfies QueueCapabilities;

  /** A command without an answer this long fails (and the connection is cut): a hung server is a down server. */
  const commandTimeoutMs = config.connectTimeoutMs;
  /** The longest single XREADGROUP block; between blocks, entries idle past the visibility timeout are taken over. */
  const sliceMs = Math.max(20, Math.min(1_000, Math.floor(vis / 4)));
  /** How often a lease held from this process is renewed. */
  const renewEveryMs = Math.max(20, Math.floor(vis / 3));

  const common: RedisOptions = {
    lazyConnect: true,
    connectTimeout: config.connectTimeoutMs,
    // Reconnect quickly and keep trying (the consumer resumes by itself), never slower than every 2 s.
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times - 1, 6), 2_000) + Math.floor(Math.random() * 100),
    // Commands in flight when the connection drops fail right away instead of waiting for reconnects, and are not
    // replayed on the new connection (a publish reported as failed must not be written later by the client).
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
  };
  const client = new Redis(config.url, {
    ...common,
    // While disconnected, commands reject at once: the receiver answers 503 instead of waiting.
    enableOfflineQueue: false,
    enableAutoPipelining: true,
    commandTimeout: commandTimeoutMs,
    socketTimeout: commandTimeoutMs,
    connectionName: 'webhook-router-queue',
  }) as RedisWithScripts;
  for (const [name, lua] of [
    ['ownedAck', OWNED_ACK],
    ['ownedRequeue', OWNED_REQUEUE],
    ['ownedTouch', OWNED_TOUCH],
    ['releaseConsumer', RELEASE_CONSUMER],
  ] as const) {
    client.defineCommand(name, { numberOfKeys: 1, lua });
  }

  let connecting: Promise<void> | undefined;
  let connected = false;
  let closing: Promise<void> | undefined;
  let connectionLost = false;
  const consumers = new Set<RedisConsumer>();
  /** Publishes, settles and lease renewals under way: close() lets them finish. */
  const inflight = new Set<Promise<unknown>>();
  const holds = new Set<Hold>();

  client.on('error', (err: Error) => logger.debug({ err }, 'redis queue connection error'));
  client.on('close', () => {
    if (connected && !closing && !connectionLost) {
      connectionLost = true;
      logger.warn({ stream: config.stream }, 'redis queue connection lost; reconnecting');
    }
  });
  client.on('ready', () => {
    if (connectionLost) logger.info({ stream: config.stream }, 'redis queue connection restored');
    connectionLost = false;
  });

  const closed = () => new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'redis queue is closed');
  const unavailable = (err: unknown) =>
    err instanceof RouterError ? err : new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', 'redis did not answer', { cause: err });
  const notConnected = () => new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', 'redis queue is not connected (call connect() first)');
  const isNoGroup = (err: unknown) => String((err as Error | undefined)?.message).includes('NOGROUP');

  function track<T>(promise: Promise<T>): Promise<T> {
    inflight.add(promise);
    const done = () => inflight.delete(promise);
    promise.then(done, done);
    return promise;
  }

  async function ensureGroup(): Promise<void> {
    try {
      // From id 0: entries published before the group existed (or after it vanished) are consumed too.
      await client.xgroup('CREATE', config.stream, config.group, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  async function readDurability(): Promise<QueueCapabilities['durability']> {
    try {
      const [, appendonly] = (await client.config('GET', 'appendonly')) as string[];
      const [, fsync] = (await client.config('GET', 'appendfsync')) as string[];
      return appendonly === 'yes' ? (fsync === 'always' ? 'power-loss' : 'process-crash') : 'none';
    } catch (err) {
      // Managed services often refuse CONFIG; assume the worst rather than fail.
      logger.warn({ err }, 'cannot read the redis persistence settings (CONFIG GET failed); assuming no durability');
      return 'none';
    }
  }

  function publish(message: QueueMessage): Promise<void> {
    if (closing) return Promise.reject(closed());
    if (!connected) return Promise.reject(notConnected());
    // A copy: the command may wait for the next tick (auto-pipelining) and the caller may reuse its buffer.
    const body = Buffer.from(message.body);
    return track(
      client.xadd(config.stream, '*', 'k', message.key ?? '', 'b', body, 'r', '0').then(
        () => undefined,
        (err: unknown) => {
          throw unavailable(err);
        },
      ),
    );
  }

  function publishBatch(messages: readonly QueueMessage[]): Promise<void> {
    if (closing) return Promise.reject(closed());
    return Promise.all(messages.map(publish)).then(() => undefined);
  }

  /**
   * Keeps a lease from this process: `step(now)` renews it (or finishes the job) and returns when to run next, in ms,
   * or undefined to stop. Its timers never keep the process alive; close() cancels them.
   */
  function holdLease(step: (now: number) => Promise<number | undefined>, firstInMs: number): Hold {
    let timer: NodeJS.Timeout | undefined;
    let cancelled = false;
    const hold: Hold = {
      cancel() {
        cancelled = true;
        clearTimeout(timer);
        holds.delete(hold);
      },
    };
    const schedule = (ms: number) => {
      timer = setTimeout(() => {
        if (cancelled || closing) return hold.cancel();
        track(step(Date.now())).then(
          (next) => (next !== undefined && !cancelled ? schedule(next) : hold.cancel()),
          (err: unknown) => {
            logger.debug({ err }, 'renewing a redis queue lease failed; trying again');
            if (!cancelled) schedule(renewEveryMs);
          },
        );
      }, Math.max(0, ms));
      timer.unref();
    };
    holds.add(hold);
    schedule(firstInMs);
    return hold;
  }

  class RedisConsumer implements QueueConsumer {
    readonly name = `${config.consumerPrefix || hostname()}-${process.pid}-${++consumerSeq}`;
    #blocking: BlockingConnection | undefined;
    #closed = false;
    #used = false;

    async receive(opts: ReceiveOptions): Promise<QueueDelivery[]> {
      const signal = opts.signal;
      const stopped = () => this.#closed || closing !== undefined || signal?.aborted === true;
      if (stopped()) return [];
      if (!connected) throw notConnected();
      this.#used = true;
      const max = Math.max(1, Math.min(opts.max, capabilities.maxBatch));
      const deadline = Date.now() + Math.max(0, opts.waitMs);
      for (;;) {
        try {
          const taken = await this.#takeOver(max);
          if (taken.length > 0) return taken;
          if (stopped()) return [];
          const got = await this.#readNew(max, Math.min(deadline - Date.now(), sliceMs), signal);
          if (got.length > 0) return got;
        } catch (err) {
          if (stopped()) return [];
          if (!isNoGroup(err)) throw unavailable(err);
          logger.warn({ stream: config.stream, group: config.group }, 'redis stream or group vanished; recreating it');
          try {
            await ensureGroup();
          } catch (again) {
            throw unavailable(again);
          }
        }
        if (stopped() || Date.now() >= deadline) return [];
      }
    }

    /** Entries idle past the visibility timeout belong to a consumer that died: claim them. */
    async #takeOver(max: number): Promise<QueueDelivery[]> {
      const pending = (await client.xpending(config.stream, config.group, 'IDLE', vis, '-', '+', max)) as [
        string,
        string,
        number,
        number,
      ][];
      if (pending.length === 0) return [];
      const counts = new Map(pending.map(([id, , , count]) => [id, Number(count)]));
      // XCLAIM re-checks the idle time, so of two consumers racing for an entry only one gets it.
      // Not call()/callBuffer(): with auto-pipelining ioredis drops their command name.
      const claimed = (await client.xclaimBuffer(
        config.stream,
        config.group,
        this.name,
        vis,
        ...pending.map(([id]) => id),
      )) as (RawEntry | null)[];
      const out: QueueDelivery[] = [];
      for (const entry of claimed) {
        if (!entry?.[1]) continue; // deleted meanwhile
        const id = entry[0].toString();
        out.push(this.#delivery(id, entry[1], (counts.get(id) ?? 0) + 1));
      }
      return out;
    }

    #connection(): BlockingConnection {
      if (this.#blocking) return this.#blocking;
      const redis = new Redis(config.url, {
        ...common,
        enableOfflineQueue: true, // the first read connects it
        // Guards against a connection that silently died: a block never outlasts its BLOCK time by this much.
        blockingTimeout: commandTimeoutMs,
        blockingTimeoutGrace: commandTimeoutMs,
        socketTimeout: sliceMs + commandTimeoutMs,
        connectionName: `webhook-router-queue:${this.name}`,
      });
      const conn: BlockingConnection = { redis, id: undefined };
      redis.on('error', (err: Error) => logger.debug({ err, consumer: this.name }, 'redis queue consumer connection error'));
      redis.on('close', () => {
        conn.id = undefined;
      });
      this.#blocking = conn;
      return conn;
    }

    #drop(conn: BlockingConnection): void {
      if (this.#blocking === conn) this.#blocking = undefined;
      conn.redis.disconnect();
    }

    async #readNew(max: number, blockMs: number, signal: AbortSignal | undefined): Promise<QueueDelivery[]> {
      const conn = this.#connection();
      if (conn.id === undefined) conn.id = Number(await conn.redis.call('CLIENT', 'ID'));
      if (this.#closed || closing || signal?.aborted) return [];
      const block = Math.ceil(blockMs);
      const read = conn.redis.callBuffer(
        'xreadgroup',
        'GROUP',
        config.group,
        this.name,
        'COUNT',
        max,
        ...(block > 0 ? ['BLOCK', block] : []),
        'STREAMS',
        config.stream,
        '>',
      ) as Promise<[stream: Buffer, entries: RawEntry[]][] | null>;
      let reply: [stream: Buffer, entries: RawEntry[]][] | null;
      if (!signal || block <= 0) {
        reply = await read;
      } else {
        let onAbort: (() => void) | undefined;
        const aborted = new Promise<null>((resolve) => {
          onAbort = () => {
            const id = conn.id;
            if (id !== undefined) client.client('UNBLOCK', id).catch(() => {});
            // Should the unblock not arrive (Redis away, a reconnect changed the id), give up on the connection.
            const fallback = setTimeout(() => {
              this.#drop(conn);
              resolve(null);
            }, ABORT_GRACE_MS);
            read.then(
              () => clearTimeout(fallback),
              () => clearTimeout(fallback),
            );
          };
          signal.addEventListener('abort', onAbort, { once: true });
        });
        try {
          reply = await Promise.race([read, aborted]);
        } finally {
          if (onAbort) signal.removeEventListener('abort', onAbort);
        }
      }
      const out: QueueDelivery[] = [];
      for (const [, entries] of reply ?? []) {
        for (const [id, fields] of entries) if (fields) out.push(this.#delivery(id.toString(), fields, 1));
      }
      return out;
    }

    #delivery(id: string, fields: Buffer[], redisCount: number): QueueDelivery {
      const field = (name: string) => {
        for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]?.toString() === name) return fields[i + 1];
        return undefined;
      };
      const key = field('k')?.toString() ?? '';
      // Its own copy (the reply buffer is shared by the whole batch); the redelivery after a nack is made from the
      // entry stored in Redis, so nothing the consumer writes to this buffer travels.
      const body = Buffer.from(field('b') ?? Buffer.alloc(0));
      const requeues = Number(field('r')?.toString() ?? '0') || 0;
      const receiveCount = requeues + redisCount;
      const owner = this.name;
      let settled = false;
      let hold: Hold | undefined;

      const alreadySettled = () => new RouterError('ROUTER_ERR_ALREADY_SETTLED', `message ${id} was already settled`);
      const leaseLost = () => new RouterError('ROUTER_ERR_LEASE_LOST', `message ${id} was taken over by another consumer`);
      const run = async (command: () => Promise<number>): Promise<void> => {
        let result: number;
        try {
          result = await command();
        } catch (err) {
          throw unavailable(err);
        }
        if (result !== 1) throw leaseLost();
      };
      const touch = (idleMs: number) => client.ownedTouch(config.stream, config.group, id, owner, Math.max(0, Math.round(idleMs)));
      const requeue = () => client.ownedRequeue(config.stream, config.group, id, owner, receiveCount);
      const settle = (fn: () => Promise<void>): Promise<void> => {
        if (settled) return Promise.reject(alreadySettled());
        if (closing) return Promise.reject(closed());
        settled = true;
        hold?.cancel();
        return track(fn());
      };

      return {
        body,
        key: key === '' ? undefined : key,
        brokerId: id,
        receiveCount,
        ack: () => settle(() => run(() => client.ownedAck(config.stream, config.group, id, owner))),
        nack: (options) =>
          settle(async () => {
            const delayMs = options?.delayMs ?? 0;
            if (delayMs <= 0) return run(requeue);
            // Still ours? Renew the lease, then keep it until the delay is over and re-add the entry.
            await run(() => touch(0));
            const due = Date.now() + delayMs;
            hold = holdLease(async (now) => {
              if (now < due) return (await touch(0)) === 1 ? Math.min(due - now, renewEveryMs) : undefined;
              const result = await requeue().catch((err: unknown) => {
                logger.warn({ err, id }, 'a delayed nack could not re-add its entry; it comes back after the visibility timeout');
                return 1;
              });
              if (result !== 1) logger.debug({ id }, 'a delayed nack found its entry taken over');
              return undefined;
            }, Math.min(delayMs, renewEveryMs));
          }),
        extendDeadline: (ms) => {
          if (settled) return Promise.reject(alreadySettled());
          if (closing) return Promise.reject(closed());
          hold?.cancel();
          return track(
            (async () => {
              const until = Date.now() + ms;
              // The lease after a touch ends visibilityTimeout - idle from now.
              await run(() => touch(vis - ms));
              if (settled || closing || ms <= vis) return;
              hold = holdLease(async (now) => {
                const left = until - now;
                const result = await touch(vis - left);
                return result === 1 && left > vis ? Math.min(left - vis, renewEveryMs) : undefined;
              }, Math.min(ms - vis, renewEveryMs));
            })(),
          );
        },
      };
    }

    async close(): Promise<void> {
      if (this.#closed) return;
      this.#closed = true;
      consumers.delete(this);
      // Disconnecting makes a waiting receive return [] at once; deliveries still settle over the shared connection.
      if (this.#blocking) this.#drop(this.#blocking);
      if (this.#used && client.status === 'ready') {
        await track(client.releaseConsumer(config.stream, config.group, this.name)).catch(() => {});
      }
    }
  }

  return {
    kind: 'redis',
    capabilities,

    connect() {
      if (closing) return Promise.reject(closed());
      connecting ??= (async () => {
        try {
          await client.connect();
          await ensureGroup();
          durability = await readDurability();
        } catch (err) {
          client.disconnect(); // no reconnect loop behind a failed connect()
          connecting = undefined;
          if (closing) throw closed();
          throw new RouterError('ROUTER_ERR_QUEUE_UNAVAILABLE', `cannot reach redis at ${redactUrl(config.url)}`, { cause: err });
        }
        connected = true;
        const log = durability === 'power-loss' ? logger.info.bind(logger) : logger.warn.bind(logger);
        log(
          { stream: config.stream, group: config.group, durability },
          durability === 'power-loss'
            ? 'redis queue ready'
            : 'redis queue ready, but redis does not fsync every write (appendonly yes + appendfsync always): a redis crash can lose accepted webhooks',
        );
      })();
      return connecting;
    },

    async ping() {
      if (closing) throw closed();
      if (!connected) throw notConnected();
      try {
        await client.ping();
      } catch (err) {
        throw unavailable(err);
      }
    },

    producer() {
      return { publish, publishBatch };
    },

    consumer() {
      const consumer = new RedisConsumer();
      if (!closing) consumers.add(consumer);
      return consumer;
    },

    close() {
      closing ??= (async () => {
        await Promise.all([...consumers].map((c) => c.close()));
        for (const h of [...holds]) h.cancel();
        // Publishes and settles issued before close() finish first (each is bounded by the command timeout).
        const deadline = Date.now() + commandTimeoutMs + 1_000;
        while (inflight.size > 0 && Date.now() < deadline) {
          await within(Promise.allSettled([...inflight]), deadline - Date.now());
        }
        if (client.status === 'ready') await within(client.quit().catch(() => {}), 1_000);
        client.disconnect();
        connected = false;
      })();
      return closing;
    },
  };
}

/** Resolves when `promise` settles or after `ms`, whichever comes first. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, ms))))]);
  clearTimeout(timer);
}

function redactUrl(url: string): string {
  const parsed = URL.parse(url);
  if (!parsed) return 'the configured url';
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}
