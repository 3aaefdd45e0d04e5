/**
 * kill -9 durability of the worker (reliability.md §5 harness, §6 scenario 1), run as real processes.
 *
 * The router runs as two child processes sharing a SQLite queue and a SQLite store in a temp dir:
 * `node src/main.ts receiver --config <tmp>` and `node src/main.ts worker --config <tmp>` (`serve` now includes the
 * api role, which needs an encryption key and tokens this test has no use for). The subscribers are written into the
 * migrated store before either starts. A sink in this process plays three subscribers with overlapping filters: it
 * answers after 50 ms, and answers 500 to the first attempt of a fixed fifth of the deliveries so that retries are
 * scheduled (schedule 0.5 s, 1 s). 300 signed GitHub webhooks are sent at an open rate (150/s); a send that is not
 * answered 2xx is repeated with the same ids, as a redelivery script would.
 *
 * While deliveries are in flight and retries are scheduled, the worker gets SIGKILL (the receiver keeps accepting),
 * then a new worker starts on the same files. When every expected pair has arrived, or the recovery bound passed,
 * the ledgers are reconciled:
 *
 *   E  expected (event, subscriber) pairs, from a reference matcher written here, not the router's
 *   R  pairs the sink accepted (answered, or was about to answer, 2xx), read off each request's webhook-id
 *   D  pairs of the dead-lettered deliveries (store)
 *   missing    = E − R − D            must be empty ("nothing lost")
 *   spurious   = seen − E, or a webhook-id on another subscriber's path    must be empty
 *   duplicates = Σ (accepted − 1)     at most the worker's concurrency (what can be in flight when it dies)
 *
 * Every address is 127.0.0.1; children are killed by PID in `after`, even when the test failed.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Webhook } from 'standardwebhooks';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import type { DeadLetter } from '../../adapters/store/port.ts';
import { eventIdFor } from '../../src/receiver/receiver.ts';
import { deliveryIdFor, githubWebhook, newSubscriber, pairKeyFor, pairKeyOf, postWebhook, seedStore, type SubscriberInput } from '../helpers/router.ts';
import { type SinkRequest, slow, startSink } from '../helpers/sink.ts';
import { deliveryId as newGuid } from '../helpers/sign.ts';

// Fixture payloads are deep, loosely shaped JSON that the cases edit in place.
// biome-ignore lint/suspicious/noExplicitAny: test fixtures
type Json = Record<string, any>;

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = join(REPO, 'src', 'main.ts');

const EVENTS = 300;
const RATE_PER_SEC = 150;
const WORKER_CONCURRENCY = 16;
const SECRET = 'worker-crash-secret';
const HOOK_IDS = [11, 12, 13];
/** After the restart, how long every expected pair has to arrive. WORKER_CRASH_WAIT_MS overrides (a longer manual run). */
const RECOVERY_MS = Number(process.env.WORKER_CRASH_WAIT_MS ?? 20_000);
// ---------------------------------------------------------------------------------------------------------------
// Events and the reference matcher

interface Ev {
  readonly i: number;
  readonly event: 'push' | 'pull_request';
  readonly repo: string;
  readonly branch: string;
  readonly guid: string;
  readonly hookId: number;
  readonly eventId: string;
}

const examples = createRequire(import.meta.url)('@octokit/webhooks-examples') as { name: string; examples: Json[] }[];
const example = (name: string, index: number) => structuredClone(examples.find((d) => d.name === name)!.examples[index]!);

function makeEvent(i: number): Ev {
  const event = i % 3 === 0 ? 'pull_request' : 'push';
  const repo = ['other/x', 'acme/api', 'acme/web', 'acme/web'][i % 4]!;
  const branch = i % 5 === 0 ? 'dev' : 'main';
  const guid = newGuid();
  const hookId = HOOK_IDS[i % HOOK_IDS.length]!;
  return { i, event, repo, branch, guid, hookId, eventId: eventIdFor('github', `${hookId}:${guid}`) };
}

function payloadOf(e: Ev): Json {
  const p = e.event === 'push' ? example('push', 4) : example('pull_request', 14);
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

/** Three subscribers with overlapping filters: one event fans out to 0–3 of them. */
const SUBSCRIBERS: readonly { id: string; filter: NonNullable<SubscriberInput['filter']>; matches: (e: Ev) => boolean }[] = [
  { id: 'sub_push', filter: { events: ['push'] }, matches: (e) => e.event === 'push' },
  { id: 'sub_acme', filter: { repositories: ['acme/*'] }, matches: (e) => e.repo.startsWith('acme/') },
  { id: 'sub_main', filter: { branches: ['main'] }, matches: (e) => e.branch === 'main' },
];

/** The fixed fifth of deliveries whose first attempt the sink answers 500. */
const failsFirst = (webhookId: string) => createHash('sha256').update(webhookId).digest()[0]! % 5 === 0;

// ---------------------------------------------------------------------------------------------------------------
// Child processes

interface Child {
  readonly child: ChildProcess;
  /** The receiver's webhook URL (receiver role only). */
  readonly url: string | undefined;
  readonly lines: string[];
  readonly exited: Promise<void>;
}

const children = new Set<ChildProcess>();

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ROUTER_') && !k.startsWith('NODE_TEST')) env[k] = v;
  return env;
}

/** Starts one role and resolves once it logged that it started (with its bound ports). */
function startChild(role: 'receiver' | 'worker', configPath: string, cwd: string): Promise<Child> {
  const child = spawn(process.execPath, [MAIN, role, '--config', configPath], { cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const lines: string[] = [];
  const keep = (line: string) => {
    lines.push(line);
    if (lines.length > 200) lines.shift();
  };
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  createInterface({ input: child.stderr! }).on('line', keep);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the ${role} did not start within 15 s:\n${lines.slice(-20).join('\n')}`)), 15_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the ${role} exited during start-up (${code ?? signal}):\n${lines.slice(-20).join('\n')}`));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      keep(line);
      let entry: { msg?: string; ports?: { webhooks?: number } };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        return;
      }
      if (entry.msg !== 'webhook-router started') return;
      if (role === 'receiver' && !entry.ports?.webhooks) return;
      clearTimeout(timer);
      resolve({ child, url: entry.ports?.webhooks ? `http://127.0.0.1:${entry.ports.webhooks}/webhooks/github` : undefined, lines, exited });
    });
  });
}

async function stopChild(c: Child, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
  if (c.child.exitCode !== null || c.child.signalCode !== null) return;
  c.child.kill(signal);
  const timer = setTimeout(() => c.child.kill('SIGKILL'), timeoutMs);
  await c.exited;
  clearTimeout(timer);
}

after(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  }
});

// ---------------------------------------------------------------------------------------------------------------

describe('worker durability under kill -9', () => {
  test('a SIGKILLed worker loses nothing after a restart; duplicates stay within what was in flight', { timeout: RECOVERY_MS + 60_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'wr-crash-'));
    const sink = await startSink();
    let passed = false;
    try {
      // ── set-up: subscribers in the store before the router starts ──────────────────────────────────────────
      const subs = SUBSCRIBERS.map((s) =>
        newSubscriber({ id: s.id, url: sink.url(`/${s.id}`), filter: s.filter, retry: { schedule: [0.5, 1], maxAttempts: 6 } }),
      );
      const secretOf = new Map(subs.map((s) => [`/${s.id}`, s.secrets.current]));
      const storePath = join(dir, 'router.db');
      await seedStore(storePath, subs);
      const configPath = join(dir, 'router.yaml');
      writeFileSync(
        configPath,
        // JSON is YAML.
        JSON.stringify({
          listen: { webhooks: 0, api: 0, management: 0, host: '127.0.0.1' },
          // A short visibility timeout so queue messages the dead worker had received come back within the bound.
          queue: { kind: 'sqlite', path: join(dir, 'queue.db'), visibilityTimeoutMs: 3_000 },
          store: { kind: 'sqlite', path: storePath },
          sources: [{ id: 'github', kind: 'github', secrets: [SECRET] }],
          egress: { allow: ['127.0.0.1/32'] },
          delivery: { timeoutMs: 3_000 },
          worker: {
            concurrency: WORKER_CONCURRENCY,
            pollIntervalMs: 50,
            breaker: { cooldownMs: 500 },
            leaseMarginMs: 2_000, // what the killed worker held is claimable again 5 s after its claim
          },
          log: { level: 'info' },
          shutdownGraceMs: 1_000,
        }),
      );

      const events = Array.from({ length: EVENTS }, (_, i) => makeEvent(i));
      // (event, subscriber) pair → where it must arrive. Keyed by the pair's part of the webhook-id: the rest of it is
      // the router's receive time of the event, which only the router knows (adapters/store/ids.ts).
      const expected = new Map<string, { path: string; subscriberId: string; ev: Ev }>();
      for (const ev of events) {
        for (const s of SUBSCRIBERS) if (s.matches(ev)) expected.set(pairKeyFor(ev.eventId, s.id), { path: `/${s.id}`, subscriberId: s.id, ev });
      }
      const pairOf = (r: SinkRequest) => pairKeyOf(r.header('webhook-id') ?? '');
      sink.behave('/sub_push', (r) => answer(r));
      sink.behave('/sub_acme', (r) => answer(r));
      sink.behave('/sub_main', (r) => answer(r));
      function answer(r: SinkRequest) {
        return r.header('webhook-attempt') === '1' && failsFirst(r.header('webhook-id') ?? '') ? slow(50, 500) : slow(50, 200);
      }

      // ── phase 1: receiver and worker A under load ─────────────────────────────────────────────────────────
      const receiver = await startChild('receiver', configPath, dir);
      const url = receiver.url!;
      const workerA = await startChild('worker', configPath, dir);
      const ledger = new Map<number, { status: number; eventId: string | undefined; tries: number }>();
      const t0 = performance.now();
      const sends = events.map(async (ev, k) => {
        const due = t0 + (k * 1000) / RATE_PER_SEC;
        await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
        const req = githubWebhook({ event: ev.event, payload: payloadOf(ev), delivery: ev.guid, hookId: ev.hookId, secret: SECRET });
        const entry = { status: 0, eventId: undefined as string | undefined, tries: 0 };
        ledger.set(ev.i, entry);
        while (entry.tries < 5) {
          entry.tries += 1;
          try {
            const res = await postWebhook(url, req);
            entry.status = res.status;
            entry.eventId = res.eventId;
            if (res.status >= 200 && res.status < 300) return;
          } catch {
            entry.status = -1;
          }
          await new Promise((r) => setTimeout(r, 200)); // back off, then re-send the same request
        }
      });

      // Kill while deliveries are in flight at the sink and at least one retry is scheduled (a 500 was answered).
      const atKill = await sink.waitFor(
        (rs) => rs.length >= 200 && rs.some((r) => r.answer === 500 && r.answeredAt !== undefined) && rs.some((r) => r.answeredAt === undefined),
        20_000,
        'waiting for deliveries in flight and a scheduled retry',
      );
      workerA.child.kill('SIGKILL');
      const killedAt = Date.now();
      const killedAtPerf = performance.now();
      const inflightAtSink = atKill.filter((r) => r.answeredAt === undefined).length;
      await workerA.exited;
      const acceptedBeforeKill = [...ledger.values()].filter((e) => e.status >= 200 && e.status < 300).length;

      // ── phase 2: a new worker on the same files ─────────────────────────────────────────────────────────────
      const workerB = await startChild('worker', configPath, dir);
      const restartedAt = performance.now();
      await Promise.all(sends);
      const unaccepted = events.filter((ev) => !(ledger.get(ev.i)!.status >= 200 && ledger.get(ev.i)!.status < 300));
      assert.deepEqual(unaccepted.map((e) => e.i), [], 'some webhooks were never accepted');
      for (const ev of events) assert.equal(ledger.get(ev.i)!.eventId, ev.eventId, 'the receiver derived another event id');

      const accepted = (rs: readonly SinkRequest[]) => {
        const ok = new Map<string, number>();
        for (const r of rs) {
          if (typeof r.answer === 'number' && r.answer >= 200 && r.answer < 300) {
            const pair = pairOf(r);
            ok.set(pair, (ok.get(pair) ?? 0) + 1);
          }
        }
        return ok;
      };
      const left = Math.max(0, RECOVERY_MS - (performance.now() - restartedAt));
      await sink
        .waitFor((rs) => {
          const ok = accepted(rs);
          return [...expected.keys()].every((pair) => ok.has(pair));
        }, left)
        .catch(() => {}); // the reconciliation below says what is missing
      const recoveredMs = performance.now() - restartedAt;
      await stopChild(workerB, 'SIGTERM', 5_000);
      await stopChild(receiver, 'SIGTERM', 5_000);

      // ── reconcile ─────────────────────────────────────────────────────────────────────────────────────────
      const all = sink.requests();
      const ok = accepted(all);
      const store = createSqliteStore({ kind: 'sqlite', path: storePath });
      await store.connect();
      const dead: DeadLetter[] = [];
      try {
        let cursor: string | undefined;
        do {
          const page = await store.listDeadLetters({}, { limit: 500, cursor });
          dead.push(...page.items);
          cursor = page.nextCursor;
        } while (cursor);
        const deadPairs = new Set(dead.map((d) => pairKeyOf(d.deliveryId ?? '')));
        const missing = [...expected.keys()].filter((pair) => !ok.has(pair) && !deadPairs.has(pair));
        const spurious = all.filter((r) => expected.get(pairOf(r))?.path !== r.path);
        const duplicates = [...ok.values()].reduce((n, c) => n + c - 1, 0);
        const badSignatures = all.filter((r) => {
          try {
            new Webhook(secretOf.get(r.path) ?? 'whsec_AAAA').verify(r.body, r.headers as Record<string, string>);
            return false;
          } catch {
            return true;
          }
        });
        const states = await Promise.all(
          missing.map(async (pair) => {
            const { ev, subscriberId } = expected.get(pair)!;
            const [event] = await store.loadEvents([ev.eventId]);
            return event && store.getDelivery(deliveryIdFor(ev.eventId, subscriberId, event.receivedAt));
          }),
        );

        t.diagnostic(
          `events ${EVENTS} (accepted before the kill: ${acceptedBeforeKill}), expected deliveries ${expected.size}, sink requests ${all.length}, ` +
            `accepted ${ok.size}, dead-lettered ${dead.length}, missing ${missing.length}, spurious ${spurious.length}`,
        );
        t.diagnostic(
          `duplicates ${duplicates} (bound: worker concurrency ${WORKER_CONCURRENCY}); in flight at the sink when killed: ${inflightAtSink}; ` +
            `waited ${recoveredMs.toFixed(0)} ms after the restart`,
        );
        const dupPairs = [...ok.entries()].filter(([, c]) => c > 1).map(([pair]) => pair);
        for (const pair of dupPairs.slice(0, 30)) {
          const times = all
            .filter((r) => pairOf(r) === pair)
            .map((r) => `${r.answer}@${(r.at - killedAtPerf).toFixed(0)}ms${r.answeredAt === undefined ? '' : `/answered ${(r.answeredAt - killedAtPerf).toFixed(0)}ms`} attempt ${r.header('webhook-attempt')}`);
          t.diagnostic(`duplicate pair ${pair}: ${times.join(', ')} (relative to the kill)`);
        }
        for (const [i, s] of states.slice(0, 20).entries()) {
          t.diagnostic(
            `missing ${missing[i]}: ${s ? `${s.status}, ${s.attempts} attempt(s), next attempt ${s.nextAttemptAt === undefined ? '-' : `${((s.nextAttemptAt - killedAt) / 1000).toFixed(1)} s after the kill`}` : 'no delivery row'}`,
          );
        }

        assert.deepEqual(spurious.map((r) => `${r.path} ${r.header('webhook-id')}`), [], 'deliveries reached a subscriber that does not match them');
        assert.equal(badSignatures.length, 0, 'some deliveries carried a webhook-signature that does not verify');
        assert.equal(dead.filter((d) => d.reason !== 'max_attempts').length, 0, `unexpected dead letters: ${JSON.stringify(dead.slice(0, 3))}`);
        // Whatever is missing must still be owned by the store (pending), never silently dropped.
        for (const [i, s] of states.entries()) assert.equal(s?.status, 'pending', `missing ${missing[i]} is ${s?.status ?? 'gone from the store'}`);
        assert.ok(duplicates <= 2 * WORKER_CONCURRENCY, `${duplicates} duplicate deliveries, far more than could have been in flight (${WORKER_CONCURRENCY})`);

        assert.ok(duplicates <= WORKER_CONCURRENCY, `${duplicates} duplicate deliveries, more than could have been in flight (${WORKER_CONCURRENCY})`);
        assert.deepEqual(missing, [], `${missing.length} expected deliveries neither arrived nor were dead-lettered`);
      } finally {
        await store.close();
      }
      passed = true;
    } finally {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await sink.close();
      if (passed && !process.env.KEEP_TEST_TMP) rmSync(dir, { recursive: true, force: true });
      else t.diagnostic(`kept ${dir}`);
    }
  });
});
