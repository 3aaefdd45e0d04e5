/**
 * End-to-end throughput of the scale-out topology: receivers and workers as separate processes
 * (`node src/main.ts receiver|worker|api --config <tmp>`), PostgreSQL store, Redis Streams or Kafka queue, the same
 * harness as test/e2e/topology.test.ts (test/helpers/topology.ts), at saturation, with 1 receiver + 1 worker and
 * with 2 + 2. Not a test: it prints figures.
 *
 *   node benchmarks/end-to-end/topology.ts [--queues redis,kafka] [--sizes 1+1,2+2] [--runs 3] [--duration 15]
 *        [--warmup 3] [--connections 64] [--backlog 2000] [--subscriber-concurrency N] [--max-other 25] [--pin]
 *        [--json-out FILE]
 *
 * One run: a fresh PostgreSQL schema and stream/topic; migrate; API; four subscribers through POST /v1/subscribers
 * (the test's overlapping filters, 2.4 deliveries per event on average) on a loopback sink that answers 200 at once;
 * then N receivers and N workers. The generator is closed-loop: `--connections` concurrent senders, round-robin
 * over the receivers, each sending the next event as soon as its previous one was answered (re-sent with the same
 * ids on a connection error or 5xx), but only while fewer than `--backlog` expected deliveries of accepted events
 * are still missing at the sink. So the pipeline as a whole is saturated (receivers, queue, workers, store, sink)
 * without an unbounded backlog; end-to-end latency at saturation is then mostly that bounded queue (Little's law:
 * ≈ backlog / delivered-per-second), not a property of any one stage.
 *
 * Measured over `--duration` seconds after `--warmup`: accepted/s (2xx answers), delivered/s (2xx sink answers),
 * p50/p99 latency (first send → first 2xx arrival of each pair whose event was first sent in the window), the CPU
 * each process group used (from /proc/<pid>/stat: receivers, workers, API, this generator+sink process, PostgreSQL,
 * redis-server, the Kafka JVM) and the machine's total. Then sending stops, the pipeline drains (bounded, 60 s), and
 * the run is reconciled like the test: lost = expected − received − dead-lettered, duplicates = Σ (count − 1).
 *
 * Each configuration runs `--runs` times; the summary is the median (min–max) and the ratio of the 2 + 2 median to
 * the 1 + 1 median. The machine is shared: before each run the harness waits (≤ 60 s) until it is quiet (< 30 % of
 * both cores busy), and a run during which processes outside the measured groups used more than `--max-other` % of
 * one core (default 25) is printed, discarded and repeated (at most 3 × runs attempts). `--sizes` also takes
 * unequal shapes (`1+2`, `2+1`); `--subscriber-concurrency` sets every subscriber's limits.concurrency (default 10).
 *
 * `--pin`: router processes on CPU 0 (`taskset -c 0`), this process (generator + sink) on CPU 1; PostgreSQL, Redis
 * and Kafka are shared services and are never re-pinned. Default: nothing pinned.
 *
 * Bounds: every address is 127.0.0.1; each phase is bounded; every child is SIGKILLed by its PID at the end, on
 * error and on Ctrl-C. Requires POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test), REDIS_URL (default
 * redis://127.0.0.1:6379) and, for kafka, KAFKA_BROKERS.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import {
  apiClient,
  backendEnv,
  type ConfigInput,
  type CreatedSubscriber,
  createSubscribers,
  deleteKafkaTopic,
  deleteRedisStream,
  dropPostgresSchema,
  isAccepted,
  killAllChildren,
  listDeadLetters,
  makeEvent,
  newCredentials,
  newSchemaName,
  newSendAgent,
  payloadOf,
  percentile,
  probeKafka,
  probePostgres,
  probeRedis,
  reconcile,
  type SentEntry,
  SUBSCRIBER_PLANS,
  sendWithResend,
  startLedgerSink,
  startTopology,
  type Topology,
  type TopoEvent,
  topologyConfig,
  waitFor,
} from '../../test/helpers/topology.ts';
import { githubRequest } from '../../test/helpers/sign.ts';

const { values: args } = parseArgs({
  options: {
    queues: { type: 'string', default: 'redis,kafka' },
    sizes: { type: 'string', default: '1+1,2+2' },
    'subscriber-concurrency': { type: 'string' },
    'max-other': { type: 'string', default: '25' },
    runs: { type: 'string', default: '3' },
    duration: { type: 'string', default: '15' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    backlog: { type: 'string', default: '2000' },
    pin: { type: 'boolean', default: false },
    'json-out': { type: 'string' },
  },
});

const QUEUES = args.queues.split(',').map((q) => q.trim()) as ('redis' | 'kafka')[];
/** Receivers+workers per configuration: `1+1,2+2` (a bare `2` means 2+2). */
const SIZES = args.sizes.split(',').map((s) => {
  const [r, w] = (s.includes('+') ? s.split('+') : [s, s]).map(Number) as [number, number];
  return { receivers: r, workers: w, label: `${r}+${w}` };
});
/** limits.concurrency of every subscriber (the API's default, 10, when unset). */
const SUBSCRIBER_CONCURRENCY = args['subscriber-concurrency'] === undefined ? undefined : Number(args['subscriber-concurrency']);
/** A run during which other processes used more than this (% of one core) is discarded and repeated. */
const MAX_OTHER = Number(args['max-other']);
const RUNS = Math.min(20, Math.max(1, Number(args.runs)));
const DURATION_S = Math.min(300, Math.max(1, Number(args.duration)));
const WARMUP_S = Math.min(60, Math.max(0, Number(args.warmup)));
const CONNECTIONS = Math.min(1_000, Math.max(1, Number(args.connections)));
const BACKLOG = Math.max(1, Number(args.backlog));
const DRAIN_MS = 60_000;
const CLK_TCK = 100;

for (const q of QUEUES) if (q !== 'redis' && q !== 'kafka') throw new Error(`unknown queue ${q}`);
for (const s of SIZES) {
  for (const n of [s.receivers, s.workers]) if (!Number.isInteger(n) || n < 1 || n > 4) throw new Error(`sizes are 1–4 receivers + 1–4 workers, got ${s.label}`);
}

process.on('SIGINT', () => {
  void killAllChildren().then(() => process.exit(130));
});

// ---------------------------------------------------------------------------------------------------------------
// CPU accounting from /proc

/** utime + stime of a process (all threads), ms; undefined when it is gone. */
function cpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** PIDs whose comm is `comm` (and whose cmdline contains `cmdline`, when given). */
function pidsOf(comm: string, cmdline?: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() !== comm) continue;
      if (cmdline && !readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(cmdline)) continue;
      out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

/** Busy and total jiffies of the whole machine. */
function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (line[3] ?? 0) + (line[4] ?? 0);
  const total = line.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

type Groups = Record<string, number[]>;

function snapshot(groups: Groups): Record<string, Map<number, number>> {
  const out: Record<string, Map<number, number>> = {};
  for (const [name, pids] of Object.entries(groups)) {
    const m = new Map<number, number>();
    for (const pid of pids) {
      const v = cpuMs(pid);
      if (v !== undefined) m.set(pid, v);
    }
    out[name] = m;
  }
  return out;
}

/** CPU % of one core used by each group between two snapshots. */
function cpuShare(a: Record<string, Map<number, number>>, b: Record<string, Map<number, number>>, ms: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, after] of Object.entries(b)) {
    let used = 0;
    for (const [pid, v] of after) used += v - (a[name]?.get(pid) ?? v);
    out[name] = (100 * used) / ms;
  }
  return out;
}

async function waitQuiet(maxWaitMs = 60_000): Promise<number> {
  const started = performance.now();
  for (;;) {
    const a = machineTicks();
    await sleep(1_000);
    const b = machineTicks();
    const busy = (100 * (b.busy - a.busy)) / Math.max(1, b.total - a.total);
    if (busy < 30 || performance.now() - started > maxWaitMs) return busy;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One run

interface RunResult {
  queue: string;
  size: string;
  run: number;
  acceptedPerSec: number;
  deliveredPerSec: number;
  p50: number;
  p99: number;
  /** p50/p99 ms per subscriber. */
  perSubscriber: string;
  lost: number;
  duplicates: number;
  spurious: number;
  drained: boolean;
  deadLetters: number;
  events: number;
  expected: number;
  resent: number;
  unaccepted: number;
  busyBefore: number;
  cpu: Record<string, number>;
  machineBusy: number;
  /** CPU (% of one core) used during the window by processes outside the groups measured: other people's work. */
  other: number;
}

/** Request bodies per (event, repository, branch): built once; every request still has its own delivery id. */
const bodies = new Map<string, string>();
function bodyOf(e: TopoEvent): string {
  const key = `${e.event} ${e.repo} ${e.branch}`;
  let b = bodies.get(key);
  if (b === undefined) bodies.set(key, (b = JSON.stringify(payloadOf(e))));
  return b;
}

async function oneRun(queueKind: 'redis' | 'kafka', shape: (typeof SIZES)[number], run: number): Promise<RunResult> {
  const busyBefore = await waitQuiet();
  const dir = mkdtempSync(join(tmpdir(), `wr-bench-topo-${queueKind}-`));
  const schema = newSchemaName();
  const tag = `${process.pid}-${Date.now().toString(36)}`;
  const queue: ConfigInput['queue'] =
    queueKind === 'redis'
      ? { kind: 'redis', url: backendEnv.redisUrl, stream: `wr-bench:${tag}`, group: `wr-bench:${tag}:workers` }
      : { kind: 'kafka', brokers: backendEnv.kafkaBrokers!, topic: `wr-bench-${tag}`, groupId: `wr-bench-${tag}-workers`, partitions: 4, sessionTimeoutMs: 6_000 };
  const credentials = newCredentials();
  const config = topologyConfig({
    queue,
    store: { kind: 'postgres', url: backendEnv.postgresUrl, schema, poolSize: 8 },
    credentials,
    logLevel: 'info',
    delivery: { timeoutMs: 5_000 },
  });
  const sink = await startLedgerSink(() => ({ status: 200 }), { verify: false });
  const agent = newSendAgent(CONNECTIONS);
  let topo: Topology | undefined;
  try {
    let subscribers: CreatedSubscriber[] = [];
    topo = await startTopology({
      dir,
      config,
      receivers: shape.receivers,
      workers: shape.workers,
      ...(args.pin ? { taskset: '0' } : {}),
      setup: async (apiUrl) => {
        subscribers = await createSubscribers(
          apiClient(apiUrl, credentials.adminToken),
          sink.origin,
          SUBSCRIBER_PLANS,
          SUBSCRIBER_CONCURRENCY === undefined ? {} : { limits: { concurrency: SUBSCRIBER_CONCURRENCY } },
        );
      },
    });
    const fanOut = (e: TopoEvent) => subscribers.filter((s) => s.plan.matches(e)).length;

    // ── closed-loop generator with a bound on deliveries still owed ─────────────────────────────────────────
    const events: TopoEvent[] = [];
    const ledger = new Map<number, SentEntry>();
    let expectedTotal = 0;
    let stopped = false;
    const owed = () => expectedTotal - sink.accepted.size;
    const receiverUrls = topo.receiverUrls;
    let next = 0;
    const loop = async (c: number) => {
      while (!stopped) {
        if (owed() >= BACKLOG) {
          await sleep(2);
          continue;
        }
        const ev = makeEvent(next++);
        events.push(ev);
        const entry: SentEntry = { ev, firstSentAt: performance.now(), tries: 0, status: 0, eventId: undefined, acceptedAt: undefined, lastError: undefined };
        ledger.set(ev.i, entry);
        const req = githubRequest({ secret: credentials.webhookSecret, body: bodyOf(ev), event: ev.event, delivery: ev.guid, hookId: ev.hookId });
        await sendWithResend(entry, req, receiverUrls, c + ev.i, { dispatcher: agent, maxTries: 5, retryDelayMs: 200, stopped: () => stopped });
        if (isAccepted(entry)) expectedTotal += fanOut(ev);
      }
    };
    const loops = Array.from({ length: CONNECTIONS }, (_, c) => loop(c));

    await sleep(WARMUP_S * 1000);
    const groups: Groups = {
      receivers: topo.receivers.map((r) => r.pid),
      workers: topo.workers.map((w) => w.pid),
      api: [topo.api.pid],
      'generator+sink': [process.pid],
      postgres: pidsOf('postgres'),
      'redis-server': pidsOf('redis-server'),
      // The broker of KAFKA_PID (start.sh exports it); other Kafka JVMs on the machine count as "other".
      kafka: process.env.KAFKA_PID ? [Number(process.env.KAFKA_PID)] : pidsOf('java', 'kafka.Kafka'),
    };
    const w0 = performance.now();
    const cpu0 = snapshot(groups);
    const m0 = machineTicks();
    await sleep(DURATION_S * 1000);
    const w1 = performance.now();
    const cpu1 = snapshot(groups);
    const m1 = machineTicks();
    stopped = true;
    await Promise.all(loops);

    // ── drain, then reconcile ─────────────────────────────────────────────────────────────────────────────────
    const ctx = { events, ledger, subscribers, sink };
    const drained = await waitFor(() => owed() <= 0, DRAIN_MS, 200);
    const dead = await listDeadLetters(apiClient(topo.apiUrl, credentials.adminToken));
    await topo.stop();
    const r = reconcile({ ...ctx, dead });

    const windowMs = w1 - w0;
    const acceptedInWindow = [...ledger.values()].filter((e) => e.acceptedAt !== undefined && e.acceptedAt >= w0 && e.acceptedAt < w1).length;
    const deliveredInWindow = sink.arrivals.filter((a) => a.answer === 200 && a.at >= w0 && a.at < w1).length;
    const lat: number[] = [];
    const latBySub = new Map<string, number[]>(subscribers.map((s) => [s.name, []]));
    for (const e of ledger.values()) {
      if (!isAccepted(e) || e.firstSentAt < w0 || e.firstSentAt >= w1) continue;
      for (const s of subscribers) {
        if (!s.plan.matches(e.ev)) continue;
        const at = sink.firstAcceptedAt.get(`${e.ev.guid}|${s.name}`);
        if (at !== undefined) {
          lat.push(at - e.firstSentAt);
          latBySub.get(s.name)!.push(at - e.firstSentAt);
        }
      }
    }
    lat.sort((a, b) => a - b);
    const perSubscriber = [...latBySub]
      .map(([name, xs]) => {
        xs.sort((a, b) => a - b);
        return `${name} ${percentile(xs, 50).toFixed(0)}/${percentile(xs, 99).toFixed(0)}`;
      })
      .join(', ');
    const cpu = cpuShare(cpu0, cpu1, windowMs);
    const result: RunResult = {
      queue: queueKind,
      size: shape.label,
      run,
      acceptedPerSec: (acceptedInWindow * 1000) / windowMs,
      deliveredPerSec: (deliveredInWindow * 1000) / windowMs,
      p50: percentile(lat, 50),
      p99: percentile(lat, 99),
      perSubscriber,
      lost: r.missing.length,
      duplicates: r.duplicates,
      spurious: r.spurious.length,
      drained,
      deadLetters: r.deadLetters,
      events: r.events,
      expected: r.expected,
      resent: [...ledger.values()].filter((e) => e.tries > 1).length,
      unaccepted: r.events - r.acceptedEvents,
      busyBefore,
      cpu,
      machineBusy: (100 * (m1.busy - m0.busy)) / Math.max(1, m1.total - m0.total),
      other: 0,
    };
    result.other = (result.machineBusy * cpus().length) - Object.values(cpu).reduce((a, b) => a + b, 0);
    if (drained && r.missing.length === 0) {
      rmSync(dir, { recursive: true, force: true });
      await dropPostgresSchema(schema).catch(() => {});
      if (queue.kind === 'redis') await deleteRedisStream(queue.stream!).catch(() => {});
      if (queue.kind === 'kafka') await deleteKafkaTopic(queue.topic!, queue.groupId!).catch(() => {});
    } else {
      process.stderr.write(`kept ${dir}, schema ${schema} (not drained or lost deliveries)\n${topo.logs(8)}\n`);
    }
    return result;
  } finally {
    await topo?.stop().catch(() => {});
    await killAllChildren();
    await sink.close();
    await agent.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (xs: number[], digits = 0) => `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;

async function main(): Promise<void> {
  await probePostgres();
  const queues: ('redis' | 'kafka')[] = [];
  for (const q of QUEUES) {
    try {
      await (q === 'redis' ? probeRedis() : probeKafka());
      queues.push(q);
    } catch (err) {
      process.stdout.write(`skipped: ${q}: ${err instanceof Error ? err.message : err}\n`);
    }
  }
  if (args.pin) execFileSync('taskset', ['-pc', '1', String(process.pid)], { stdio: 'ignore' });
  const machine = `${hostname()}: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Node ${process.version}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`;
  process.stdout.write(`${machine}\n${new Date().toISOString()}\n`);
  const results: RunResult[] = [];
  const discarded: RunResult[] = [];
  const line = (r: RunResult, note = '') => {
    const cpu = Object.entries(r.cpu)
      .filter(([, v]) => v > 0.5)
      .map(([k, v]) => `${k} ${v.toFixed(0)}%`)
      .join(', ');
    process.stdout.write(
      `${r.queue} ${r.size} run ${r.run}${note}: accepted ${r.acceptedPerSec.toFixed(0)}/s, delivered ${r.deliveredPerSec.toFixed(0)}/s, ` +
        `p50 ${r.p50.toFixed(0)} ms, p99 ${r.p99.toFixed(0)} ms (per subscriber p50/p99: ${r.perSubscriber}), lost ${r.lost}, duplicates ${r.duplicates}, spurious ${r.spurious}, ` +
        `${r.drained ? 'drained' : 'NOT drained'} (${r.events} events, ${r.expected} deliveries, ${r.resent} re-sent, ${r.unaccepted} never accepted); ` +
        `CPU (% of one core) ${cpu}, other processes ${r.other.toFixed(0)}%; machine ${r.machineBusy.toFixed(0)}% busy (before the run ${r.busyBefore.toFixed(0)}%)\n`,
    );
  };
  for (const q of queues) {
    for (const shape of SIZES) {
      // A run disturbed by other work on the machine is printed, discarded and repeated (at most 3 × runs attempts).
      let kept = 0;
      for (let attempt = 1; kept < RUNS && attempt <= 3 * RUNS; attempt++) {
        const r = await oneRun(q, shape, kept + 1);
        if (r.other > MAX_OTHER) {
          discarded.push(r);
          line(r, ` DISCARDED (other processes used ${r.other.toFixed(0)}% > ${MAX_OTHER}%)`);
          continue;
        }
        kept += 1;
        results.push(r);
        line(r);
      }
    }
  }

  const lines: string[] = [];
  lines.push(
    '| queue | receivers+workers | accepted/s | delivered/s | p50 ms | p99 ms | lost | duplicated | CPU % of one core: receivers / workers / PostgreSQL / queue server / generator+sink / other | machine busy | runs (discarded) |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  const name = (q: string) => `PostgreSQL + ${q === 'redis' ? 'Redis' : 'Kafka'}`;
  for (const q of queues) {
    for (const shape of SIZES) {
      const rs = results.filter((r) => r.queue === q && r.size === shape.label);
      if (rs.length === 0) continue;
      const c = (k: string) => median(rs.map((r) => r.cpu[k] ?? 0)).toFixed(0);
      const d = discarded.filter((r) => r.queue === q && r.size === shape.label).length;
      lines.push(
        `| ${name(q)} | ${shape.label} | ${fmt(rs.map((r) => r.acceptedPerSec))} | ${fmt(rs.map((r) => r.deliveredPerSec))} | ` +
          `${fmt(rs.map((r) => r.p50))} | ${fmt(rs.map((r) => r.p99))} | ${rs.reduce((n, r) => n + r.lost, 0)} | ${rs.reduce((n, r) => n + r.duplicates, 0)} | ` +
          `${c('receivers')} / ${c('workers')} / ${c('postgres')} / ${q === 'redis' ? c('redis-server') : c('kafka')} / ${c('generator+sink')} / ` +
          `${median(rs.map((r) => r.other)).toFixed(0)} | ${fmt(rs.map((r) => r.machineBusy))} % | ${rs.length} (${d}) |`,
      );
    }
    const m = (label: string, k: 'acceptedPerSec' | 'deliveredPerSec') => median(results.filter((r) => r.queue === q && r.size === label).map((r) => r[k]));
    if (results.some((r) => r.queue === q && r.size === '1+1') && results.some((r) => r.queue === q && r.size === '2+2')) {
      lines.push(
        `| ${name(q)} | **2+2 ÷ 1+1** | **${(m('2+2', 'acceptedPerSec') / m('1+1', 'acceptedPerSec')).toFixed(2)}×** | ` +
          `**${(m('2+2', 'deliveredPerSec') / m('1+1', 'deliveredPerSec')).toFixed(2)}×** | | | | | | | |`,
      );
    }
  }
  const command = `node benchmarks/end-to-end/topology.ts ${process.argv.slice(2).join(' ')}`.trim();
  process.stdout.write(`\n${lines.join('\n')}\n\ncommand: ${command}\n`);
  if (args['json-out']) writeFileSync(args['json-out'], `${JSON.stringify({ machine, date: new Date().toISOString(), command, args, results, discarded }, null, 2)}\n`);
}

try {
  await main();
} finally {
  await killAllChildren();
}
