import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Breaker } from '../../src/worker/breaker.ts';
import { RateLimiter } from '../../src/worker/limiter.ts';
import { nextState } from '../../src/worker/outcome.ts';

describe('circuit breaker', () => {
  const options = { failureThreshold: 3, cooldownMs: 1_000, maxCooldownMs: 3_000 };

  test('opens after the threshold, probes when the cooldown is over, doubles the cooldown on a failed probe', () => {
    const b = new Breaker(options);
    assert.equal(b.onFailure(0), false);
    assert.equal(b.onFailure(1), false);
    assert.equal(b.state(1), 'closed');
    assert.equal(b.onFailure(2), true);
    assert.equal(b.state(500), 'open');
    assert.equal(b.openUntil, 1_002);
    assert.equal(b.state(1_002), 'half-open');
    assert.equal(b.onFailure(1_100), true, 'a failed probe reopens at once');
    assert.equal(b.openUntil, 3_100);
    assert.equal(b.onFailure(3_200), true);
    assert.equal(b.openUntil, 6_200, 'capped at maxCooldownMs');
    b.onSuccess();
    assert.equal(b.state(6_300), 'closed');
    assert.equal(b.onFailure(6_400), false, 'the count starts over after a success');
  });
});

describe('rate limiter', () => {
  test('lets a second of burst through, then spaces starts by 1/perSecond', () => {
    const l = new RateLimiter(2, 0);
    assert.equal(l.reserve(0), 0);
    assert.equal(l.reserve(0), 0);
    assert.equal(l.reserve(0), 500);
    assert.equal(l.reserve(0), 1_000);
    assert.equal(l.reserve(2_000), 0);
  });

  test('0 means unlimited', () => {
    const l = new RateLimiter(0, 0);
    for (let i = 0; i < 1_000; i++) assert.equal(l.reserve(0), 0);
  });
});

describe('next state after an attempt', () => {
  const policy = { schedule: [10, 20] as number[], maxAttempts: 3 };
  const rng = () => 0.5;

  test('maps outcomes to delivered, retry or dead with a reason', () => {
    assert.deepEqual(nextState({ kind: 'delivered', status: 200, durationMs: 1 }, 1, policy, 0, rng), { status: 'delivered' });
    assert.deepEqual(nextState({ kind: 'permanent', code: 'http_410', status: 410, durationMs: 1 }, 1, policy, 0, rng), { status: 'dead', reason: 'endpoint_gone' });
    assert.deepEqual(nextState({ kind: 'permanent', code: 'ssrf_blocked', durationMs: 1 }, 1, policy, 0, rng), { status: 'dead', reason: 'ssrf_blocked' });
    assert.deepEqual(nextState({ kind: 'permanent', code: 'http_4xx', status: 404, durationMs: 1 }, 1, policy, 0, rng), { status: 'dead', reason: 'rejected' });
    assert.deepEqual(nextState({ kind: 'retryable', code: 'http_5xx', status: 503, durationMs: 1 }, 1, policy, 100, rng), { status: 'retry', at: 10_100 });
    assert.deepEqual(nextState({ kind: 'retryable', code: 'http_429', status: 429, retryAfterMs: 60_000, durationMs: 1 }, 2, policy, 0, rng), { status: 'retry', at: 60_000 });
    assert.deepEqual(nextState({ kind: 'retryable', code: 'timeout', durationMs: 1 }, 3, policy, 0, rng), { status: 'dead', reason: 'max_attempts' });
  });
});
