/**
 * One migration set for both SQL stores. DDL is written once with a few dialect words filled in ({blob}, {bigint},
 * {serial}); everything else is SQL both SQLite (≥ 3.35) and PostgreSQL (≥ 13) accept.
 *
 * Versions only grow. A process refuses to run on a schema newer than it knows (an older release against a newer
 * database) or older than it needs (run `webhook-router migrate`).
 */
export interface SqlDialectWords {
  readonly blob: string;
  readonly bigint: string;
  /** An auto-incrementing integer primary key column type. */
  readonly serial: string;
}

export const sqliteWords: SqlDialectWords = { blob: 'BLOB', bigint: 'INTEGER', serial: 'INTEGER PRIMARY KEY AUTOINCREMENT' };
export const postgresWords: SqlDialectWords = { blob: 'BYTEA', bigint: 'BIGINT', serial: 'BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY' };

export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly statements: readonly string[];
}

const v1 = `
CREATE TABLE router_meta (
  key   TEXT PRIMARY KEY,
  value {bigint} NOT NULL
);
INSERT INTO router_meta (key, value) VALUES ('subscribers_version', 0);

CREATE TABLE subscribers (
  seq             {serial},
  id              TEXT NOT NULL UNIQUE,
  name            TEXT NOT NULL,
  enabled         INTEGER NOT NULL,
  spec            TEXT NOT NULL,
  secrets         TEXT NOT NULL,
  disabled_reason TEXT,
  version         INTEGER NOT NULL,
  created_at      {bigint} NOT NULL,
  updated_at      {bigint} NOT NULL
);

CREATE TABLE events (
  seq          {serial},
  id           TEXT NOT NULL UNIQUE,
  source       TEXT NOT NULL,
  source_kind  TEXT NOT NULL,
  dedupe_key   TEXT NOT NULL,
  received_at  {bigint} NOT NULL,
  headers      TEXT NOT NULL,
  routing      TEXT NOT NULL,
  body         {blob} NOT NULL,
  created_at   {bigint} NOT NULL
);
CREATE INDEX events_created ON events (created_at);

CREATE TABLE dedupe_keys (
  event_id    TEXT PRIMARY KEY,
  source      TEXT NOT NULL,
  dedupe_key  TEXT NOT NULL,
  expires_at  {bigint} NOT NULL
);
CREATE INDEX dedupe_keys_expires ON dedupe_keys (expires_at);

CREATE TABLE deliveries (
  seq              {serial},
  id               TEXT NOT NULL UNIQUE,
  event_id         TEXT NOT NULL,
  event_seq        {bigint} NOT NULL,
  subscriber_id    TEXT NOT NULL,
  status           TEXT NOT NULL,
  attempts         INTEGER NOT NULL,
  cycle            INTEGER NOT NULL,
  next_attempt_at  {bigint} NOT NULL,
  lease_owner      TEXT,
  ordering_key     TEXT,
  last_code        TEXT,
  last_status      INTEGER,
  created_at       {bigint} NOT NULL,
  updated_at       {bigint} NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_ordering ON deliveries (subscriber_id, ordering_key, event_seq) WHERE status = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX deliveries_subscriber ON deliveries (subscriber_id, seq);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_updated ON deliveries (updated_at);

CREATE TABLE attempts (
  seq          {serial},
  delivery_id  TEXT NOT NULL,
  attempt      INTEGER NOT NULL,
  started_at   {bigint} NOT NULL,
  duration_ms  INTEGER NOT NULL,
  outcome      TEXT NOT NULL,
  code         TEXT,
  status       INTEGER,
  response     TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

CREATE TABLE dead_letters (
  seq            {serial},
  id             TEXT NOT NULL UNIQUE,
  delivery_id    TEXT,
  event_id       TEXT,
  subscriber_id  TEXT,
  reason         TEXT NOT NULL,
  last_code      TEXT,
  last_status    INTEGER,
  attempts       INTEGER NOT NULL,
  detail         TEXT,
  created_at     {bigint} NOT NULL
);
CREATE INDEX dead_letters_created ON dead_letters (created_at);
`;

function split(ddl: string): string[] {
  return ddl
    .split(';')
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * Deliveries found by their event through event_seq, which grows with every insert, instead of event_id, a hash:
 * each insert into the event_id index dirtied a random page, and the ingest transaction wrote 32.4 KB of WAL per
 * event instead of 27.5 and took 12 % longer (benchmarks/store/wal.ts, RESULTS.md of 2 December 2026).
 */
const v2 = `
DROP INDEX deliveries_event;
CREATE INDEX deliveries_event_seq ON deliveries (event_seq);
`;

/**
 * Attempts found by their delivery's seq instead of its id (a hash), for the same reason: the attempts_delivery
 * index took 5.4 of the 6.4 KB of WAL a completed delivery wrote. Attempts recorded before are given their seq here.
 */
const v3 = `
ALTER TABLE attempts ADD COLUMN delivery_seq {bigint};
UPDATE attempts SET delivery_seq = (SELECT d.seq FROM deliveries d WHERE d.id = attempts.delivery_id);
DROP INDEX attempts_delivery;
CREATE INDEX attempts_delivery_seq ON attempts (delivery_seq);
`;

/**
 * Dedupe by the events table alone. An event id is derived from (source, dedupe key), so events.id already held every
 * key dedupe_keys did, and the sweep already kept an event as long as its key: the second table only added a second
 * index on the same random keys to every ingest (5.8 of the 27.3 KB of WAL an ingest wrote per event, and about a
 * third of its time: benchmarks/store/wal.ts, RESULTS.md of 3 December 2026). The dedupe
 * window is now how long events are kept: at least retention.dedupeDays. Every key in dedupe_keys has its event
 * (they were written together and the event outlived the key), so nothing is lost with the table.
 */
const v4 = `
DROP TABLE dedupe_keys;
`;

export const migrations: readonly Migration[] = [
  { version: 1, description: 'initial schema', statements: split(v1) },
  { version: 2, description: 'deliveries indexed by event_seq instead of event_id', statements: split(v2) },
  { version: 3, description: 'attempts indexed by delivery_seq instead of delivery_id', statements: split(v3) },
  { version: 4, description: 'dedupe by events.id alone; dedupe_keys dropped', statements: split(v4) },
];

export const latestVersion = migrations.at(-1)?.version ?? 0;

export function render(statement: string, words: SqlDialectWords): string {
  return statement.replaceAll('{blob}', words.blob).replaceAll('{bigint}', words.bigint).replaceAll('{serial}', words.serial);
}
