/**
 * How many bytes of SQLite WAL one event costs the store on its way through, and how long each step takes: the
 * schema of adapters/store/sql/migrations.ts on a file already holding `--preload` delivered events, then
 * `--events` more, `--batch` to a transaction, each batch through the three writing steps of the hot path with the
 * statements sql/store.ts uses: ingest (dedupe key, event with an 8.3 KB body, one delivery), claim (lease), and
 * complete (attempt row, delivered). Checkpoints are off, so the WAL only grows. `--alter` runs extra DDL after the
 * migrations, to weigh a schema change before writing its migration.
 *
 *   node benchmarks/store/wal.ts [--batch 30] [--events 6000] [--preload 50000] [--page-size 4096] [--alter SQL]
 *
 * Runs in a fresh temp directory, removed afterwards; touches nothing else.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { migrations, render, sqliteWords } from '../../adapters/store/sql/migrations.ts';

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

const dir = mkdtempSync(join(tmpdir(), 'store-wal-'));
const path = join(dir, 'store.db');
try {
  const db = new Database(path);
  db.pragma(`page_size = ${Number(args['page-size'])}`);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL'); // as the store thread
  db.pragma('wal_autocheckpoint = 0');
  for (const m of migrations) for (const statement of m.statements) db.exec(render(statement, sqliteWords));
  if (args.alter) db.exec(args.alter);

  const body = randomBytes(8_336);
  const hex = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 32);
  const key = db.prepare('INSERT INTO dedupe_keys (event_id, source, dedupe_key, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING');
  const event = db.prepare(
    'INSERT INTO events (id, source, source_kind, dedupe_key, received_at, headers, routing, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING seq',
  );
  const delivery = db.prepare(
    `INSERT INTO deliveries (id, event_id, event_seq, subscriber_id, status, attempts, cycle, next_attempt_at, ordering_key, created_at, updated_at)
     VALUES (?, ?, ?, ?, 'pending', 0, 1, ?, NULL, ?, ?) ON CONFLICT (id) DO NOTHING`,
  );
  const claim = db.prepare('UPDATE deliveries SET lease_owner = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?');
  const held = db.prepare(`SELECT id, seq FROM deliveries WHERE lease_owner = ? AND status = 'pending' AND id = ?`);
  const attempt = db.prepare(
    `INSERT INTO attempts (delivery_id, delivery_seq, attempt, started_at, duration_ms, outcome, code, status, response)
     VALUES (?, ?, 1, ?, 3, 'delivered', NULL, 204, NULL)`,
  );
  const delivered = db.prepare(
    `UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, lease_owner = NULL, last_code = NULL, last_status = NULL, updated_at = ?
     WHERE lease_owner = ? AND status = 'pending' AND id = ?`,
  );
  let n = 0;
  const ingest = db.transaction((count: number): string[] => {
    const now = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      // Event and delivery ids are hashes, as in production (receiver.ts eventIdFor, store/ids.ts): random keys.
      const dedupeKey = `4242:${n++}`;
      const id = `evt_${hex(`github\n${dedupeKey}`)}`;
      key.run(id, 'github', dedupeKey, now + 7 * 86_400_000);
      const { seq } = event.get(id, 'github', 'github', dedupeKey, now, '{"x-github-event":"push"}', '{"event":"push","repository":"o/r"}', body, now) as { seq: number };
      const deliveryId = `dlv_${hex(`${id}\nsub_1`)}`;
      delivery.run(deliveryId, id, seq, 'sub_1', now, now, now);
      ids.push(deliveryId);
    }
    return ids;
  });
  const claimAll = db.transaction((ids: readonly string[]) => {
    const now = Date.now();
    for (const id of ids) claim.run('worker-1', now + 30_000, now, id);
  });
  const completeAll = db.transaction((ids: readonly string[]) => {
    const now = Date.now();
    for (const id of ids) {
      const { seq } = held.get('worker-1', id) as { seq: number };
      attempt.run(id, seq, now);
      delivered.run(now, 'worker-1', id);
    }
  });
  const wal = () => statSync(`${path}-wal`).size;
  const steps = { ingest: { bytes: 0, ms: 0 }, claim: { bytes: 0, ms: 0 }, complete: { bytes: 0, ms: 0 } };
  const step = <T>(name: keyof typeof steps, fn: () => T): T => {
    const bytes = wal();
    const started = performance.now();
    const out = fn();
    steps[name].ms += performance.now() - started;
    steps[name].bytes += wal() - bytes;
    return out;
  };
  const pass = (count: number) => {
    const ids = step('ingest', () => ingest(count));
    step('claim', () => claimAll(ids));
    step('complete', () => completeAll(ids));
  };
  for (let left = Number(args.preload); left > 0; left -= 500) pass(Math.min(500, left));
  db.pragma('wal_checkpoint(TRUNCATE)');
  for (const s of Object.values(steps)) Object.assign(s, { bytes: 0, ms: 0 });
  for (let left = events; left > 0; left -= batchSize) pass(Math.min(batchSize, left));
  db.close();
  const per = ({ bytes, ms }: { bytes: number; ms: number }) => `${(bytes / events / 1024).toFixed(1)} KB ${((ms * 1000) / events).toFixed(0)} µs`;
  const total = Object.values(steps).reduce((a, s) => ({ bytes: a.bytes + s.bytes, ms: a.ms + s.ms }), { bytes: 0, ms: 0 });
  process.stdout.write(
    `batch ${batchSize}, page ${args['page-size']} B${args.alter ? `, alter: ${args.alter}` : ''}; WAL and time per event: ` +
      `ingest ${per(steps.ingest)}, claim ${per(steps.claim)}, complete ${per(steps.complete)}; all ${per(total)} (body ${body.length} B)\n`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
