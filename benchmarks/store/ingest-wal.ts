/**
 * How many bytes of SQLite WAL one ingested event costs the store, and how long its share of the transaction takes:
 * the schema of adapters/store/sql/migrations.ts on a file already holding `--preload` events, then `--events` more
 * ingested `--batch` to a transaction (one dedupe key, one event with an 8.3 KB body, one delivery each, the
 * statements of sql/store.ts ingest()), with checkpoints off so the WAL only grows. `--alter` runs extra DDL after
 * the migrations, to weigh a schema change before writing its migration.
 *
 *   node benchmarks/store/ingest-wal.ts [--batch 30] [--events 6000] [--preload 50000] [--page-size 4096] [--alter SQL]
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

const dir = mkdtempSync(join(tmpdir(), 'ingest-wal-'));
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
  let n = 0;
  const ingest = db.transaction((count: number) => {
    const now = Date.now();
    for (let i = 0; i < count; i++) {
      // Event and delivery ids are hashes, as in production (receiver.ts eventIdFor, store/ids.ts): random keys.
      const dedupeKey = `4242:${n++}`;
      const id = `evt_${hex(`github\n${dedupeKey}`)}`;
      key.run(id, 'github', dedupeKey, now + 7 * 86_400_000);
      const { seq } = event.get(id, 'github', 'github', dedupeKey, now, '{"x-github-event":"push"}', '{"event":"push","repository":"o/r"}', body, now) as { seq: number };
      delivery.run(`dlv_${hex(`${id}\nsub_1`)}`, id, seq, 'sub_1', now, now, now);
    }
  });
  for (let left = Number(args.preload); left > 0; left -= 500) ingest(Math.min(500, left));
  db.pragma('wal_checkpoint(TRUNCATE)');

  const wal = () => statSync(`${path}-wal`).size;
  const before = wal();
  const started = performance.now();
  for (let left = events; left > 0; left -= batchSize) ingest(Math.min(batchSize, left));
  const ms = performance.now() - started;
  const kb = (wal() - before) / events / 1024;
  db.close();
  process.stdout.write(
    `batch ${batchSize}, page ${args['page-size']} B${args.alter ? `, alter: ${args.alter}` : ''}: ${kb.toFixed(1)} KB of WAL and ${((ms * 1000) / events).toFixed(0)} µs per event (body ${body.length} B)\n`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
