/**
 * Retry timing, pure and table-tested: given how many attempts were made and how the last one ended, when (if at
 * all) to try again.
 *
 * The default schedule is Standard Webhooks': attempt 1 immediately, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
 * 14 h, 20 h and 24 h (about 3 days in all). A subscriber may give its own list of seconds between attempts; when
 * maxAttempts runs past the list, the last gap repeats.
 *
 * Jitter is ±20 % of the gap, so a recovering endpoint is not hit by every retry at the same instant (the reason the
 * spec asks for it). A Retry-After from the endpoint is honoured as a floor, capped at `maxRetryAfterMs` (1 h) so a
 * hostile or buggy header cannot park a delivery for months.
 */

/** Seconds between attempts of the Standard Webhooks schedule (10 attempts). */
export const STANDARD_GAPS_SEC: readonly number[] = [5, 300, 1_800, 7_200, 18_000, 36_000, 50_400, 72_000, 86_400];

export type RetrySchedule = 'standard' | readonly number[];

export interface RetryPolicy {
  readonly schedule: RetrySchedule;
  readonly maxAttempts: number;
}

export type RetryDecision = { readonly retry: false } | { readonly retry: true; readonly delayMs: number };

export const JITTER = 0.2;
export const MAX_RETRY_AFTER_MS = 60 * 60 * 1000; // 1 h

/**
 * @param attemptsMade attempts already made in this cycle, the one that just failed included (≥ 1)
 * @param retryAfterMs the endpoint's Retry-After, if it sent one
 * @param rng uniform in [0, 1); injected so tests are deterministic
 */
export function nextRetry(attemptsMade: number, retryAfterMs: number | undefined, policy: RetryPolicy, rng: () => number): RetryDecision {
  if (attemptsMade >= policy.maxAttempts) return { retry: false };
  const gaps = policy.schedule === 'standard' ? STANDARD_GAPS_SEC : policy.schedule;
  const gapSec = gaps[Math.min(attemptsMade - 1, gaps.length - 1)] ?? 0;
  const base = gapSec * 1000;
  const jittered = base * (1 - JITTER + 2 * JITTER * rng());
  const floor = retryAfterMs === undefined ? 0 : Math.min(Math.max(retryAfterMs, 0), MAX_RETRY_AFTER_MS);
  return { retry: true, delayMs: Math.round(Math.max(jittered, floor)) };
}

/**
 * Parses Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP date. Decimals are accepted as seconds; anything
 * else (garbage, negative, a date in the past) yields undefined or 0.
 */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  if (!/[a-z]/i.test(trimmed)) return undefined;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}
