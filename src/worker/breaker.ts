/**
 * A circuit breaker per subscriber, so one failing endpoint stops consuming attempts and worker capacity.
 *
 *   closed ──(failureThreshold consecutive retryable failures)──▶ open (until now + cooldown)
 *   open ──(cooldown over)──▶ half-open: one probe delivery at a time
 *   half-open ──probe delivered──▶ closed          half-open ──probe failed──▶ open, cooldown doubled (≤ max)
 *
 * Deliveries are not attempted while open, so no retry budget is spent; the worker defers them in the store.
 * Permanent failures (4xx) do not trip it: the endpoint answered, it just said no.
 */
export interface BreakerOptions {
  readonly failureThreshold: number;
  readonly cooldownMs: number;
  readonly maxCooldownMs: number;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

export class Breaker {
  readonly #options: BreakerOptions;
  #failures = 0;
  #openUntil = 0;
  #trips = 0;

  constructor(options: BreakerOptions) {
    this.#options = options;
  }

  state(now: number): BreakerState {
    if (this.#trips === 0) return 'closed';
    return now < this.#openUntil ? 'open' : 'half-open';
  }

  /** Until when it is open; meaningful only in state 'open'. */
  get openUntil(): number {
    return this.#openUntil;
  }

  onSuccess(): void {
    this.#failures = 0;
    this.#trips = 0;
    this.#openUntil = 0;
  }

  /** Returns true when this failure opened the breaker (the caller then defers the subscriber's deliveries). */
  onFailure(now: number): boolean {
    this.#failures += 1;
    const probing = this.#trips > 0;
    if (!probing && this.#failures < this.#options.failureThreshold) return false;
    this.#trips += 1;
    const cooldown = Math.min(this.#options.cooldownMs * 2 ** (this.#trips - 1), this.#options.maxCooldownMs);
    this.#openUntil = now + cooldown;
    return true;
  }
}
