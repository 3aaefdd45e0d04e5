/**
 * A token bucket per subscriber: at most `perSecond` deliveries start per second in this process, with a burst of
 * one second's worth. `delayMs()` says how long to wait for the next token (0 = go now) and takes it.
 */
export class RateLimiter {
  readonly #perSecond: number;
  #tokens: number;
  #updatedAt: number;

  constructor(perSecond: number, now: number) {
    this.#perSecond = perSecond;
    this.#tokens = Math.max(1, perSecond);
    this.#updatedAt = now;
  }

  /** Reserves a token and returns the wait before it may be used. */
  reserve(now: number): number {
    if (this.#perSecond <= 0) return 0;
    this.#tokens = Math.min(Math.max(1, this.#perSecond), this.#tokens + ((now - this.#updatedAt) / 1000) * this.#perSecond);
    this.#updatedAt = now;
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : Math.ceil((-this.#tokens / this.#perSecond) * 1000);
  }
}
