/**
 * The ingest benchmark: how many signed 8.3 KB GitHub `push` webhooks per second the real receiver accepts with a
 * 202 after a durable SQLite commit, and at what latency. See benchmarks/README.md for the method.
 *
 *   npm run bench:ingest -- [--connections 100] [--rate N [--pacer autocannon|uniform]] [--runs 3] [--warmup 3] [--duration 10]
 *                           [--synchronous full|normal] [--target router|bare|both] [--cpu-prof DIR] [--label TEXT]
 *
 * For each run: a fresh temp directory with a YAML config (one github source, SQLite queue, 127.0.0.1 ports,
 * log level warn), the receiver started as the bin's shebang runs it (benchmarks/shipped-runtime.ts:
 * `MALLOC_ARENA_MAX=2 taskset -c 0 node --max-semi-space-size=8 src/main.ts receiver --config <tmp>`), /readyz awaited,
 * then `taskset -c 1 node benchmarks/ingest/load.ts …` (autocannon: warm-up, then the measured run). Afterwards the
 * receiver gets SIGTERM (SIGKILL if it does not stop in time) and the queue's rows are counted read-only: every 202
 * must be a row, so the throughput is of durable writes. Prints one line per run, the median (min–max) over runs as
 * a markdown table row for benchmarks/RESULTS.md, and the exact command.
 *
 * `--target both` makes each run a pair, the bare receiver (bare.ts) and then the router, one right after the other,
 * and reports the router's accepted/s as a share of the bare receiver's in each pair: on a host whose speed drifts
 * (identical runs have differed by 40 % within an hour) that ratio, not either figure alone, is what compares with
 * the target's 10,000 of about 16,000/s. A pair with a noisy run is discarded whole.
 *
 * Bounded: at most 20 runs of at most 300 s, traffic to 127.0.0.1 only, every child killed by PID at the end, on
 * error and on Ctrl-C.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { stringify } from 'yaml';
import { benchmarkEnv, shippedRuntime } from '../shipped-runtime.ts';
import { buildPushBody, DEFAULT_BODY_BYTES, signGithub } from './body.ts';

const here = fileURLToPath(new URL('../..', import.meta.url));

const { values: args } = parseArgs({
  options: {
    target: { type: 'string', default: 'router' },
    connections: { type: 'string', default: '100' },
    rate: { type: 'string' },
    pacer: { type: 'string', default: 'autocannon' },
    runs: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '3' },
    duration: { type: 'string', default: '10' },
    synchronous: { type: 'string', default: 'full' },
    'batch-window-ms': { type: 'string' },
    'batch-max-items': { type: 'string' },
    'checkpoint-interval-ms': { type: 'string' },
    'body-bytes': { type: 'string', default: String(DEFAULT_BODY_BYTES) },
    'server-cpu': { type: 'string', default: '0' },
    'load-cpu': { type: 'string', default: '1' },
    'cpu-prof': { type: 'string' },
    label: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'json-out': { type: 'string' },
    dir: { type: 'string', default: tmpdir() },
    repo: { type: 'string' },
    'quiet-wait': { type: 'string', default: '60' },
    'max-other': { type: 'string', default: '10' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (args.help) {
  process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0] + '*/\n');
  process.exit(0);
}

function int(name: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in [${min}, ${max}], got ${value}`);
  return n;
}

type Target = 'router' | 'bare';
const targetArg = args.target;
if (targetArg !== 'router' && targetArg !== 'bare' && targetArg !== 'both') throw new Error('--target must be router, bare or both');
const targets: readonly Target[] = targetArg === 'both' ? ['bare', 'router'] : [targetArg];
const synchronous = args.synchronous;
if (synchronous !== 'full' && synchronous !== 'normal') throw new Error('--synchronous must be full or normal');
const connections = int('connections', args.connections, 1, 2_000);
const rate = args.rate === undefined ? undefined : int('rate', args.rate, 1, 1_000_000);
const pacer = args.pacer;
if (pacer !== 'autocannon' && pacer !== 'uniform') throw new Error('--pacer must be autocannon or uniform');
if (pacer === 'uniform' && rate === undefined) throw new Error('--pacer uniform needs --rate');
const runs = int('runs', args.runs, 1, 20);
const warmup = int('warmup', args.warmup, 0, 60);
const duration = int('duration', args.duration, 1, 300);
const bodyBytes = int('body-bytes', args['body-bytes'], 1, 25 * 1024 * 1024);
const serverCpu = String(int('server-cpu', args['server-cpu'], 0, cpus().length - 1));
const loadCpu = String(int('load-cpu', args['load-cpu'], 0, cpus().length - 1));
const batchWindowMs = args['batch-window-ms'] === undefined ? undefined : int('batch-window-ms', args['batch-window-ms'], 0, 100);
const batchMaxItems = args['batch-max-items'] === undefined ? undefined : int('batch-max-items', args['batch-max-items'], 1, 10_000);
const maxOther = args['max-other'] === undefined ? undefined : int('max-other', args['max-other'], 0, 100);
const quietWait = int('quiet-wait', args['quiet-wait'], 0, 600);
// The router checkout whose `src/main.ts receiver` is measured: this one by default, or another (e.g. a clean clone of
// a commit, or a branch with a proposed change) for A/B runs with the same harness.
const repo = resolve(args.repo ?? here);
const baseDir = resolve(args.dir ?? tmpdir());
// The queue file must sit on a real disk: on tmpfs an fsync costs nothing and "durable" would measure nothing.
const TMPFS_MAGIC = 0x01021994;
if (statfsSync(baseDir).type === TMPFS_MAGIC) {
  process.stderr.write(`warning: ${baseDir} is tmpfs, so SQLite's fsync is free there; pass --dir on a real disk\n`);
}
const checkpointIntervalMs =
  args['checkpoint-interval-ms'] === undefined ? undefined : int('checkpoint-interval-ms', args['checkpoint-interval-ms'], 10, 3_600_000);
const cpuProfDir = args['cpu-prof'] ? resolve(args['cpu-prof']) : undefined;

// ---- child process bookkeeping: everything we start is killed by its PID, whatever happens ----

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function killAll(): void {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: stopping the benchmark's children\n`);
    killAll();
    process.exit(130);
  });
}

function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function stop(child: ChildProcess, graceMs: number): Promise<'clean' | 'killed'> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return 'clean';
  process.kill(child.pid, 'SIGTERM');
  if (await exited(child, graceMs)) return 'clean';
  process.kill(child.pid, 'SIGKILL');
  await exited(child, 5_000);
  return 'killed';
}

// ---- helpers ----

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitReady(url: string, child: ChildProcess, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the server exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer 200 within ${ms} ms`);
}

/** `MainThread 97, sqlite-queue 37, …`: the threads that used at least 1 µs per request, busiest first. */
function byThread(us: Record<string, number>): string {
  return Object.entries(us)
    .filter(([, v]) => v >= 1)
    .sort((a, b) => b[1] - a[1])
    .map(([name, v]) => `${name} ${fmt(v)}`)
    .join(', ');
}

function tail(path: string, lines = 20): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

interface LoadPhase {
  seconds: number;
  sent: number;
  responses: number;
  accepted: number;
  /** 202s before the phase's clock started (the paced phase opening its connections). */
  primed: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  latencyMs: { p50: number; p90: number; p99: number; p99_9: number; max: number; mean: number };
}
interface LoadResult {
  warmup: LoadPhase | null;
  measured: LoadPhase;
  acceptedPerSec: number;
  generatorUtilisation: number;
  serverCore: { otherTasks: number | null; irq: number; steal: number } | null;
  cpu: {
    seconds: number;
    mainThreadSeconds: number;
    usPerAccepted: number | null;
    mainThreadUsPerAccepted: number | null;
    /** Per thread name (the router's SQLite threads are named; V8's helpers summed under one). */
    threadUsPerAccepted: Record<string, number> | null;
    utilisation: number;
  } | null;
}
/** What the receiver's own /metrics says about its event loop and GC (whole process life, warm-up included). */
interface ServerMetrics {
  loopLagP99Ms: number | null;
  loopLagMaxMs: number | null;
  gcMs: Record<string, number>;
  publishP99Ms: number | null;
}

/** Reads event-loop lag, GC time by kind and the publish-confirm p99 (from the histogram buckets) off /metrics. */
async function scrapeMetrics(url: string): Promise<ServerMetrics | null> {
  try {
    const text = await (await fetch(url, { signal: AbortSignal.timeout(5_000) })).text();
    const value = (name: string) => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text);
      return m?.[1] === undefined ? null : Number(m[1]) * 1_000;
    };
    const gcMs: Record<string, number> = {};
    for (const m of text.matchAll(/^nodejs_gc_duration_seconds_sum\{kind="([^"]+)"\} ([0-9.e+-]+)$/gm)) gcMs[m[1] as string] = Number(m[2]) * 1_000;
    const buckets = [...text.matchAll(/^router_publish_seconds_bucket\{[^}]*le="([^"]+)"[^}]*result="confirmed"[^}]*\} ([0-9]+)$|^router_publish_seconds_bucket\{[^}]*result="confirmed"[^}]*le="([^"]+)"[^}]*\} ([0-9]+)$/gm)].map(
      (m) => ({ le: Number(m[1] ?? m[3]), count: Number(m[2] ?? m[4]) }),
    );
    const total = buckets.find((b) => !Number.isFinite(b.le))?.count ?? 0;
    const p99 = total ? buckets.filter((b) => Number.isFinite(b.le)).find((b) => b.count >= 0.99 * total)?.le : undefined;
    return { loopLagP99Ms: value('nodejs_eventloop_lag_p99_seconds'), loopLagMaxMs: value('nodejs_eventloop_lag_max_seconds'), gcMs, publishP99Ms: p99 === undefined ? null : p99 * 1_000 };
  } catch {
    return null;
  }
}

interface RunResult extends LoadResult {
  serverMetrics: ServerMetrics | null;
  run: number;
  rows: number | null;
  expectedRows: number;
  queueCheck: 'ok' | 'mismatch' | 'n/a';
  shutdown: 'clean' | 'killed';
}

function runLoad(loadArgs: string[], ms: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = track(spawn('taskset', ['-c', loadCpu, process.execPath, join(here, 'benchmarks/ingest/load.ts'), ...loadArgs], {
      cwd: here,
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d));
    child.stderr?.on('data', (d: Buffer) => (err += d));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      reject(new Error(`the load generator did not finish within ${ms} ms`));
    }, ms);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || !line.startsWith('{')) return reject(new Error(`load generator failed (${code ?? signal}):\n${err}${out}`));
      resolve(JSON.parse(line) as LoadResult);
    });
  });
}

/** user + nice + system ticks of every CPU. */
function taskTicks(): Map<string, { tasks: number; total: number }> {
  const out = new Map<string, { tasks: number; total: number }>();
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^(cpu\d+)\s+(.*)$/.exec(line);
    if (!m?.[1] || !m[2]) continue;
    const f = m[2].split(/\s+/).slice(0, 8).map(Number);
    out.set(m[1], { tasks: (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0), total: f.reduce((a, b) => a + b, 0) });
  }
  return out;
}

/**
 * The machines are shared: before a run, wait (at most quietWait seconds) until neither core is more than 15 % busy
 * with other work over one second. Returns the busiest core's share seen last, for the record.
 */
async function waitQuiet(): Promise<number> {
  const deadline = Date.now() + quietWait * 1_000;
  for (;;) {
    const a = taskTicks();
    await new Promise((r) => setTimeout(r, 1_000));
    const b = taskTicks();
    let busiest = 0;
    for (const [cpu, t] of b) {
      const t0 = a.get(cpu);
      if (t0) busiest = Math.max(busiest, (t.tasks - t0.tasks) / (t.total - t0.total || 1));
    }
    if (busiest <= 0.15 || Date.now() >= deadline) {
      if (busiest > 0.15) process.stderr.write(`machine still busy (${fmt(busiest * 100)} % of a core) after ${quietWait} s; running anyway\n`);
      return busiest;
    }
  }
}

// ---- one run ----

const body = buildPushBody(bodyBytes);

async function oneRun(run: number, target: Target): Promise<RunResult> {
  const dir = mkdtempSync(join(baseDir, 'wr-bench-'));
  const secret = randomBytes(20).toString('hex');
  const bodyFile = join(dir, 'body.json');
  writeFileSync(bodyFile, body);
  const dbPath = join(dir, 'queue.db');
  const [webhooks, management, api] = [await freePort(), await freePort(), await freePort()];
  const logPath = join(dir, 'server.log');
  const logFd = openSync(logPath, 'a');

  let server: ChildProcess;
  let readyUrl: string;
  let webhookUrl: string;
  let metricsUrl: string | undefined;
  if (target === 'router') {
    const config = {
      listen: { host: '127.0.0.1', webhooks, management, api },
      queue: {
        kind: 'sqlite',
        path: dbPath,
        synchronous,
        ...(batchWindowMs !== undefined ? { batchWindowMs } : {}),
        ...(batchMaxItems !== undefined ? { batchMaxItems } : {}),
        ...(checkpointIntervalMs !== undefined ? { checkpointIntervalMs } : {}),
      },
      sources: [{ id: 'github', kind: 'github', secrets: [secret] }],
      log: { level: 'warn' },
      shutdownGraceMs: 5_000,
    };
    const configPath = join(dir, 'config.yaml');
    writeFileSync(configPath, stringify(config), { mode: 0o600 });
    if (cpuProfDir) mkdirSync(cpuProfDir, { recursive: true });
    // The environment and flags of the bin's shebang, so the receiver runs as it ships.
    const runtime = shippedRuntime(repo);
    const nodeArgs = [...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []), ...runtime.flags, 'src/main.ts', 'receiver', '--config', configPath];
    server = track(spawn('taskset', ['-c', serverCpu, process.execPath, ...nodeArgs], { cwd: repo, env: benchmarkEnv(runtime.env), stdio: ['ignore', logFd, logFd] }));
    readyUrl = `http://127.0.0.1:${management}/readyz`;
    metricsUrl = `http://127.0.0.1:${management}/metrics`;
    webhookUrl = `http://127.0.0.1:${webhooks}/webhooks/github`;
  } else {
    const nodeArgs = [...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []), join(here, 'benchmarks/ingest/bare.ts'), '--port', String(webhooks), '--secret', secret];
    server = track(spawn('taskset', ['-c', serverCpu, process.execPath, ...nodeArgs], { cwd: repo, env: benchmarkEnv(), stdio: ['ignore', logFd, logFd] }));
    readyUrl = `http://127.0.0.1:${webhooks}/readyz`;
    webhookUrl = `http://127.0.0.1:${webhooks}/webhooks/github`;
  }
  closeSync(logFd);

  try {
    await waitReady(readyUrl, server, 20_000);
    const loadArgs = [
      '--url', webhookUrl,
      '--body-file', bodyFile,
      '--signature', signGithub(body, secret),
      '--connections', String(connections),
      '--warmup', String(warmup),
      '--duration', String(duration),
      '--server-pid', String(server.pid),
      '--server-cpu', serverCpu,
      ...(rate ? ['--rate', String(rate), '--pacer', pacer] : []),
    ];
    const load = await runLoad(loadArgs, (warmup + duration + 60) * 1_000);
    const serverMetrics = metricsUrl ? await scrapeMetrics(metricsUrl) : null;
    const shutdown = await stop(server, 15_000);

    let rows: number | null = null;
    const rowsOf = (p: LoadPhase | null) => (p ? p.accepted + p.primed : 0);
    const expectedRows = rowsOf(load.warmup) + rowsOf(load.measured);
    let queueCheck: RunResult['queueCheck'] = 'n/a';
    if (target === 'router') {
      const db = new Database(dbPath, { readonly: true, fileMustExist: true });
      try {
        rows = (db.prepare('SELECT count(*) AS n FROM queue_entries').get() as { n: number }).n;
      } finally {
        db.close();
      }
      // Requests in flight when autocannon stops (at most one per connection, per phase) may be committed and
      // answered after the generator stopped counting: more rows than 202s, by at most that much, is expected.
      const slack = rows - expectedRows;
      queueCheck = slack >= 0 && slack <= connections * (load.warmup ? 2 : 1) ? 'ok' : 'mismatch';
    }
    const result: RunResult = { ...load, serverMetrics, run, rows, expectedRows, queueCheck, shutdown };
    if (queueCheck === 'mismatch' || shutdown === 'killed') process.stderr.write(`server log tail (${logPath}):\n${tail(logPath)}\n`);
    return result;
  } catch (err) {
    process.stderr.write(`server log tail (${logPath}):\n${tail(logPath)}\n`);
    throw err;
  } finally {
    if (server.exitCode === null && server.signalCode === null) await stop(server, 5_000);
    if (!args.keep) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`kept ${dir}\n`);
  }
}

// ---- summary ----

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const spread = (xs: number[], digits = 0) =>
  xs.length === 1 ? fmt(xs[0] as number, digits) : `${fmt(median(xs), digits)} (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`;

function describe(target: Target): string {
  const parts = [target === 'router' ? `router, SQLite sync=${synchronous}` : 'bare node:http (no store)'];
  if (batchWindowMs !== undefined) parts.push(`window ${batchWindowMs} ms`);
  if (batchMaxItems !== undefined) parts.push(`max ${batchMaxItems}`);
  if (checkpointIntervalMs !== undefined) parts.push(`checkpoint every ${fmt(checkpointIntervalMs)} ms`);
  parts.push(rate ? `rate ${fmt(rate)}/s (${pacer === 'uniform' ? 'uniform pacing' : 'autocannon overallRate'})` : 'saturation');
  return (targets.length === 1 ? args.label : undefined) ?? parts.join(', ');
}

const command = `node benchmarks/ingest/run.ts ${process.argv.slice(2).join(' ')}`.trim();
process.stderr.write(
  `ingest benchmark of ${targets.map((t) => (t === 'router' ? repo : 'bare.ts')).join(' and ')}: ${targets.map(describe).join(' / ')}; ${connections} connections, ${warmup} s warm-up + ${duration} s, ${runs} run(s), ` +
    `${body.length} B push body; server on CPU ${serverCpu}, load on CPU ${loadCpu}\n`,
);

const resultsBy = new Map<Target, RunResult[]>(targets.map((t) => [t, []]));
const discarded: RunResult[] = [];
for (let i = 1; (resultsBy.get(targets[0] as Target) as RunResult[]).length < runs && i <= runs * 3; i++) {
  const pair: { target: Target; r: RunResult; other: number }[] = [];
  for (const target of targets) {
    await waitQuiet();
    const r = await oneRun(i, target);
    pair.push({ target, r, other: r.serverCore?.otherTasks ?? 0 });
  }
  const noisy = maxOther !== undefined && pair.some((p) => p.other * 100 > maxOther);
  for (const { target, r, other } of pair) {
    (noisy ? discarded : (resultsBy.get(target) as RunResult[])).push(r);
    report(i, target, r, noisy, other);
  }
  if (!noisy && pair.length === 2) {
    const [bare, router] = pair.map((p) => p.r.acceptedPerSec) as [number, number];
    process.stderr.write(`pair ${i}: router ${fmt(router)}/s ÷ bare ${fmt(bare)}/s = ${fmt((router / bare) * 100)} %\n`);
  }
}

function report(i: number, target: Target, r: RunResult, noisy: boolean, other: number): void {
  const m = r.measured;
  process.stderr.write(
    `${noisy ? `DISCARDED (other tasks on CPU ${serverCpu} ${fmt(other * 100)} % > ${maxOther} %) ` : ''}run ${i}${targets.length > 1 ? ` (${target})` : ''}: ${fmt(r.acceptedPerSec)} accepted/s (${fmt(m.accepted)} × 202 in ${fmt(m.seconds, 2)} s), non-2xx ${m.non2xx}, errors ${m.errors}, ` +
      `p50 ${fmt(m.latencyMs.p50, 1)} ms, p99 ${fmt(m.latencyMs.p99, 1)} ms, p99.9 ${fmt(m.latencyMs.p99_9, 1)} ms, max ${fmt(m.latencyMs.max, 1)} ms` +
      (r.cpu ? `, server CPU ${fmt(r.cpu.usPerAccepted ?? 0)} µs/accepted (main thread ${fmt(r.cpu.mainThreadUsPerAccepted ?? 0)}), ${fmt(r.cpu.utilisation * 100)} % of a core` : '') +
      (r.cpu?.threadUsPerAccepted ? ` [by thread, µs/accepted: ${byThread(r.cpu.threadUsPerAccepted)}]` : '') +
      `, generator ${fmt(r.generatorUtilisation * 100)} % of a core` +
      (r.serverCore ? `; other load on CPU ${serverCpu}: tasks ${fmt((r.serverCore.otherTasks ?? 0) * 100)} %, irq ${fmt(r.serverCore.irq * 100)} %, steal ${fmt(r.serverCore.steal * 100)} %` : '') +
      (r.serverMetrics
        ? `; receiver /metrics: event-loop lag p99 ${fmt(r.serverMetrics.loopLagP99Ms ?? 0, 1)} ms, max ${fmt(r.serverMetrics.loopLagMaxMs ?? 0, 1)} ms, ` +
          `GC ${Object.entries(r.serverMetrics.gcMs).map(([k, v]) => `${k} ${fmt(v)} ms`).join(' ')}, publish p99 ≤ ${fmt(r.serverMetrics.publishP99Ms ?? 0, 1)} ms`
        : '') +
      (r.rows !== null ? `; queue rows ${fmt(r.rows)} for ${fmt(r.expectedRows)} × 202 (warm-up included): ${r.queueCheck}` : '') +
      (r.shutdown === 'killed' ? '; server had to be SIGKILLed' : '') +
      '\n',
  );
}

if (cpuProfDir) {
  const profiles = readdirSync(cpuProfDir).filter((f) => f.endsWith('.cpuprofile'));
  process.stderr.write(`CPU profiles in ${cpuProfDir}: ${profiles.join(', ') || '(none written)'}\n`);
}

const header =
  '| Configuration | Conns | Offered | Accepted/s | p50 ms | p99 ms | p99.9 ms | non-2xx | errors | CPU µs/accepted (main thread) | Queue rows = 202s |\n' +
  '|---|---|---|---|---|---|---|---|---|---|---|';
const rows: string[] = [];
const checks: RunResult['queueCheck'][] = [];
for (const [target, results] of resultsBy) {
  if (results.length === 0) throw new Error(`every run was discarded as noisy (other tasks on CPU ${serverCpu} above ${maxOther} %); try again later or raise --max-other`);
  if (results.length < runs) process.stderr.write(`only ${results.length} of ${runs} runs of ${target} were clean after ${runs * 3} attempts\n`);
  const accepted = results.map((r) => r.acceptedPerSec);
  const p50 = results.map((r) => r.measured.latencyMs.p50);
  const p99 = results.map((r) => r.measured.latencyMs.p99);
  const p999 = results.map((r) => r.measured.latencyMs.p99_9);
  const cpuUs = results.flatMap((r) => (r.cpu?.usPerAccepted != null ? [r.cpu.usPerAccepted] : []));
  const mainUs = results.flatMap((r) => (r.cpu?.mainThreadUsPerAccepted != null ? [r.cpu.mainThreadUsPerAccepted] : []));
  const non2xx = results.reduce((a, r) => a + r.measured.non2xx, 0);
  const errors = results.reduce((a, r) => a + r.measured.errors, 0);
  const own = results.map((r) => r.queueCheck);
  checks.push(...own);
  const queueCell = target === 'bare' ? 'n/a' : own.every((c) => c === 'ok') ? `ok (${results.map((r) => `${fmt(r.rows ?? 0)}`).join(' / ')} rows)` : `**MISMATCH** (${own.join(', ')})`;
  rows.push(
    `| ${describe(target)} | ${connections} | ${rate ? `${fmt(rate)}/s` : 'max'} | ${spread(accepted)} | ${spread(p50, 1)} | ${spread(p99, 1)} | ${spread(p999, 1)} | ` +
      `${non2xx} | ${errors} | ${cpuUs.length ? `${spread(cpuUs)} (${fmt(median(mainUs))})` : '—'} | ${queueCell} |`,
  );
}
const bareRuns = resultsBy.get('bare');
const routerRuns = resultsBy.get('router');
const ratios = bareRuns && routerRuns ? routerRuns.map((r, k) => r.acceptedPerSec / (bareRuns[k] as RunResult).acceptedPerSec) : [];
const ratioLine = ratios.length ? `router ÷ bare, pair by pair: ${ratios.map((x) => `${fmt(x * 100)} %`).join(', ')}; median ${fmt(median(ratios) * 100)} %\n` : '';
const runCount = (resultsBy.get(targets[0] as Target) as RunResult[]).length;

process.stdout.write(`\n${header}\n${rows.join('\n')}\n\n${ratioLine}median (min–max) of ${runCount} run(s)${discarded.length ? ` (${discarded.length} discarded: other load on the server core above ${maxOther} %)` : ''}; non-2xx and errors summed over runs\ncommand: ${command}\n`);
if (args['json-out']) {
  const results = Object.fromEntries(resultsBy);
  writeFileSync(args['json-out'], `${JSON.stringify({ command, target: targetArg, synchronous, connections, rate, warmup, duration, results, ratios, discarded }, null, 2)}\n`);
}
if (checks.includes('mismatch')) process.exitCode = 1;
