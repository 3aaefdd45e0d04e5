/**
 * What happens to a delivery after an attempt: one pure function from the send outcome and the subscriber's retry
 * policy to the delivery's next state.
 *
 * | outcome                          | next                                               |
 * |----------------------------------|----------------------------------------------------|
 * | delivered                        | delivered                                          |
 * | permanent http_410               | dead `endpoint_gone` (and the subscriber disabled) |
 * | permanent ssrf_blocked           | dead `ssrf_blocked`                                |
 * | other permanent (4xx, bad config)| dead `rejected`                                    |
 * | retryable, attempts left         | retry at now + schedule gap (jittered, ≥ Retry-After) |
 * | retryable, none left             | dead `max_attempts`                                |
 */
import type { NextState } from '../../adapters/store/port.ts';
import type { SendOutcome } from '../../transports/port.ts';
import { nextRetry, type RetryPolicy } from '../retry/schedule.ts';

export function nextState(outcome: SendOutcome, attempt: number, policy: RetryPolicy, now: number, rng: () => number): NextState {
  switch (outcome.kind) {
    case 'delivered':
      return { status: 'delivered' };
    case 'permanent':
      if (outcome.code === 'http_410') return { status: 'dead', reason: 'endpoint_gone' };
      if (outcome.code === 'ssrf_blocked') return { status: 'dead', reason: 'ssrf_blocked' };
      return { status: 'dead', reason: 'rejected' };
    case 'retryable': {
      const decision = nextRetry(attempt, outcome.retryAfterMs, policy, rng);
      return decision.retry ? { status: 'retry', at: now + decision.delayMs } : { status: 'dead', reason: 'max_attempts' };
    }
  }
}
