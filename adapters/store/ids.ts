/**
 * Delivery ids are derived, not random: the same (event, subscriber) pair always has the same id, which is the
 * `webhook-id` the subscriber dedupes on. A redelivered queue message or a repeat from the source therefore lands on
 * the same row instead of creating a second delivery.
 */
import { createHash } from 'node:crypto';

export function deliveryIdFor(eventId: string, subscriberId: string): string {
  return `msg_${createHash('sha256').update(`${eventId}\n${subscriberId}`).digest('hex').slice(0, 32)}`;
}
