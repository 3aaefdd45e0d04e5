/**
 * `webhook-router dlq list | show | replay | purge`: dead-letter operations against the configured store, so an
 * operator can run them inside any pod. Selection filters are shared by list, replay and purge. Replay puts a
 * delivery through a new attempt cycle with the same webhook-id (or, with --to-subscriber, creates a delivery of
 * the same event for another subscriber); it is paced by --rate and previewed by --dry-run.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { DeadLetter, DeadLetterFilter, Store } from '../../adapters/store/port.ts';
import { parseTime } from './time.ts';

export interface SelectOptions {
  subscriber?: string;
  event?: string;
  reason?: string;
  since?: string;
  until?: string;
  limit?: string;
}

export interface DlqIo {
  readonly out: (text: string) => void;
  /** Progress on a terminal; undefined when stderr is not one (scripts, --json). */
  readonly progress: ((done: number, total: number) => void) | undefined;
  readonly now: () => number;
}

export class DlqUsageError extends Error {
  override name = 'DlqUsageError';
}

const PAGE = 500;

export function toFilter(options: SelectOptions, now: number): { filter: DeadLetterFilter; limit: number } {
  const time = (name: 'since' | 'until') => {
    const raw = options[name];
    if (raw === undefined) return undefined;
    const t = parseTime(raw, now);
    if (t === undefined) throw new DlqUsageError(`--${name} must be ISO 8601 or a duration like 2h, got "${raw}"`);
    return t;
  };
  const limit = options.limit === undefined ? Number.POSITIVE_INFINITY : Number(options.limit);
  if (!(limit > 0) || (Number.isFinite(limit) && !Number.isInteger(limit))) throw new DlqUsageError('--limit must be a positive integer');
  return {
    filter: { subscriber: options.subscriber, event: options.event, reason: options.reason, since: time('since'), until: time('until') },
    limit,
  };
}

export async function select(store: Store, filter: DeadLetterFilter, limit: number): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.listDeadLetters(filter, { limit: Math.min(PAGE, limit - out.length), cursor });
    out.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor && out.length < limit);
  return out;
}

const iso = (t: number) => new Date(t).toISOString();

function table(letters: readonly DeadLetter[]): string {
  const rows = letters.map((l) => [l.id, l.reason, l.subscriberId ?? '-', l.eventId ?? '-', String(l.attempts), l.lastStatus ?? l.lastCode ?? '-', iso(l.createdAt)]);
  const head = ['ID', 'REASON', 'SUBSCRIBER', 'EVENT', 'ATTEMPTS', 'LAST', 'DEAD SINCE'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  return [head, ...rows].map((r) => r.map((c, i) => String(c).padEnd(widths[i] as number)).join('  ').trimEnd()).join('\n');
}

export async function dlqList(store: Store, options: SelectOptions & { json?: boolean }, io: DlqIo): Promise<void> {
  const { filter, limit } = toFilter(options, io.now());
  const letters = await select(store, filter, limit);
  if (options.json) io.out(`${JSON.stringify(letters.map(serialise), null, 2)}\n`);
  else io.out(letters.length === 0 ? 'no dead letters match\n' : `${table(letters)}\n${letters.length} dead letter(s)\n`);
}

export async function dlqShow(store: Store, id: string, io: DlqIo): Promise<boolean> {
  const letter = await store.getDeadLetter(id);
  if (!letter) return false;
  const delivery = letter.deliveryId ? await store.getDelivery(letter.deliveryId) : undefined;
  const view = { ...serialise(letter), delivery: delivery && { ...delivery, attemptLog: delivery.attemptLog.map((a) => ({ ...a, startedAt: iso(a.startedAt) })) } };
  io.out(`${JSON.stringify(view, null, 2)}\n`);
  return true;
}

export async function dlqReplay(
  store: Store,
  options: SelectOptions & { dryRun?: boolean; rate?: string; toSubscriber?: string; json?: boolean },
  io: DlqIo,
): Promise<number> {
  const { filter, limit } = toFilter(options, io.now());
  const rate = options.rate === undefined ? undefined : Number.parseFloat(options.rate);
  if (rate !== undefined && !(rate > 0)) throw new DlqUsageError('--rate must be a positive number of replays per second, e.g. 50 or 50/s');
  if (options.toSubscriber && !(await store.getSubscriber(options.toSubscriber))) {
    throw new DlqUsageError(`subscriber ${options.toSubscriber} does not exist`);
  }
  const letters = (await select(store, filter, limit)).filter((l) => l.deliveryId !== undefined);
  if (options.dryRun) {
    if (options.json) io.out(`${JSON.stringify({ dryRun: true, wouldReplay: letters.map((l) => l.id) })}\n`);
    else io.out(`dry run: would replay ${letters.length} dead letter(s)${letters.length ? `:\n${letters.map((l) => `  ${l.id}`).join('\n')}` : ''}\n`);
    return letters.length;
  }
  // One chunk per tick: at most `rate` per second, 100 at a time without a rate.
  const chunk = rate === undefined ? 100 : Math.max(1, Math.min(100, Math.floor(rate / 10) || 1));
  const tickMs = rate === undefined ? 0 : (chunk / rate) * 1000;
  let replayed = 0;
  for (let i = 0; i < letters.length; i += chunk) {
    const started = Date.now();
    const ids = letters.slice(i, i + chunk).map((l) => l.id);
    replayed += await store.replayDeadLetters(ids, io.now(), options.toSubscriber ? { toSubscriber: options.toSubscriber } : undefined);
    io.progress?.(Math.min(i + chunk, letters.length), letters.length);
    const wait = tickMs - (Date.now() - started);
    if (wait > 0 && i + chunk < letters.length) await delay(wait);
  }
  io.out(options.json ? `${JSON.stringify({ replayed, selected: letters.length })}\n` : `replayed ${replayed} of ${letters.length} dead letter(s)\n`);
  return replayed;
}

export async function dlqPurge(store: Store, options: SelectOptions & { all?: boolean; json?: boolean }, io: DlqIo): Promise<number> {
  const { filter, limit } = toFilter(options, io.now());
  const filtered = Object.values(filter).some((v) => v !== undefined) || Number.isFinite(limit);
  if (!filtered && !options.all) throw new DlqUsageError('purge needs a filter (--subscriber, --event, --reason, --since, --until, --limit) or --all');
  const letters = await select(store, filter, limit);
  let purged = 0;
  for (let i = 0; i < letters.length; i += PAGE) {
    purged += await store.purgeDeadLetters(letters.slice(i, i + PAGE).map((l) => l.id));
    io.progress?.(Math.min(i + PAGE, letters.length), letters.length);
  }
  io.out(options.json ? `${JSON.stringify({ purged })}\n` : `purged ${purged} dead letter(s)\n`);
  return purged;
}

function serialise(l: DeadLetter) {
  return { ...l, createdAt: iso(l.createdAt) };
}

/** A one-line progress bar for a terminal, redrawn in place on stderr. */
export function progressBar(write: (text: string) => void): (done: number, total: number) => void {
  return (done, total) => {
    const width = 30;
    const filled = total === 0 ? width : Math.round((done / total) * width);
    write(`\r[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${done}/${total}${done === total ? '\n' : ''}`);
  };
}
