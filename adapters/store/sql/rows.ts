/** Row ↔ model mapping for the SQL store. SQLite returns integers as numbers and PostgreSQL BIGINT as strings. */
import type { Subscriber, SubscriberSpec } from '../../../src/subscribers/model.ts';
import type { AttemptRecord, DeadLetter, DeadReason, DeliveryView, EventRecord } from '../port.ts';

export type Row = Record<string, unknown>;

const num = (v: unknown): number => Number(v);
const optNum = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : Number(v));
const optStr = (v: unknown): string | undefined => (v === null || v === undefined ? undefined : String(v));

export function toSubscriber(r: Row): Subscriber {
  const spec = JSON.parse(String(r.spec)) as Omit<SubscriberSpec, 'name' | 'enabled'>;
  return {
    id: String(r.id),
    name: String(r.name),
    enabled: num(r.enabled) === 1,
    ...spec,
    secrets: JSON.parse(String(r.secrets)),
    disabledReason: optStr(r.disabled_reason),
    version: num(r.version),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
  };
}

export function toEvent(r: Row): EventRecord {
  return {
    id: String(r.id),
    source: String(r.source),
    sourceKind: String(r.source_kind),
    dedupeKey: String(r.dedupe_key),
    receivedAt: num(r.received_at),
    headers: JSON.parse(String(r.headers)),
    routing: JSON.parse(String(r.routing)),
    body: r.body as Uint8Array,
  };
}

export function toDelivery(r: Row): DeliveryView {
  return {
    id: String(r.id),
    eventId: String(r.event_id),
    subscriberId: String(r.subscriber_id),
    status: String(r.status) as DeliveryView['status'],
    attempts: num(r.attempts),
    cycle: num(r.cycle),
    nextAttemptAt: r.status === 'pending' ? num(r.next_attempt_at) : undefined,
    lastCode: optStr(r.last_code),
    lastStatus: optNum(r.last_status),
    createdAt: num(r.created_at),
    updatedAt: num(r.updated_at),
  };
}

export function toAttempt(r: Row): AttemptRecord {
  return {
    deliveryId: String(r.delivery_id),
    attempt: num(r.attempt),
    startedAt: num(r.started_at),
    durationMs: num(r.duration_ms),
    outcome: String(r.outcome) as AttemptRecord['outcome'],
    code: optStr(r.code) as AttemptRecord['code'],
    status: optNum(r.status),
    response: optStr(r.response),
  };
}

export function toDeadLetter(r: Row): DeadLetter {
  return {
    id: String(r.id),
    deliveryId: optStr(r.delivery_id),
    eventId: optStr(r.event_id),
    subscriberId: optStr(r.subscriber_id),
    reason: String(r.reason) as DeadReason,
    lastCode: optStr(r.last_code),
    lastStatus: optNum(r.last_status),
    attempts: num(r.attempts),
    detail: optStr(r.detail),
    createdAt: num(r.created_at),
  };
}
