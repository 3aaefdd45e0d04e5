/**
 * Delivery ids are derived, not random: the same (event, subscriber) pair always has the same id, which is the
 * `webhook-id` the subscriber dedupes on. A redelivered queue message therefore lands on the same row instead of
 * creating a second delivery, and a replay keeps the id.
 *
 * `msg_` and 32 hex digits: the event's receive time in milliseconds (11 digits, enough until the year 2527), then 84
 * bits of SHA-256(event id, subscriber id). The time first makes ids sort by when their event came in, so a new
 * delivery's entry in the `deliveries.id` index lands beside the last one instead of on a random page: with the
 * hash alone, every ingest dirtied a random index page per delivery (4.8 of the 21.5 KB of WAL an ingest wrote per
 * event, benchmarks/RESULTS.md, 3 December 2026). The receive time is the event's own (`receivedAt`, set once by the
 * receiver and carried in the envelope), so every worker derives the same id.
 */
import { createHash } from 'node:crypto';

const TIME_DIGITS = 11;
const MAX_TIME = 16 ** TIME_DIGITS - 1;

const PAIR_DIGITS = 32 - TIME_DIGITS;

export function deliveryIdFor(eventId: string, subscriberId: string, receivedAt: number): string {
  const time = Math.min(Math.max(Math.trunc(receivedAt), 0), MAX_TIME);
  return `msg_${time.toString(16).padStart(TIME_DIGITS, '0')}${pairKeyFor(eventId, subscriberId)}`;
}

/**
 * The part of a delivery id that depends on (event, subscriber) alone, from the pair and from an id. A ledger that
 * knows which pairs it sent but not when the router received each event (a crash test's, a benchmark's) matches
 * arrivals on it.
 */
export function pairKeyFor(eventId: string, subscriberId: string): string {
  return createHash('sha256').update(`${eventId}\n${subscriberId}`).digest('hex').slice(0, PAIR_DIGITS);
}

export function pairKeyOf(deliveryId: string): string {
  return deliveryId.slice(-PAIR_DIGITS);
}
