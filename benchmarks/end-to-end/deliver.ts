/**
 * End-to-end delivery benchmark on the embedded defaults: the real `webhook-router serve` (SQLite queue and store),
 * a sink process playing the subscribers, and the load generator (this process), all on the machine's 2 cores.
 *
 *   node benchmarks/end-to-end/deliver.ts [--subscribers 1] [--connections 32] [--duration 10] [--runs 3] [--subscriber-concurrency 128]
 *   node benchmarks/end-to-end/deliver.ts --memory [--events 100000]
 *
 * Throughput mode: sends signed 8.3 KB `push` webhooks for `--duration` seconds from `--connections` concurrent
 * keep-alive loops, then waits until the sink has every (event, subscriber) delivery (bounded). Reports accepted/s,
 * delivered/s (deliveries ÷ time from the first send to the last arrival), end-to-end latency p50/p99 (send → first
 * arrival), lost (expected − arrived) and duplicated (arrivals beyond the first).
 *
 * Each subscriber has `limits.concurrency` 128 (`--subscriber-concurrency`). A delivery holds its slot from its claim
 * until its attempt is durably recorded, about 16 ms end to end here, so 64 slots cap one subscriber near 4,000/s
 * whatever the CPU can do: with 64 the benchmark measured the slot limit (benchmarks/RESULTS.md, 4 December 2026,
 * third session).
 *
 * Memory mode: one subscriber whose endpoint is down (a closed port: every attempt is refused and retried later),
 * `--events` webhooks sent as fast as the receiver takes them; samples the serve process's RSS and reports the peak
 * and the RSS growth per 10,000 undelivered deliveries. Payloads stay in the store, so it should stay flat.
 *
 * In either mode `--split` runs the receiver and the worker as two processes on the same SQLite files (as `receiver`
 * and `worker` would in a pod each); in memory mode the worker's RSS is then the one sampled. `--node-options=…`
 * adds Node/V8 flags to the router processes' command line, after the shipped ones (the environment and flags of the
 * bin's shebang, benchmarks/shipped-runtime.ts: `MALLOC_ARENA_MAX=2`, `--max-semi-space-size=8`), so that they
 * override it (e.g. `--node-options=--max-semi-space-size=32`). As NODE_OPTIONS, which this option used to set, they
 * did not: the command line wins, and an A/B of the semi-space size compared 8 MB with 8 MB.
 *
 * Only 127.0.0.1; every run is bounded and kills its children by PID.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pairKeyFor, pairKeyOf } from '../../adapters/store/ids.ts';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import { Config } from '../../config/schema.ts';
import { createKeyring } from '../../src/secrets/keyring.ts';
import { withSecretEncryption } from '../../src/secrets/store.ts';
import { buildPushBody, signGithub } from '../ingest/body.ts';
import { benchmarkEnv, shippedRuntime } from '../shipped-runtime.ts';
import { WebhookConnection } from './webhook-client.ts';

const { values: args } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '1' },
    connections: { type: 'string', default: '32' },
    duration: { type: 'string', default: '10' },
    runs: { type: 'string', default: '3' },
    memory: { type: 'boolean', default: false },
    events: { type: 'string', default: '100000' },
    'drain-timeout': { type: 'string', default: '120' },
    'cpu-prof': { type: 'string' },
    split: { type: 'boolean', default: false },
    'node-options': { type: 'string', default: '' },
    'subscriber-concurrency': { type: 'string', default: '128' },
  },
  strict: true,
});

const ROOT = new URL('../..', import.meta.url).pathname;
const SECRET = randomBytes(16).toString('hex');
const body = buildPushBody();
const signature = signGithub(body, SECRET);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const rssMb = (pid: number) => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
};

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

interface Setup {
  dir: string;
  router: ChildProcess;
  /** With --split: the receiver; `router` is then the worker. */
  receiver: ChildProcess | undefined;
  sink: ChildProcess | undefined;
  webhooks: number;
  subscriberIds: string[];
}

async function setup(subscribers: number, sinkPort: number | undefined, split = false): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'wr-bench-e2e-'));
  const [webhooks, api, management] = [await freePort(), await freePort(), await freePort()];
  const deadPort = sinkPort ?? (await freePort()); // memory mode: nothing listens there
  const raw = {
    listen: { webhooks, api, management, host: '127.0.0.1' },
    queue: { kind: 'sqlite', path: join(dir, 'queue.db') },
    store: { kind: 'sqlite', path: join(dir, 'router.db') },
    sources: [{ id: 'github', kind: 'github', secrets: [SECRET] }],
    api: { tokens: [{ name: 'bench', token: randomBytes(24).toString('hex'), scopes: ['*'] }] },
    secrets: { encryptionKey: randomBytes(32).toString('base64') },
    egress: { allow: ['127.0.0.1/32'] },
    worker: { concurrency: 256 },
    log: { level: 'warn' },
  };
  const config = Config.parse(raw);
  writeFileSync(join(dir, 'router.json'), JSON.stringify(raw));

  // Subscribers exist before the worker starts, so its first subscriber snapshot has them.
  const store = withSecretEncryption(createSqliteStore({ kind: 'sqlite', path: join(dir, 'router.db') }), createKeyring(config.secrets));
  await store.connect();
  await store.migrate();
  const subscriberIds: string[] = [];
  for (let i = 0; i < subscribers; i++) {
    const id = `sub_bench_${i}`;
    subscriberIds.push(id);
    await store.createSubscriber(
      {
        id,
        name: id,
        enabled: true,
        filter: { sources: [], events: [], repositories: [], branches: [] },
        transport: { kind: 'https', url: `http://127.0.0.1:${deadPort}/s${i}`, headers: {}, secretHeaders: [], signing: 'standard-webhooks' },
        retry: { schedule: 'standard', maxAttempts: 10 },
        limits: { concurrency: Number(args['subscriber-concurrency']), perSecond: 0 },
        ordering: null,
        secrets: { current: `whsec_${randomBytes(32).toString('base64')}` },
      },
      Date.now(),
    );
  }
  await store.close();

  const prof = args['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', args['cpu-prof']] : [];
  const nodeOptions = args['node-options'].split(/\s+/).filter((o) => o !== '');
  // The environment and flags of the bin's shebang: the router as it ships.
  const runtime = shippedRuntime(ROOT);
  const start = (role: string, configFile: string) =>
    spawn(process.execPath, [...prof, ...runtime.flags, ...nodeOptions, join(ROOT, 'src/main.ts'), role, '--config', configFile], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: benchmarkEnv(runtime.env),
    });
  let router: ChildProcess;
  let receiver: ChildProcess | undefined;
  const ready = [management];
  if (split) {
    // Two processes, two management ports; the receiver's is the one in router.json.
    const workerManagement = await freePort();
    writeFileSync(join(dir, 'worker.json'), JSON.stringify({ ...raw, listen: { ...raw.listen, management: workerManagement } }));
    receiver = start('receiver', join(dir, 'router.json'));
    router = start('worker', join(dir, 'worker.json'));
    ready.push(workerManagement);
  } else {
    router = start('serve', join(dir, 'router.json'));
  }
  const setup: Setup = { dir, router, receiver, sink: undefined, webhooks, subscriberIds };
  const deadline = Date.now() + 20_000;
  try {
    for (const port of ready) {
      for (;;) {
        const exited = [router, receiver].find((c) => c && hasExited(c));
        if (exited) throw new Error(`${exited.spawnargs.at(-3)} exited (${exited.exitCode ?? exited.signalCode}) before it was ready`);
        try {
          const r = await fetch(`http://127.0.0.1:${port}/readyz`);
          if (r.status === 200) break;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) throw new Error('router did not become ready');
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (err) {
    // What was started must not outlive this run (it used to, and held the next run's CPU).
    await teardown(setup);
    throw err;
  }
  return setup;
}

const hasExited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

async function teardown(s: Setup): Promise<void> {
  for (const child of [s.router, s.receiver]) {
    if (!child || hasExited(child)) continue;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  if (s.sink) s.sink.send('stop');
  rmSync(s.dir, { recursive: true, force: true });
}

/** Closed-loop load: `connections` loops sending one webhook after another until `until`, or `limit` sent. */
async function load(port: number, connections: number, until: number, limit: number) {
  const headers = { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-hook-id': '4242', 'x-hub-signature-256': signature };
  const open = () => new WebhookConnection(port, '/webhooks/github', headers, body);
  const sent = new Map<string, number>();
  let accepted = 0;
  let failed = 0;
  let issued = 0;
  const loop = async () => {
    let connection = open();
    while (Date.now() < until && issued < limit) {
      issued += 1;
      const at = Date.now();
      try {
        const answer = await connection.post(randomUUID());
        if (answer.status === 202) {
          accepted += 1;
          sent.set((JSON.parse(answer.body) as { id: string }).id, at);
        } else failed += 1;
      } catch {
        failed += 1;
        connection.close();
        connection = open();
      }
    }
    connection.close();
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: connections }, loop));
  const seconds = (Date.now() - started) / 1000;
  return { sent, accepted, failed, seconds, started };
}

function ask<T>(child: ChildProcess, message: string): Promise<T> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as T));
    child.send(message);
  });
}

async function throughputRun(subscribers: number) {
  const sink = fork(join(ROOT, 'benchmarks/end-to-end/sink.ts'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const { port } = await new Promise<{ port: number }>((resolve) => sink.once('message', (m) => resolve(m as { port: number })));
  const s = await setup(subscribers, port, args.split).catch((err: unknown) => {
    sink.kill();
    throw err;
  });
  s.sink = sink;
  try {
    const result = await load(s.webhooks, Number(args.connections), Date.now() + Number(args.duration) * 1000, Number.POSITIVE_INFINITY);
    const expected = result.accepted * subscribers;
    const drainUntil = Date.now() + Number(args['drain-timeout']) * 1000;
    let stats = await ask<{ unique: number; total: number; duplicates: number; firstAt: number; lastAt: number }>(sink, 'stats');
    while (stats.unique < expected && Date.now() < drainUntil) {
      await new Promise((r) => setTimeout(r, 250));
      stats = await ask(sink, 'stats');
    }
    const { arrivals } = await ask<{ arrivals: [string, number][] }>(sink, 'dump');
    // Arrivals are keyed "path webhook-id"; a webhook-id starts with the router's receive time of the event, which
    // this side does not know, so arrivals are matched on the (event, subscriber) part of it.
    const firstArrival = new Map(
      arrivals.map(([key, at]) => {
        const [path, webhookId] = key.split(' ');
        return [`${path} ${pairKeyOf(webhookId ?? '')}`, at] as const;
      }),
    );
    const latencies: number[] = [];
    for (const [eventId, at] of result.sent) {
      s.subscriberIds.forEach((sub, i) => {
        const arrived = firstArrival.get(`/s${i} ${pairKeyFor(eventId, sub)}`);
        if (arrived !== undefined) latencies.push(arrived - at);
      });
    }
    latencies.sort((a, b) => a - b);
    return {
      subscribers,
      acceptedPerSec: result.accepted / result.seconds,
      deliveredPerSec: stats.unique / ((stats.lastAt - result.started) / 1000),
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      accepted: result.accepted,
      expected,
      lost: expected - stats.unique,
      duplicates: stats.duplicates,
      failedSends: result.failed,
    };
  } finally {
    await teardown(s);
  }
}

async function memoryRun() {
  const s = await setup(1, undefined, args.split);
  const pid = s.router.pid as number;
  try {
    const base = rssMb(pid);
    let peak = base;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMb(pid));
    }, 200);
    const events = Number(args.events);
    const result = await load(s.webhooks, Number(args.connections), Date.now() + 600_000, events);
    // Let the worker ingest the backlog and make its first (refused) attempts.
    await new Promise((r) => setTimeout(r, 10_000));
    clearInterval(sampler);
    const end = rssMb(pid);
    return {
      events: result.accepted,
      rssBaseMb: base,
      rssPeakMb: peak,
      rssEndMb: end,
      mbPer10kInFlight: ((end - base) / result.accepted) * 10_000,
    };
  } finally {
    await teardown(s);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const fmt = (xs: number[], digits = 0) => `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;

if (args.memory) {
  const r = await memoryRun();
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.stdout.write(
    `| down subscriber, ${r.events} events, ${args.split ? 'worker process' : 'serve process'} | RSS ${r.rssBaseMb.toFixed(0)} MB → peak ${r.rssPeakMb.toFixed(0)} MB, end ${r.rssEndMb.toFixed(0)} MB | ${r.mbPer10kInFlight.toFixed(1)} MB per 10k undelivered |\n`,
  );
} else {
  const runs = [];
  for (let i = 0; i < Number(args.runs); i++) {
    const r = await throughputRun(Number(args.subscribers));
    process.stdout.write(`${JSON.stringify(r)}\n`);
    runs.push(r);
  }
  process.stdout.write(
    `| ${args.subscribers} subscriber(s), ${args.connections} connections | accepted/s ${fmt(runs.map((r) => r.acceptedPerSec))} | delivered/s ${fmt(runs.map((r) => r.deliveredPerSec))} | p50 ${fmt(runs.map((r) => r.p50))} ms / p99 ${fmt(runs.map((r) => r.p99))} ms | lost ${runs.map((r) => r.lost).join('/')} | duplicates ${runs.map((r) => r.duplicates).join('/')} |\n`,
  );
}
process.stdout.write(`command: node benchmarks/end-to-end/deliver.ts ${process.argv.slice(2).join(' ')}\n`);
