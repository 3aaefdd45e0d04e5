/**
 * Delivery ids (adapters/store/ids.ts): the webhook-id subscribers dedupe on. Derived, so every worker and every
 * replay computes the same one; time first, so they sort by when the router received the event.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deliveryIdFor, pairKeyFor, pairKeyOf } from '../../adapters/store/ids.ts';

const T = Date.UTC(2026, 11, 3, 12, 0, 0);

test('msg_ and 32 lowercase hex digits, the same for the same (event, subscriber, receive time)', () => {
  const id = deliveryIdFor('evt_1', 'sub_a', T);
  assert.match(id, /^msg_[0-9a-f]{32}$/);
  assert.equal(deliveryIdFor('evt_1', 'sub_a', T), id);
  assert.notEqual(deliveryIdFor('evt_1', 'sub_b', T), id, 'another subscriber');
  assert.notEqual(deliveryIdFor('evt_2', 'sub_a', T), id, 'another event');
});

test('ids sort by the receive time, whatever the event and subscriber', () => {
  const times = [T - 86_400_000, T - 1, T, T + 1, T + 3_600_000];
  const ids = times.map((t, i) => deliveryIdFor(`evt_${10 - i}`, `sub_${i}`, t));
  assert.deepEqual([...ids].sort(), ids);
});

test('the pair key is the same from the pair and from any of its ids', () => {
  const key = pairKeyFor('evt_1', 'sub_a');
  assert.equal(pairKeyOf(deliveryIdFor('evt_1', 'sub_a', T)), key);
  assert.equal(pairKeyOf(deliveryIdFor('evt_1', 'sub_a', T + 5_000)), key);
  assert.notEqual(pairKeyFor('evt_1', 'sub_b'), key);
});

test('times outside the 11 digits are clamped, never a longer or malformed id', () => {
  for (const t of [-1, 0, 1.7, 16 ** 11, Number.MAX_SAFE_INTEGER]) assert.match(deliveryIdFor('evt_1', 'sub_a', t), /^msg_[0-9a-f]{32}$/);
});
