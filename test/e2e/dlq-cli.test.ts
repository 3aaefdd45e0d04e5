import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CommanderError } from 'commander';
import { deliveryIdFor } from '../../adapters/store/ids.ts';
import type { Store } from '../../adapters/store/port.ts';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import { type CliIo, buildCli } from '../../src/cli.ts';
import { parseTime } from '../../src/dlq/time.ts';

const dir = mkdtempSync(join(tmpdir(), 'wr-dlq-'));
const dbPath = join(dir, 'router.db');
const configPath = join(dir, 'router.yaml');
writeFileSync(configPath, `store: { kind: sqlite, path: ${dbPath} }\nqueue: { kind: memory }\nsources: [{ id: github, kind: github, secrets: [s] }]\n`);

let store: Store;
const DAY = 86_400_000;
const t0 = Date.now() - 3 * DAY;

function subscriber(id: string) {
  return {
    id,
    name: id,
    enabled: true,
    filter: { sources: [], events: [], repositories: [], branches: [] },
    transport: { kind: 'https', url: 'https://example.com/hook' },
    retry: { schedule: 'standard' as const, maxAttempts: 1 },
    limits: { concurrency: 1, perSecond: 0 },
    ordering: null,
    secrets: { current: 'whsec_c2VjcmV0' },
  };
}

/** Dead-letters one delivery of a new event for `sub` at time `at`, with `reason`. */
async function deadLetter(n: number, sub: string, at: number, reason: 'max_attempts' | 'endpoint_gone') {
  const eventId = `evt_${n}`;
  const id = deliveryIdFor(eventId, sub, at);
  await store.ingest(
    [{ event: { id: eventId, source: 'github', sourceKind: 'github', dedupeKey: `k${n}`, receivedAt: at, headers: {}, routing: { event: 'push' }, body: Buffer.from('{}') }, deliveries: [{ id, subscriberId: sub, orderingKey: undefined }] }],
    at,
  );
  const [claim] = await store.claimDue({ owner: 'test', now: at, leaseMs: 1000, limit: 1, exclude: [] });
  assert.equal(claim?.id, id);
  await store.complete(
    'test',
    [{ attempt: { deliveryId: id, attempt: 1, startedAt: at, durationMs: 5, outcome: reason === 'endpoint_gone' ? 'permanent' : 'retryable', code: reason === 'endpoint_gone' ? 'http_410' : 'http_5xx', status: reason === 'endpoint_gone' ? 410 : 503, response: undefined }, next: { status: 'dead', reason } }],
    at,
  );
  return id;
}

async function cli(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  let exitCode = 0;
  const io: CliIo = {
    env: {},
    dataDir: dir,
    readFile: (p) => readFileSync(p, 'utf8'),
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    stderrIsTTY: false,
    setExitCode: (c) => {
      exitCode = c;
    },
    runService: async () => {},
  };
  try {
    await buildCli(io).parseAsync(['node', 'webhook-router', '--config', configPath, ...args]);
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    exitCode = e.exitCode;
  }
  return { out: out.join(''), err: err.join(''), exitCode };
}

const ids: string[] = [];
before(async () => {
  store = createSqliteStore({ kind: 'sqlite', path: dbPath });
  await store.connect();
  await store.migrate();
  await store.createSubscriber(subscriber('sub_a'), t0);
  await store.createSubscriber(subscriber('sub_b'), t0);
  ids.push(await deadLetter(1, 'sub_a', t0, 'max_attempts'));
  ids.push(await deadLetter(2, 'sub_a', t0 + DAY, 'endpoint_gone'));
  ids.push(await deadLetter(3, 'sub_b', t0 + 2 * DAY, 'max_attempts'));
  await store.recordPoison('queue message 7: envelope has no metadata line', t0 + 2 * DAY);
});
after(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('webhook-router dlq', () => {
  test('list filters by subscriber, reason and time, in a table or as JSON', async () => {
    const all = await cli('dlq', 'list', '--json');
    assert.equal(all.exitCode, 0, all.err);
    assert.equal(JSON.parse(all.out).length, 4);
    const bySub = JSON.parse((await cli('dlq', 'list', '--subscriber', 'sub_a', '--json')).out) as { id: string }[];
    assert.deepEqual(bySub.map((l) => l.id), ids.slice(0, 2));
    const byReason = JSON.parse((await cli('dlq', 'list', '--reason', 'endpoint_gone', '--json')).out) as { id: string }[];
    assert.deepEqual(byReason.map((l) => l.id), [ids[1]]);
    const recent = JSON.parse((await cli('dlq', 'list', '--since', '36h', '--json')).out) as { reason: string }[];
    assert.deepEqual(recent.map((l) => l.reason).sort(), ['max_attempts', 'poison']);
    const limited = JSON.parse((await cli('dlq', 'list', '--limit', '1', '--json')).out);
    assert.equal(limited.length, 1);
    const table = await cli('dlq', 'list');
    assert.match(table.out, /REASON\s+SUBSCRIBER/);
    assert.match(table.out, /4 dead letter\(s\)/);
  });

  test('show prints the dead letter with its attempts', async () => {
    const r = await cli('dlq', 'show', ids[1] as string);
    assert.equal(r.exitCode, 0);
    const view = JSON.parse(r.out);
    assert.equal(view.reason, 'endpoint_gone');
    assert.equal(view.delivery.attemptLog[0].status, 410);
    assert.equal((await cli('dlq', 'show', 'nope')).exitCode, 1);
  });

  test('bad filters are usage errors (exit 2)', async () => {
    assert.equal((await cli('dlq', 'list', '--since', 'yesterday')).exitCode, 2);
    assert.equal((await cli('dlq', 'replay', '--rate', '0')).exitCode, 2);
    assert.equal((await cli('dlq', 'purge')).exitCode, 2);
  });

  test('replay --dry-run changes nothing; replay keeps the webhook-id and starts a new cycle', async () => {
    const dry = await cli('dlq', 'replay', '--subscriber', 'sub_a', '--dry-run', '--json');
    assert.deepEqual(JSON.parse(dry.out).wouldReplay, ids.slice(0, 2));
    assert.equal(JSON.parse((await cli('dlq', 'list', '--json')).out).length, 4);

    const r = await cli('dlq', 'replay', '--subscriber', 'sub_a', '--reason', 'max_attempts', '--rate', '100/s', '--json');
    assert.deepEqual(JSON.parse(r.out), { replayed: 1, selected: 1 });
    const delivery = await store.getDelivery(ids[0] as string);
    assert.equal(delivery?.status, 'pending');
    assert.equal(delivery?.cycle, 2);
    assert.equal(delivery?.id, ids[0], 'same webhook-id');
    assert.equal(await store.getDeadLetter(ids[0] as string), undefined);
  });

  test('replay --to-subscriber delivers the event to another subscriber', async () => {
    const r = await cli('dlq', 'replay', '--subscriber', 'sub_b', '--to-subscriber', 'sub_a', '--json');
    assert.deepEqual(JSON.parse(r.out), { replayed: 1, selected: 1 });
    const redirected = await store.getDelivery(deliveryIdFor('evt_3', 'sub_a', t0 + 2 * DAY)); // evt_3 was received then
    assert.equal(redirected?.status, 'pending');
    assert.equal((await cli('dlq', 'replay', '--to-subscriber', 'sub_zzz')).exitCode, 2);
  });

  test('purge removes what the filter selects; poison letters are never replayed', async () => {
    const replayPoison = await cli('dlq', 'replay', '--reason', 'poison', '--json');
    assert.deepEqual(JSON.parse(replayPoison.out), { replayed: 0, selected: 0 });
    const r = await cli('dlq', 'purge', '--reason', 'poison', '--json');
    assert.deepEqual(JSON.parse(r.out), { purged: 1 });
    const left = JSON.parse((await cli('dlq', 'list', '--json')).out) as { id: string }[];
    assert.deepEqual(left.map((l) => l.id), [ids[1]]);
    assert.deepEqual(JSON.parse((await cli('dlq', 'purge', '--all', '--json')).out), { purged: 1 });
  });
});

test('parseTime reads ISO 8601 and durations ago', () => {
  const now = Date.parse('2026-11-25T12:00:00Z');
  assert.equal(parseTime('2h', now), now - 7_200_000);
  assert.equal(parseTime('90s', now), now - 90_000);
  assert.equal(parseTime('1.5d', now), now - 129_600_000);
  assert.equal(parseTime('2026-11-24T12:00:00Z', now), now - 86_400_000);
  assert.equal(parseTime('2026-11-24', now), Date.parse('2026-11-24'));
  assert.equal(parseTime('yesterday', now), undefined);
  assert.equal(parseTime('12', now), undefined);
});
