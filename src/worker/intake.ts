/**
 * First step of consuming: turn a queue delivery into an event, or recognise it as poison.
 *
 * Poison is a message that cannot be decoded, or one handed out more than `maxReceives` times (a consumer keeps
 * dying on it). Poison is reported (DLQ with reason `poison`) and acked; it is never nacked back into a loop.
 * Outcome as data: the caller decides how to report and settle.
 */
import type { QueueDelivery } from '../../adapters/queue/port.ts';
import { type Envelope, decodeEnvelope } from '../envelope.ts';
import { RouterError } from '../errors.ts';

export type Intake =
  | { readonly kind: 'event'; readonly delivery: QueueDelivery; readonly envelope: Envelope }
  | { readonly kind: 'poison'; readonly delivery: QueueDelivery; readonly reason: string };

export function intake(delivery: QueueDelivery, maxReceives: number): Intake {
  if (delivery.receiveCount !== undefined && delivery.receiveCount > maxReceives) {
    return { kind: 'poison', delivery, reason: `handed out ${delivery.receiveCount} times without being settled` };
  }
  try {
    return { kind: 'event', delivery, envelope: decodeEnvelope(delivery.body) };
  } catch (err) {
    if (err instanceof RouterError && err.code === 'ROUTER_ERR_ENVELOPE_INVALID') return { kind: 'poison', delivery, reason: err.message };
    throw err;
  }
}
