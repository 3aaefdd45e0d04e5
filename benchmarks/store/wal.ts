/**
 * How many bytes of SQLite WAL one event costs the store on its way through, and how long each step takes: the
 * store itself (adapters/store/sqlite-sql.ts, the code the store thread runs, migrated to the latest schema) on a
 * file already holding `--preload` delivered events, then `--events` more, `--batch` to a call, each batch through
 * the three writing steps of the hot path: ingest (dedupe key, event with an 8.3 KB body, one delivery), claimDue
 * and complete (attempt row, delivered). No checkpointer runs, so the WAL only grows. `--alter` runs extra DDL after
 * the migrations, to weigh a schema change before writing its migration.
 *
 *   node benchmarks/store/wal.ts [--batch 30] [--events 6000] [--preload 50000] [--page-size 4096] [--alter SQL]
 *
 * Runs in a fresh temp directory, removed afterwards; touches nothing else.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { deliveryIdFor } from '../../adapters/store/ids.ts';
import type { IngestItem } from '../../adapters/store/port.ts';
import { createSqliteSqlStore, openSqliteStoreFile } from '../../adapters/store/sqlite-sql.ts';
import { eventIdFor } from '../../src/receiver/receiver.ts';

const { values: args } = parseArgs({
  options: {
    batch: { type: 'string', default: '30' },
    events: { type: 'string', default: '6000' },
    preload: { type: 'string', default: '50000' },
    'page-size': { type: 'string', default: '4096' },
    alter: { type: 'string' },
  },
  strict: true,
});
const batchSize = Number(args.batch);
const events = Number(args.events);
const OWNER = 'worker-1';
const SUBSCRIBER = 'sub_1';

const dir = mkdtempSync(join(tmpdir(), 'store-wal-'));
const path = join(dir, 'store.db');
try {
  // The page size applies only to a file that has no table yet, so it is set before the store opens the file.
  const fresh = new Database(path);
  fresh.pragma(`page_size = ${Number(args['page-size'])}`);
  fresh.close();
  const store = createSqliteSqlStore(() => openSqliteStoreFile(path));
  await store.migrate();
  if (args.alter) {
    const side = new Database(path);
    side.exec(args.alter);
    side.close();
  }

  const body = randomBytes(8_336);
  let n = 0;
  const items = (count: number): IngestItem[] =>
    Array.from({ length: count }, () => {
      // Event and delivery ids are hashes, as in production: random keys.
      const dedupeKey = `4242:${n++}`;
      const id = eventIdFor('github', dedupeKey);
      const event = { id, source: 'github', sourceKind: 'github', dedupeKey, receivedAt: Date.now(), headers: { 'x-github-event': 'push' }, routing: { event: 'push', repository: 'o/r' }, body };
      return { event, deliveries: [{ id: deliveryIdFor(id, SUBSCRIBER, event.receivedAt), subscriberId: SUBSCRIBER, orderingKey: undefined }] };
    });

  const wal = () => statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0;
  const steps = { ingest: { bytes: 0, ms: 0 }, claim: { bytes: 0, ms: 0 }, complete: { bytes: 0, ms: 0 } };
  const step = async <T>(name: keyof typeof steps, fn: () => Promise<T>): Promise<T> => {
    const bytes = wal();
    const started = performance.now();
    const out = await fn();
    steps[name].ms += performance.now() - started;
    steps[name].bytes += wal() - bytes;
    return out;
  };
  const pass = async (count: number) => {
    const now = Date.now();
    await step('ingest', () => store.ingest(items(count), now));
    const claimed = await step('claim', () => store.claimDue({ owner: OWNER, now, leaseMs: 30_000, limit: count, exclude: [] }));
    if (claimed.length !== count) throw new Error(`claimed ${claimed.length} of ${count}: the file is not as this harness left it`);
    const done = claimed.map((c) => ({
      attempt: { deliveryId: c.id, attempt: c.attempt, startedAt: now, durationMs: 3, outcome: 'delivered' as const, code: undefined, status: 204, response: undefined },
      next: { status: 'delivered' as const },
    }));
    await step('complete', () => store.complete(OWNER, done, now));
  };
  for (let left = Number(args.preload); left > 0; left -= 256) await pass(Math.min(256, left));
  const side = new Database(path);
  side.pragma('wal_checkpoint(TRUNCATE)');
  side.close();
  for (const s of Object.values(steps)) Object.assign(s, { bytes: 0, ms: 0 });
  for (let left = events; left > 0; left -= batchSize) await pass(Math.min(batchSize, left));
  await store.close();
  const per = ({ bytes, ms }: { bytes: number; ms: number }) => `${(bytes / events / 1024).toFixed(1)} KB ${((ms * 1000) / events).toFixed(0)} µs`;
  const total = Object.values(steps).reduce((a, s) => ({ bytes: a.bytes + s.bytes, ms: a.ms + s.ms }), { bytes: 0, ms: 0 });
  process.stdout.write(
    `batch ${batchSize}, page ${args['page-size']} B${args.alter ? `, alter: ${args.alter}` : ''}; WAL and time per event: ` +
      `ingest ${per(steps.ingest)}, claim ${per(steps.claim)}, complete ${per(steps.complete)}; all ${per(total)} (body ${body.length} B)\n`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
