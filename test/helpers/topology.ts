/**
 * A multi-process router topology for fault tests and end-to-end benchmarks (reliability.md §5 harness), driven
 * only through the CLI and the configuration: `node src/main.ts migrate|api|receiver|worker --config <tmp.yaml>`,
 * each role a separate child process on 127.0.0.1 (every listener on port 0; the bound ports are read from the
 * `webhook-router started` log line). Nothing here imports an adapter: the queue and the store are whatever the
 * configuration names, and subscribers are created through the REST API (POST /v1/subscribers).
 *
 * Pieces, shared by test/e2e/topology.test.ts and benchmarks/end-to-end/topology.ts:
 *
 * - **Workload**: GitHub `push` and `pull_request` fixtures (@octokit/webhooks-examples) with a repository and a
 *   branch per event, and four subscribers with overlapping filters (one with a short custom retry schedule). An
 *   event fans out to 0–3 of them; `matches` is a reference matcher written here, independent of the router's.
 * - **Children**: spawned with `process.execPath` (optionally under `taskset -c`), tracked in a module-level set so
 *   `killAllChildren()` (call it from `after`) SIGKILLs every one still alive by its PID, even when a test failed.
 * - **Ledger sink**: a `node:http` server on 127.0.0.1 playing every subscriber (path `/s/<name>`). Each request is
 *   recorded compactly (subscriber, X-GitHub-Delivery, webhook-id, webhook-attempt, arrival time, answer) and
 *   counted incrementally, so waiting on "every expected pair arrived" costs O(1) per arrival even at saturation.
 *   Signatures (`standardwebhooks`) are verified when the subscriber's secret is known.
 * - **Sent ledger**: one entry per event (first send time, tries, last status, event id from the 2xx answer); a
 *   connection error or 5xx is re-sent with the same ids, to the other receiver, as a redelivery script would.
 * - **Reconciler**: E expected pairs of accepted events (reference matcher), R pairs answered 2xx at the sink,
 *   D dead letters (GET /v1/dlq): missing = E − R − D, spurious = arrivals the matcher did not expect, duplicates =
 *   Σ (2xx count − 1), latency = first send → first 2xx arrival (same process, same monotonic clock).
 * - **Backends**: probes for PostgreSQL, Redis and Kafka with their client libraries (pg, ioredis, kafkajs), and
 *   clean-up of what a run created (schema, stream, topic and group).
 *
 * Every address is 127.0.0.1; every wait is bounded.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Agent, type Dispatcher, request } from 'undici';
import { Webhook } from 'standardwebhooks';
import type { z } from 'zod';
import type { Config } from '../../config/schema.ts';
import { githubRequest, deliveryId as newGuid, type SignedRequest } from './sign.ts';

export type ConfigInput = z.input<typeof Config>;

const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const MAIN = join(REPO, 'src', 'main.ts');

// ---------------------------------------------------------------------------------------------------------------
// Workload: events, subscribers and the reference matcher

export interface TopoEvent {
  readonly i: number;
  readonly event: 'push' | 'pull_request';
  readonly repo: string;
  readonly branch: string;
  /** X-GitHub-Delivery: unique per event; identifies the event at the sink. */
  readonly guid: string;
  readonly hookId: number;
}

const HOOK_IDS = [21, 22, 23];
/** Three in four events are acme/*; seven repositories, so Kafka's per-repository keys spread over the partitions. */
const REPOS = ['other/x', 'acme/api', 'acme/web', 'acme/web', 'other/y', 'acme/cli', 'acme/docs', 'acme/app'];

export function makeEvent(i: number): TopoEvent {
  return {
    i,
    event: i % 3 === 0 ? 'pull_request' : 'push',
    repo: REPOS[i % REPOS.length]!,
    branch: i % 5 === 0 ? 'dev' : 'main',
    guid: newGuid(),
    hookId: HOOK_IDS[i % HOOK_IDS.length]!,
  };
}

// biome-ignore lint/suspicious/noExplicitAny: fixture JSON edited in place
type Json = Record<string, any>;
const examples = createRequire(import.meta.url)('@octokit/webhooks-examples') as { name: string; examples: Json[] }[];
const fixture = (name: string, index: number): Json => examples.find((d) => d.name === name)!.examples[index]!;
const PUSH = fixture('push', 4);
const PULL_REQUEST = fixture('pull_request', 14);

export function payloadOf(e: TopoEvent): Json {
  const p = structuredClone(e.event === 'push' ? PUSH : PULL_REQUEST);
  const [owner, name] = e.repo.split('/');
  p.repository.full_name = e.repo;
  p.repository.name = name;
  p.repository.owner.login = owner;
  if (e.event === 'push') {
    p.ref = `refs/heads/${e.branch}`;
    p.head_commit.message = `event ${e.i}`;
  } else {
    p.pull_request.base.ref = e.branch;
    p.pull_request.title = `event ${e.i}`;
  }
  return p;
}

/** The signed request for an event; the same bytes and ids on every re-send. */
export function signedEvent(e: TopoEvent, secret: string): SignedRequest {
  return githubRequest({ secret, body: JSON.stringify(payloadOf(e)), event: e.event, delivery: e.guid, hookId: e.hookId });
}

export interface SubscriberPlan {
  readonly name: string;
  readonly filter: { events?: string[]; repositories?: string[]; branches?: string[] };
  readonly retry?: { schedule: number[]; maxAttempts: number };
  readonly matches: (e: TopoEvent) => boolean;
}

/** Four subscribers with overlapping filters: an event fans out to 0–3 of them (2.4 on average). */
export const SUBSCRIBER_PLANS: readonly SubscriberPlan[] = [
  { name: 'push', filter: { events: ['push'] }, matches: (e) => e.event === 'push' },
  { name: 'acme', filter: { repositories: ['acme/*'] }, matches: (e) => e.repo.startsWith('acme/') },
  { name: 'main', filter: { branches: ['main'] }, matches: (e) => e.branch === 'main' },
  {
    name: 'retry',
    filter: { events: ['pull_request'], repositories: ['acme/*'] },
    // Seconds between attempts: a failed first attempt is retried about 0.5 s later.
    retry: { schedule: [0.5, 1, 2], maxAttempts: 5 },
    matches: (e) => e.event === 'pull_request' && e.repo.startsWith('acme/'),
  },
];

export const sinkPath = (name: string) => `/s/${name}`;

export const pairKey = (guid: string, sub: string) => `${guid}|${sub}`;

/** A fixed share (1/`oneIn`) of webhook-ids, by hash: the same delivery is picked on every attempt. */
export const pickedByHash = (webhookId: string, oneIn: number) => createHash('sha256').update(webhookId).digest()[0]! % oneIn === 0;

// ---------------------------------------------------------------------------------------------------------------
// Configuration

export interface Credentials {
  readonly webhookSecret: string;
  readonly adminToken: string;
  readonly encryptionKey: string;
}

export function newCredentials(): Credentials {
  return {
    webhookSecret: randomBytes(24).toString('base64url'),
    adminToken: `topo_${randomBytes(24).toString('base64url')}`,
    encryptionKey: randomBytes(32).toString('base64'),
  };
}

export interface TopologyConfigOptions {
  readonly queue: ConfigInput['queue'];
  readonly store: ConfigInput['store'];
  readonly credentials: Credentials;
  readonly delivery?: ConfigInput['delivery'];
  readonly worker?: ConfigInput['worker'];
  readonly receiver?: ConfigInput['receiver'];
  readonly logLevel?: 'info' | 'warn' | 'error';
  readonly shutdownGraceMs?: number;
}

/** The configuration every role of one topology shares; every listener on 127.0.0.1 port 0. */
export function topologyConfig(o: TopologyConfigOptions): ConfigInput {
  return {
    listen: { webhooks: 0, api: 0, management: 0, host: '127.0.0.1' },
    queue: o.queue,
    store: o.store,
    sources: [{ id: 'github', kind: 'github', secrets: [o.credentials.webhookSecret] }],
    receiver: o.receiver ?? {},
    egress: { allow: ['127.0.0.1/32'] },
    delivery: o.delivery ?? {},
    worker: o.worker ?? {},
    api: { tokens: [{ name: 'topology-admin', token: o.credentials.adminToken, scopes: ['*'] }] },
    secrets: { encryptionKey: o.credentials.encryptionKey },
    // `info` is needed: readiness is read from the `webhook-router started` line.
    log: { level: o.logLevel ?? 'info' },
    shutdownGraceMs: o.shutdownGraceMs ?? 2_000,
  } satisfies ConfigInput;
}

/** Writes the configuration (JSON is YAML) and returns its path. */
export function writeConfig(dir: string, config: ConfigInput, file = 'router.yaml'): string {
  const path = join(dir, file);
  writeFileSync(path, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  return path;
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

export type Role = 'receiver' | 'worker' | 'api';

export interface RouterChild {
  readonly role: Role;
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly ports: { webhooks?: number; api?: number; management?: number };
  /** The last 300 lines of stdout and stderr. */
  readonly lines: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** performance.now() when the start line was seen. */
  readonly startedAt: number;
  alive(): boolean;
}

const live = new Set<ChildProcess>();

function childEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ROUTER_') && !k.startsWith('NODE_TEST')) env[k] = v;
  env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
  return { ...env, ...extra };
}

function spawnRouter(args: string[], cwd: string, taskset: string | undefined): ChildProcess {
  const argv = [MAIN, ...args];
  // taskset execs node, so the PID is node's.
  const child = taskset
    ? spawn('taskset', ['-c', taskset, process.execPath, ...argv], { cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, argv, { cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** Runs a one-shot CLI command (`migrate`, `config check`) to its end; bounded. */
export async function runCli(args: string[], cwd: string, timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnRouter(args, cwd, undefined);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Starts one role and resolves once it logged `webhook-router started` with its bound ports (bounded). */
export function startRole(role: Role, configPath: string, o: { cwd: string; name: string; taskset?: string; startTimeoutMs?: number }): Promise<RouterChild> {
  const child = spawnRouter([role, '--config', configPath], o.cwd, o.taskset);
  const lines: string[] = [];
  const keep = (line: string) => {
    lines.push(line);
    if (lines.length > 300) lines.shift();
  };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  createInterface({ input: child.stderr! }).on('line', keep);
  const limit = o.startTimeoutMs ?? 30_000;
  let started = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`${o.name} (${role}) did not start within ${limit} ms:\n${lines.slice(-30).join('\n')}`));
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, limit);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!started) reject(new Error(`${o.name} (${role}) exited during start-up (${code ?? signal}):\n${lines.slice(-30).join('\n')}`));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      keep(line);
      if (!line.includes('webhook-router started')) return;
      let entry: { msg?: string; ports?: RouterChild['ports'] };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        return;
      }
      if (entry.msg !== 'webhook-router started') return;
      clearTimeout(timer);
      started = true;
      resolve({
        role,
        name: o.name,
        child,
        pid: child.pid!,
        ports: entry.ports ?? {},
        lines,
        exited,
        startedAt: performance.now(),
        alive: () => child.exitCode === null && child.signalCode === null,
      });
    });
  });
}

/** Signals one child by its PID and waits for its exit; SIGKILL after timeoutMs. */
export async function stopChild(c: RouterChild, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5_000): Promise<void> {
  if (!c.alive()) return;
  process.kill(c.pid, signal);
  const timer = setTimeout(() => {
    if (c.alive()) process.kill(c.pid, 'SIGKILL');
  }, timeoutMs);
  await c.exited;
  clearTimeout(timer);
}

/** SIGKILLs every child this module started that is still alive, each by its own PID (for `after`). */
export async function killAllChildren(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const child of live) {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) continue;
    waits.push(new Promise((resolve) => child.once('exit', resolve)));
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await Promise.race([Promise.all(waits), sleep(5_000)]);
}

// ---------------------------------------------------------------------------------------------------------------
// The topology

export interface Topology {
  readonly dir: string;
  readonly configPath: string;
  readonly api: RouterChild;
  readonly apiUrl: string;
  readonly receivers: RouterChild[];
  readonly workers: RouterChild[];
  /** http://127.0.0.1:<port>/webhooks/github of each receiver. */
  readonly receiverUrls: string[];
  readonly migrateOutput: string;
  /** Starts a new worker process in slot i (after the old one was killed). */
  restartWorker(i: number): Promise<RouterChild>;
  /** Every child's last log lines (for a failure message). */
  logs(maxLines?: number): string;
  /** SIGTERM (SIGKILL after 5 s) to receivers, then workers, then the API. */
  stop(): Promise<void>;
}

export interface TopologyOptions {
  readonly dir: string;
  readonly config: ConfigInput;
  readonly receivers: number;
  readonly workers: number;
  /** Runs once the API is up, before any receiver or worker starts (create subscribers here). */
  readonly setup?: (apiUrl: string) => Promise<void>;
  /** CPU list for every router process (`taskset -c`); unset: no pinning. */
  readonly taskset?: string;
}

export async function startTopology(o: TopologyOptions): Promise<Topology> {
  const configPath = writeConfig(o.dir, o.config);
  const migrated = await runCli(['migrate', '--config', configPath], o.dir, 60_000);
  if (migrated.code !== 0) throw new Error(`migrate exited with ${migrated.code}:\n${migrated.stdout}${migrated.stderr}`);
  const ts = o.taskset === undefined ? {} : { taskset: o.taskset };
  const api = await startRole('api', configPath, { cwd: o.dir, name: 'api', ...ts });
  const apiUrl = `http://127.0.0.1:${api.ports.api}`;
  await o.setup?.(apiUrl);
  const [receivers, workers] = await Promise.all([
    Promise.all(Array.from({ length: o.receivers }, (_, i) => startRole('receiver', configPath, { cwd: o.dir, name: `receiver-${i + 1}`, ...ts }))),
    Promise.all(Array.from({ length: o.workers }, (_, i) => startRole('worker', configPath, { cwd: o.dir, name: `worker-${i + 1}`, ...ts }))),
  ]);
  const all = () => [api, ...receivers, ...workers];
  const restarts: RouterChild[] = [];
  return {
    dir: o.dir,
    configPath,
    api,
    apiUrl,
    receivers,
    workers,
    receiverUrls: receivers.map((r) => `http://127.0.0.1:${r.ports.webhooks}/webhooks/github`),
    migrateOutput: migrated.stdout.trim(),
    async restartWorker(i) {
      const w = await startRole('worker', configPath, { cwd: o.dir, name: `worker-${i + 1}'`, ...ts });
      restarts.push(workers[i]!);
      workers[i] = w;
      return w;
    },
    logs(maxLines = 15) {
      return [...all(), ...restarts].map((c) => `── ${c.name} (pid ${c.pid}) ──\n${c.lines.slice(-maxLines).join('\n')}`).join('\n');
    },
    async stop() {
      await Promise.all(receivers.map((c) => stopChild(c)));
      await Promise.all(workers.map((c) => stopChild(c)));
      await stopChild(api);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// REST API client

export interface ApiAnswer {
  readonly status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  readonly json: any;
}

export function apiClient(apiUrl: string, token: string) {
  return async function call(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<ApiAnswer> {
    const res = await request(`${apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const text = await res.body.text();
    let json: unknown = text;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.statusCode, json };
  };
}
export type ApiCall = ReturnType<typeof apiClient>;

export interface CreatedSubscriber {
  readonly name: string;
  readonly id: string;
  readonly secret: string;
  readonly plan: SubscriberPlan;
}

/** POST /v1/subscribers for every plan, each pointed at its sink path; `extra` fields (e.g. limits) go into every body. */
export async function createSubscribers(
  api: ApiCall,
  sinkOrigin: string,
  plans: readonly SubscriberPlan[],
  extra: Readonly<Record<string, unknown>> = {},
): Promise<CreatedSubscriber[]> {
  const created: CreatedSubscriber[] = [];
  for (const plan of plans) {
    const res = await api('POST', '/v1/subscribers', {
      name: `topology-${plan.name}`,
      filter: plan.filter,
      transport: { kind: 'https', url: `${sinkOrigin}${sinkPath(plan.name)}` },
      ...(plan.retry ? { retry: plan.retry } : {}),
      ...extra,
    });
    if (res.status !== 201) throw new Error(`POST /v1/subscribers (${plan.name}) answered ${res.status}: ${JSON.stringify(res.json)}`);
    created.push({ name: plan.name, id: res.json.id, secret: res.json.secret, plan });
  }
  return created;
}

export interface DeadLetterJson {
  readonly id: string;
  readonly deliveryId: string | null;
  readonly eventId: string | null;
  readonly subscriberId: string | null;
  readonly reason: string;
  readonly lastStatus: number | null;
  readonly lastCode: string | null;
  readonly attempts: number;
}

/** Every dead letter, through GET /v1/dlq (bounded: 100 pages of 500). */
export async function listDeadLetters(api: ApiCall): Promise<DeadLetterJson[]> {
  const out: DeadLetterJson[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 100; page++) {
    const res = await api('GET', `/v1/dlq?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (res.status !== 200) throw new Error(`GET /v1/dlq answered ${res.status}: ${JSON.stringify(res.json)}`);
    out.push(...(res.json.items as DeadLetterJson[]));
    cursor = res.json.nextCursor;
    if (!cursor) break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Ledger sink

export interface SinkArrival {
  readonly seq: number;
  /** The subscriber name from the path `/s/<name>`, or the raw path for anything else. */
  readonly sub: string;
  readonly guid: string;
  readonly webhookId: string;
  readonly attempt: number;
  /** performance.now() when the body was complete. */
  readonly at: number;
  readonly answer: number;
  /** undefined: not checked (no secret known); else whether standardwebhooks verified the signature. */
  readonly verified: boolean | undefined;
}

export interface SinkDecision {
  readonly status: number;
  /** Answer after this long (0: at once). */
  readonly delayMs?: number;
}

export interface LedgerSink {
  readonly origin: string;
  readonly arrivals: SinkArrival[];
  /** Number of 2xx answers per pair (guid|sub). */
  readonly accepted: Map<string, number>;
  /** performance.now() of the first 2xx arrival per pair. */
  readonly firstAcceptedAt: Map<string, number>;
  /** webhook-ids seen per pair (must stay one: stable across retries). */
  readonly webhookIds: Map<string, Set<string>>;
  /** Requests whose answer is not written yet. */
  inFlight(): number;
  /** Secrets to verify signatures with, per subscriber name (set once subscribers exist). */
  setSecrets(secrets: ReadonlyMap<string, string>): void;
  close(): Promise<void>;
}

export async function startLedgerSink(decide: (a: { sub: string; webhookId: string; attempt: number }) => SinkDecision, o: { verify?: boolean } = {}): Promise<LedgerSink> {
  const arrivals: SinkArrival[] = [];
  const accepted = new Map<string, number>();
  const firstAcceptedAt = new Map<string, number>();
  const webhookIds = new Map<string, Set<string>>();
  const verifiers = new Map<string, Webhook>();
  const timers = new Set<NodeJS.Timeout>();
  let pending = 0;
  let seq = 0;

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      const at = performance.now();
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      const sub = path.startsWith('/s/') ? path.slice(3) : path;
      const h = (name: string) => {
        const v = req.headers[name];
        return (Array.isArray(v) ? v[0] : v) ?? '';
      };
      const webhookId = h('webhook-id');
      const guid = h('x-github-delivery');
      const attempt = Number(h('webhook-attempt') || 0);
      let verified: boolean | undefined;
      const verifier = o.verify === false ? undefined : verifiers.get(sub);
      if (verifier) {
        try {
          verifier.verify(Buffer.concat(chunks), req.headers as Record<string, string>);
          verified = true;
        } catch {
          verified = false;
        }
      }
      const d = decide({ sub, webhookId, attempt });
      arrivals.push({ seq: seq++, sub, guid, webhookId, attempt, at, answer: d.status, verified });
      const key = pairKey(guid, sub);
      let ids = webhookIds.get(key);
      if (!ids) webhookIds.set(key, (ids = new Set()));
      ids.add(webhookId);
      if (d.status >= 200 && d.status < 300) {
        accepted.set(key, (accepted.get(key) ?? 0) + 1);
        if (!firstAcceptedAt.has(key)) firstAcceptedAt.set(key, at);
      }
      pending += 1;
      let done = false;
      const answer = () => {
        if (done) return;
        done = true;
        pending -= 1;
        if (res.destroyed || res.writableEnded) return;
        const body = d.status >= 200 && d.status < 300 ? 'ok' : `status ${d.status}`;
        res.writeHead(d.status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      };
      res.on('close', () => {
        if (!done) {
          done = true;
          pending -= 1;
        }
      });
      if (!d.delayMs) answer();
      else {
        const timer = setTimeout(() => {
          timers.delete(timer);
          answer();
        }, d.delayMs);
        timers.add(timer);
      }
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let closing: Promise<void> | undefined;
  return {
    origin,
    arrivals,
    accepted,
    firstAcceptedAt,
    webhookIds,
    inFlight: () => pending,
    setSecrets(secrets) {
      for (const [sub, secret] of secrets) verifiers.set(sub, new Webhook(secret));
    },
    close() {
      closing ??= (async () => {
        for (const t of timers) clearTimeout(t);
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
      })();
      return closing;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Sent ledger and senders

export interface SentEntry {
  readonly ev: TopoEvent;
  /** performance.now() of the first send. */
  firstSentAt: number;
  tries: number;
  /** Last HTTP status; -1 for a connection error; 0 before any answer. */
  status: number;
  eventId: string | undefined;
  acceptedAt: number | undefined;
  lastError: string | undefined;
}

export const isAccepted = (e: SentEntry | undefined) => e !== undefined && e.status >= 200 && e.status < 300;

/** One keep-alive pool per receiver, so a killed or slow receiver does not hold up the other's connections. */
export function newSendAgent(connections = 64): Dispatcher {
  return new Agent({ connections, keepAliveTimeout: 10_000, headersTimeout: 15_000, bodyTimeout: 15_000 });
}

/**
 * Sends one event until a 2xx (at most maxTries): connection errors and 5xx are re-sent with the same ids after
 * retryDelayMs, each try to the next receiver in turn (the first to receivers[start % n]). 4xx is final.
 */
export async function sendWithResend(
  entry: SentEntry,
  req: SignedRequest,
  receiverUrls: readonly string[],
  start: number,
  o: { dispatcher: Dispatcher; maxTries?: number; retryDelayMs?: number; stopped?: () => boolean },
): Promise<void> {
  const maxTries = o.maxTries ?? 8;
  while (entry.tries < maxTries) {
    const url = receiverUrls[(start + entry.tries) % receiverUrls.length]!;
    entry.tries += 1;
    if (entry.tries === 1) entry.firstSentAt = performance.now();
    try {
      const res = await request(url, { method: 'POST', headers: req.headers, body: req.body, dispatcher: o.dispatcher });
      const text = await res.body.text();
      entry.status = res.statusCode;
      if (res.statusCode >= 200 && res.statusCode < 300) {
        const id = (JSON.parse(text) as { id?: unknown }).id;
        entry.eventId = typeof id === 'string' ? id : undefined;
        entry.acceptedAt = performance.now();
        return;
      }
      entry.lastError = `${res.statusCode} ${text.slice(0, 200)}`;
      if (res.statusCode < 500) return;
    } catch (err) {
      entry.status = -1;
      entry.lastError = err instanceof Error ? `${(err as { code?: string }).code ?? ''} ${err.message}` : String(err);
    }
    if (o.stopped?.()) return;
    await sleep(o.retryDelayMs ?? 300);
  }
}

/**
 * Open arrival model: event k is due at t0 + k / ratePerSec, whatever happened to earlier ones; event k goes to
 * receivers[k % n]. Resolves when every event was answered 2xx or ran out of tries.
 */
export async function sendOpenLoop(o: {
  events: readonly TopoEvent[];
  ratePerSec: number;
  receiverUrls: readonly string[];
  secret: string;
  ledger: Map<number, SentEntry>;
  dispatcher: Dispatcher;
  maxTries?: number;
  retryDelayMs?: number;
}): Promise<void> {
  const t0 = performance.now();
  const sends: Promise<void>[] = [];
  for (const [k, ev] of o.events.entries()) {
    const due = t0 + (k * 1000) / o.ratePerSec;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const entry: SentEntry = { ev, firstSentAt: performance.now(), tries: 0, status: 0, eventId: undefined, acceptedAt: undefined, lastError: undefined };
    o.ledger.set(ev.i, entry);
    sends.push(
      sendWithResend(entry, signedEvent(ev, o.secret), o.receiverUrls, k, {
        dispatcher: o.dispatcher,
        ...(o.maxTries === undefined ? {} : { maxTries: o.maxTries }),
        ...(o.retryDelayMs === undefined ? {} : { retryDelayMs: o.retryDelayMs }),
      }),
    );
  }
  await Promise.all(sends);
}

// ---------------------------------------------------------------------------------------------------------------
// Reconciliation

export interface Reconciliation {
  readonly events: number;
  readonly acceptedEvents: number;
  readonly expected: number;
  readonly receivedPairs: number;
  readonly deadLetters: number;
  /** Pairs (guid|sub) expected, neither received 2xx nor dead-lettered. */
  readonly missing: string[];
  /** Arrivals the reference matcher did not expect: `sub guid webhook-id`. */
  readonly spurious: string[];
  readonly duplicates: number;
  readonly duplicatePairs: string[];
  /** Pairs received for events the generator never got a 2xx for (allowed; counted). */
  readonly unackedDelivered: number;
  /** Pairs whose webhook-id changed between attempts (must be none). */
  readonly unstableWebhookIds: string[];
  readonly badSignatures: number;
  readonly dlqUnknown: DeadLetterJson[];
  /** First send → first 2xx arrival at the sink, ms. */
  readonly latency: { p50: number; p99: number; max: number; n: number };
  /** Arrivals with webhook-attempt ≥ 2 (retries that reached the sink). */
  readonly retryArrivals: number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function reconcile(o: {
  events: readonly TopoEvent[];
  ledger: ReadonlyMap<number, SentEntry>;
  subscribers: readonly CreatedSubscriber[];
  sink: LedgerSink;
  dead: readonly DeadLetterJson[];
}): Reconciliation {
  const byGuid = new Map(o.events.map((e) => [e.guid, e]));
  const byEventId = new Map<string, TopoEvent>();
  for (const entry of o.ledger.values()) if (entry.eventId) byEventId.set(entry.eventId, entry.ev);
  const subById = new Map(o.subscribers.map((s) => [s.id, s]));
  const planOf = new Map(o.subscribers.map((s) => [s.name, s.plan]));

  const expected = new Set<string>();
  let acceptedEvents = 0;
  for (const ev of o.events) {
    if (!isAccepted(o.ledger.get(ev.i))) continue;
    acceptedEvents += 1;
    for (const s of o.subscribers) if (s.plan.matches(ev)) expected.add(pairKey(ev.guid, s.name));
  }
  const deadPairs = new Set<string>();
  const dlqUnknown: DeadLetterJson[] = [];
  for (const d of o.dead) {
    const ev = d.eventId ? byEventId.get(d.eventId) : undefined;
    const sub = d.subscriberId ? subById.get(d.subscriberId) : undefined;
    if (ev && sub) deadPairs.add(pairKey(ev.guid, sub.name));
    else dlqUnknown.push(d);
  }
  const missing = [...expected].filter((k) => !o.sink.accepted.has(k) && !deadPairs.has(k));
  const spurious: string[] = [];
  const seenSpurious = new Set<string>();
  let badSignatures = 0;
  let retryArrivals = 0;
  for (const a of o.sink.arrivals) {
    if (a.verified === false) badSignatures += 1;
    if (a.attempt >= 2) retryArrivals += 1;
    const ev = byGuid.get(a.guid);
    const plan = planOf.get(a.sub);
    if (!ev || !plan || !plan.matches(ev)) {
      const k = `${a.sub} ${a.guid} ${a.webhookId}`;
      if (!seenSpurious.has(k)) spurious.push(k);
      seenSpurious.add(k);
    }
  }
  let duplicates = 0;
  const duplicatePairs: string[] = [];
  let unackedDelivered = 0;
  const latencies: number[] = [];
  for (const [k, n] of o.sink.accepted) {
    if (n > 1) {
      duplicates += n - 1;
      duplicatePairs.push(k);
    }
    const guid = k.slice(0, k.indexOf('|'));
    const ev = byGuid.get(guid);
    const entry = ev ? o.ledger.get(ev.i) : undefined;
    if (!isAccepted(entry)) unackedDelivered += 1;
    else if (expected.has(k)) latencies.push(o.sink.firstAcceptedAt.get(k)! - entry!.firstSentAt);
  }
  latencies.sort((a, b) => a - b);
  const unstableWebhookIds = [...o.sink.webhookIds].filter(([, ids]) => ids.size > 1).map(([k, ids]) => `${k}: ${[...ids].join(', ')}`);
  return {
    events: o.events.length,
    acceptedEvents,
    expected: expected.size,
    receivedPairs: o.sink.accepted.size,
    deadLetters: o.dead.length,
    missing,
    spurious,
    duplicates,
    duplicatePairs,
    unackedDelivered,
    unstableWebhookIds,
    badSignatures,
    dlqUnknown,
    latency: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.at(-1) ?? Number.NaN, n: latencies.length },
    retryArrivals,
  };
}

/** How many expected pairs of accepted events have not arrived 2xx yet (cheap enough to poll). */
export function outstanding(o: { events: readonly TopoEvent[]; ledger: ReadonlyMap<number, SentEntry>; subscribers: readonly CreatedSubscriber[]; sink: LedgerSink }): number {
  let n = 0;
  for (const ev of o.events) {
    if (!isAccepted(o.ledger.get(ev.i))) continue;
    for (const s of o.subscribers) if (s.plan.matches(ev) && !o.sink.accepted.has(pairKey(ev.guid, s.name))) n += 1;
  }
  return n;
}

/** Polls `condition` every intervalMs until it holds or timeoutMs passed; resolves whether it held. */
export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    await sleep(Math.min(intervalMs, left));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backends: probes and clean-up (client libraries only; no adapter code)

export const backendEnv = {
  postgresUrl: process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
  redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  kafkaBrokers: process.env.KAFKA_BROKERS ? process.env.KAFKA_BROKERS.split(',').map((b) => b.trim()).filter(Boolean) : undefined,
};

let schemaCounter = 0;
/** wr_topo_<pid>_<n>: fresh per run. */
export const newSchemaName = () => `wr_topo_${process.pid}_${++schemaCounter}`;

export async function probePostgres(url = backendEnv.postgresUrl): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
  } finally {
    await client.end().catch(() => {});
  }
}

export async function dropPostgresSchema(schema: string, url = backendEnv.postgresUrl): Promise<void> {
  if (!/^wr_topo_[0-9a-z_]+$/.test(schema)) throw new Error(`refusing to drop schema ${schema}`);
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end().catch(() => {});
  }
}

async function withRedis<T>(url: string, fn: (r: import('ioredis').Redis) => Promise<T>): Promise<T> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url, { lazyConnect: true, connectTimeout: 3_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

export async function probeRedis(url = backendEnv.redisUrl): Promise<void> {
  await withRedis(url, async (r) => {
    const pong = await r.ping();
    if (pong !== 'PONG') throw new Error(`PING answered ${pong}`);
  });
}

/** Deletes a run's stream (its consumer group goes with it). */
export async function deleteRedisStream(stream: string, url = backendEnv.redisUrl): Promise<void> {
  await withRedis(url, async (r) => {
    await r.del(stream);
  });
}

async function withKafkaAdmin<T>(brokers: string[], fn: (admin: import('kafkajs').Admin) => Promise<T>): Promise<T> {
  const { Kafka, logLevel } = await import('kafkajs');
  const kafka = new Kafka({ clientId: 'topology-test', brokers, connectionTimeout: 3_000, requestTimeout: 10_000, retry: { retries: 1 }, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

export async function probeKafka(brokers = backendEnv.kafkaBrokers): Promise<void> {
  if (!brokers || brokers.length === 0) throw new Error('KAFKA_BROKERS is not set (start a broker: kafka_env="$(bash test/infra/kafka/start.sh)" && eval "$kafka_env")');
  for (const b of brokers) if (!/^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+$/.test(b)) throw new Error(`KAFKA_BROKERS must be loopback, got ${b}`);
  await withKafkaAdmin(brokers, async (admin) => {
    await admin.listTopics();
  });
}

export async function deleteKafkaTopic(topic: string, groupId: string, brokers = backendEnv.kafkaBrokers ?? []): Promise<void> {
  await withKafkaAdmin(brokers, async (admin) => {
    await admin.deleteGroups([groupId]).catch(() => {});
    await admin.deleteTopics({ topics: [topic], timeout: 10_000 });
  });
}
