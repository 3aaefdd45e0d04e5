/**
 * The load generator of the ingest benchmark: one process (pinned by run.ts to its own core) that drives autocannon
 * against a receiver on 127.0.0.1 and prints one JSON line with what it measured.
 *
 *   node benchmarks/ingest/load.ts --url http://127.0.0.1:PORT/webhooks/github --body-file F --signature sha256=…
 *     [--connections 100] [--warmup 3] [--duration 10] [--rate N [--pacer autocannon|uniform]]
 *     [--server-pid PID --server-cpu N] [--max-requests N]
 *
 * - Keep-alive, no pipelining; every request carries a fresh X-GitHub-Delivery (a random UUID) through autocannon's
 *   setupRequest. GitHub signs only the body, so one signature is valid for every request, and no request is a repeat
 *   that the receiver's recent-keys hint would answer with 200.
 * - A warm-up run (same shape, not reported as the result) precedes the measured run. Both are counted, because both
 *   write to the queue: run.ts checks the queue's row count against every 202. With `--pacer uniform` the warm-up is
 *   autocannon's closed loop at the same rate instead: a cold receiver falls behind an open-loop pacer, and the
 *   backlog it built (up to 300 ms of requests at 4,000/s after a 2 s warm-up) was still draining during the first
 *   1.5 s of the measured run, which then set its p99. A closed loop has at most `connections` requests out when it
 *   ends. The paced phase then opens its own connections with one request each before its clock starts.
 * - `--rate N` (default pacer `autocannon`) is autocannon's `overallRate`: N requests per second spread over the
 *   connections. Note how autocannon paces (lib/httpClient.js): each connection sends back to back until it has used
 *   its share for the current second, then waits for the next one-second tick. So the average is N/s, but the load
 *   arrives as a burst at full speed at the start of every second, and the latency percentiles are those of that
 *   burst (recorded raw, ignoreCoordinatedOmission). `--pacer uniform` instead issues the due requests every
 *   millisecond on an undici Pool (open loop, latency from the time each request was due): latency at a steady load.
 * - With `--server-pid`, the receiver's CPU time (utime + stime from /proc) is read right before and after the
 *   measured run: the whole process, the main thread, and each thread name (the router names its SQLite threads;
 *   V8's helpers share one name and are summed). A thread that starts or ends during the run is left out of the
 *   per-name figures.
 * - Only 127.0.0.1/localhost/::1 URLs are accepted, and the run ends by itself after warm-up + duration.
 */
import { randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

/** The part of autocannon's programmatic API used here (the package ships no type declarations). */
interface AutocannonResult {
  duration: number;
  requests: { sent: number };
  latency: Record<string, number>;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodeStats?: Record<string, { count: number }>;
}
type Autocannon = (opts: Record<string, unknown>, cb: (err: Error | null, result: AutocannonResult) => void) => unknown;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    'body-file': { type: 'string' },
    signature: { type: 'string' },
    connections: { type: 'string', default: '100' },
    warmup: { type: 'string', default: '3' },
    duration: { type: 'string', default: '10' },
    rate: { type: 'string' },
    pacer: { type: 'string', default: 'autocannon' },
    'server-pid': { type: 'string' },
    'server-cpu': { type: 'string' },
    'max-requests': { type: 'string', default: '5000000' },
    'hook-id': { type: 'string', default: '424242424' },
  },
  strict: true,
});

function int(name: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in [${min}, ${max}], got ${value}`);
  return n;
}

if (!args.url || !args['body-file'] || !args.signature) throw new Error('--url, --body-file and --signature are required');
const url = new URL(args.url);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) throw new Error(`refusing to load ${url.hostname}: 127.0.0.1 only`);
const connections = int('connections', args.connections, 1, 2_000);
const warmup = int('warmup', args.warmup, 0, 60);
const duration = int('duration', args.duration, 1, 300);
const rate = args.rate === undefined ? undefined : int('rate', args.rate, 1, 1_000_000);
const pacer = args.pacer;
if (pacer !== 'autocannon' && pacer !== 'uniform') throw new Error('--pacer must be autocannon or uniform');
if (pacer === 'uniform' && !rate) throw new Error('--pacer uniform needs --rate');
const maxRequests = int('max-requests', args['max-requests'], 1, 100_000_000);
const serverPid = args['server-pid'] === undefined ? undefined : int('server-pid', args['server-pid'], 1, 2 ** 22);
const serverCpu = args['server-cpu'] === undefined ? undefined : int('server-cpu', args['server-cpu'], 0, 1_023);
const body = readFileSync(args['body-file']);

const headers: Record<string, string> = {
  'content-type': 'application/json',
  'user-agent': 'GitHub-Hookshot/bench',
  'x-github-event': 'push',
  'x-github-hook-id': args['hook-id'] as string,
  'x-github-hook-installation-target-type': 'repository',
  'x-github-hook-installation-target-id': '186853002',
  'x-hub-signature-256': args.signature,
};

interface Phase {
  seconds: number;
  sent: number;
  responses: number;
  accepted: number; // 202 only
  /** 202s before the phase's clock started (pacedPhase opens its connections so): rows in the queue, not figures. */
  primed: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  latencyMs: { p50: number; p90: number; p99: number; p99_9: number; max: number; mean: number };
}

function phase(seconds: number): Promise<Phase> {
  return pacer === 'uniform' && rate ? pacedPhase(seconds, rate) : autocannonPhase(seconds);
}

function autocannonPhase(seconds: number): Promise<Phase> {
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: url.origin,
        connections,
        pipelining: 1,
        duration: seconds,
        maxOverallRequests: maxRequests,
        timeout: 10,
        ...(rate ? { overallRate: rate, ignoreCoordinatedOmission: true } : {}),
        requests: [
          {
            method: 'POST',
            path: url.pathname,
            headers,
            body,
            setupRequest: (req: { headers: Record<string, string> }) => {
              req.headers['x-github-delivery'] = randomUUID();
              return req;
            },
          },
        ],
      },
      (err, r) => {
        if (err) return reject(err);
        const statusCodes: Record<string, number> = {};
        for (const [code, s] of Object.entries(r.statusCodeStats ?? {})) statusCodes[code] = s.count;
        const l = r.latency;
        resolve({
          seconds: r.duration,
          sent: r.requests.sent,
          responses: Object.values(statusCodes).reduce((a, b) => a + b, 0),
          accepted: statusCodes['202'] ?? 0,
          primed: 0,
          non2xx: r.non2xx,
          errors: r.errors,
          timeouts: r.timeouts,
          statusCodes,
          latencyMs: { p50: l.p50 ?? 0, p90: l.p90 ?? 0, p99: l.p99 ?? 0, p99_9: l.p99_9 ?? 0, max: l.max ?? 0, mean: l.mean ?? 0 },
        });
      },
    );
  });
}

const percentile = (sorted: Float64Array, p: number) => (sorted.length ? (sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0) : 0);

/**
 * Open-loop load at a steady rate (the `uniform` pacer): every millisecond, the requests that are due by then are
 * issued on an undici Pool of `connections` keep-alive connections (one request in flight per connection; more wait
 * in the pool's queue). Latency runs from the moment a request was due, not from when a connection became free, so
 * a stalled server shows in the percentiles (no coordinated omission). At most 20 × connections requests may be
 * outstanding: beyond that, due requests are skipped and counted (the rate was not sustained). The phase ends by
 * itself: it stops issuing after `seconds`, and waits at most 10 s for the stragglers.
 */
async function pacedPhase(seconds: number, perSecond: number): Promise<Phase> {
  const pool = new Pool(url.origin, { connections, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const latencies = new Float64Array(Math.ceil(perSecond * seconds) + 1);
  const statusCodes: Record<string, number> = {};
  let issued = 0;
  let done = 0;
  let errors = 0;
  let timeouts = 0;
  let skipped = 0;
  let outstanding = 0;
  let primed = 0;
  const post = () => pool.request({ method: 'POST', path: url.pathname, headers: { ...headers, 'x-github-delivery': randomUUID() }, body });
  // One request per connection before the clock starts: opening 100 connections inside the measured second put a
  // backlog of about 200 ms at its start (the first 1.2 s set the p99). Their 202s are the phase's `primed`, counted
  // for the queue's rows and in none of its figures.
  await Promise.all(
    Array.from({ length: connections }, async () => {
      const res = await post();
      await res.body.dump();
      if (res.statusCode === 202) primed++;
    }),
  );
  const started = performance.now();
  const send = (dueAt: number) => {
    outstanding++;
    post()
      .then(async (res) => {
        await res.body.dump();
        const code = String(res.statusCode);
        statusCodes[code] = (statusCodes[code] ?? 0) + 1;
        latencies[done++] = performance.now() - dueAt;
      })
      .catch((err: { code?: string }) => {
        errors++;
        if (err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT') timeouts++;
      })
      .finally(() => outstanding--);
  };
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const elapsed = performance.now() - started;
      const due = Math.min(Math.floor((Math.min(elapsed, seconds * 1_000) * perSecond) / 1_000), latencies.length - 1);
      for (; issued < due; issued++) {
        if (outstanding >= connections * 20 || issued >= maxRequests) skipped++;
        else send(started + (issued * 1_000) / perSecond);
      }
      if (elapsed >= seconds * 1_000) {
        clearInterval(tick);
        resolve();
      }
    }, 1);
  });
  const deadline = performance.now() + 10_000;
  while (outstanding > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await pool.destroy();
  const sorted = latencies.subarray(0, done).sort();
  const sum = sorted.reduce((a, b) => a + b, 0);
  const codes = Object.entries(statusCodes);
  return {
    seconds,
    sent: issued - skipped,
    responses: done,
    accepted: statusCodes['202'] ?? 0,
    primed,
    non2xx: codes.filter(([c]) => !c.startsWith('2')).reduce((a, [, n]) => a + n, 0),
    errors: errors + skipped,
    timeouts,
    statusCodes: skipped ? { ...statusCodes, skipped } : statusCodes,
    latencyMs: {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      p99_9: percentile(sorted, 99.9),
      max: sorted.length ? (sorted[sorted.length - 1] ?? 0) : 0,
      mean: sorted.length ? sum / sorted.length : 0,
    },
  };
}

/** utime + stime in clock ticks: the whole process and each of its threads (by id, with its name). */
function cpuTicks(pid: number): { total: number; threads: Map<string, { name: string; ticks: number }> } {
  const read = (path: string) => {
    const stat = readFileSync(path, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields[0] is field 3 (state)
    return Number(fields[11]) + Number(fields[12]); // fields 14 (utime) and 15 (stime)
  };
  const threads = new Map<string, { name: string; ticks: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      threads.set(tid, { name: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), ticks: read(`/proc/${pid}/task/${tid}/stat`) });
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return { total: read(`/proc/${pid}/stat`), threads };
}

/** CPU seconds per thread name between two readings, for the threads present in both. */
function secondsByThreadName(before: ReturnType<typeof cpuTicks>, after: ReturnType<typeof cpuTicks>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [tid, a] of after.threads) {
    const b = before.threads.get(tid);
    if (b?.name === a.name) out[a.name] = (out[a.name] ?? 0) + (a.ticks - b.ticks) / clockTicks;
  }
  return out;
}

/** Ticks of one CPU from /proc/stat: tasks (user + nice + system), interrupts (irq + softirq), steal, all. */
function coreTicks(cpu: number): { tasks: number; irq: number; steal: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${cpu} `));
  const f = (line ?? '').trim().split(/\s+/).slice(1, 9).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return { tasks: user + nice + system, irq: irq + softirq, steal, total: f.reduce((a, b) => a + b, 0) };
}

const clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

const warm = warmup > 0 ? await autocannonPhase(warmup) : undefined;
const before = serverPid ? cpuTicks(serverPid) : undefined;
const coreBefore = serverCpu === undefined ? undefined : coreTicks(serverCpu);
const started = process.hrtime.bigint();
const selfBefore = process.cpuUsage();
const measured = await phase(duration);
const self = process.cpuUsage(selfBefore);
const wallSec = Number(process.hrtime.bigint() - started) / 1e9;
const after = serverPid ? cpuTicks(serverPid) : undefined;
const coreAfter = serverCpu === undefined ? undefined : coreTicks(serverCpu);
// The generator's own share of its core: near 100 % means the generator, not the server, may be the limit.
const generatorUtilisation = (self.user + self.system) / 1e6 / wallSec;

const cpu =
  before && after
    ? {
        seconds: (after.total - before.total) / clockTicks,
        // The main thread's id is the process's.
        mainThreadSeconds: ((after.threads.get(String(serverPid))?.ticks ?? 0) - (before.threads.get(String(serverPid))?.ticks ?? 0)) / clockTicks,
        threadSeconds: secondsByThreadName(before, after),
        wallSeconds: wallSec,
      }
    : undefined;
// Other processes on the server's core (the machines are shared and noisy), interrupts and steal, as shares of it.
const serverCore =
  coreBefore && coreAfter
    ? (() => {
        const span = coreAfter.total - coreBefore.total || 1;
        return {
          otherTasks: cpu ? Math.max(0, (coreAfter.tasks - coreBefore.tasks) / clockTicks - cpu.seconds) / wallSec : null,
          irq: (coreAfter.irq - coreBefore.irq) / span,
          steal: (coreAfter.steal - coreBefore.steal) / span,
        };
      })()
    : null;

process.stdout.write(
  `${JSON.stringify({
    connections,
    rate: rate ?? null,
    pacer,
    bodyBytes: body.length,
    warmup: warm ?? null,
    measured,
    acceptedPerSec: measured.accepted / measured.seconds,
    generatorUtilisation,
    serverCore,
    cpu: cpu
      ? {
          ...cpu,
          usPerAccepted: measured.accepted > 0 ? (cpu.seconds * 1e6) / measured.accepted : null,
          mainThreadUsPerAccepted: measured.accepted > 0 ? (cpu.mainThreadSeconds * 1e6) / measured.accepted : null,
          threadUsPerAccepted:
            measured.accepted > 0 ? Object.fromEntries(Object.entries(cpu.threadSeconds).map(([name, s]) => [name, (s * 1e6) / measured.accepted])) : null,
          utilisation: cpu.seconds / wallSec,
        }
      : null,
  })}\n`,
);
