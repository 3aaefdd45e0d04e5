import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_RETRY_AFTER_MS, STANDARD_GAPS_SEC, nextRetry, parseRetryAfter } from '../../src/retry/schedule.ts';

const mid = () => 0.5; // no jitter
const low = () => 0; // -20 %
const high = () => 0.999999; // +20 %

describe('nextRetry', () => {
  const standard = { schedule: 'standard' as const, maxAttempts: 10 };

  test('follows the Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h', () => {
    const gaps = Array.from({ length: 9 }, (_, i) => nextRetry(i + 1, undefined, standard, mid));
    assert.deepEqual(
      gaps.map((d) => (d.retry ? d.delayMs / 1000 : -1)),
      [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
    );
    assert.deepEqual(nextRetry(10, undefined, standard, mid), { retry: false });
    assert.equal(STANDARD_GAPS_SEC.reduce((a, b) => a + b, 0) / 3600 > 70, true, 'about three days in all');
  });

  test('jitter stays within ±20 %', () => {
    const lo = nextRetry(2, undefined, standard, low);
    const hi = nextRetry(2, undefined, standard, high);
    assert.ok(lo.retry && hi.retry);
    assert.equal(lo.delayMs, 240_000);
    assert.ok(hi.delayMs <= 360_000 && hi.delayMs > 359_000);
  });

  test('a custom schedule repeats its last gap and stops at maxAttempts', () => {
    const policy = { schedule: [1, 2], maxAttempts: 5 };
    assert.deepEqual([1, 2, 3, 4].map((n) => nextRetry(n, undefined, policy, mid)), [
      { retry: true, delayMs: 1000 },
      { retry: true, delayMs: 2000 },
      { retry: true, delayMs: 2000 },
      { retry: true, delayMs: 2000 },
    ]);
    assert.deepEqual(nextRetry(5, undefined, policy, mid), { retry: false });
    assert.deepEqual(nextRetry(1, undefined, { schedule: [], maxAttempts: 3 }, mid), { retry: true, delayMs: 0 });
  });

  test('Retry-After is a floor, capped at one hour', () => {
    const policy = { schedule: [1], maxAttempts: 5 };
    assert.deepEqual(nextRetry(1, 30_000, policy, mid), { retry: true, delayMs: 30_000 });
    assert.deepEqual(nextRetry(1, 10, policy, mid), { retry: true, delayMs: 1000 });
    assert.deepEqual(nextRetry(1, 10 * MAX_RETRY_AFTER_MS, policy, mid), { retry: true, delayMs: MAX_RETRY_AFTER_MS });
    assert.deepEqual(nextRetry(1, -5, policy, mid), { retry: true, delayMs: 1000 });
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-11-25T12:00:00Z');
  const cases: [string | undefined, number | undefined][] = [
    [undefined, undefined],
    ['120', 120_000],
    [' 7 ', 7_000],
    ['1.5', 1_500],
    ['0', 0],
    ['Wed, 25 Nov 2026 12:01:00 GMT', 60_000],
    ['Wed, 25 Nov 2026 11:00:00 GMT', 0],
    ['-3', undefined],
    ['soon', undefined],
    ['', undefined],
    ['1e9', undefined],
  ];
  for (const [input, expected] of cases) {
    test(`${JSON.stringify(input)} → ${expected}`, () => assert.equal(parseRetryAfter(input, now), expected));
  }
});
