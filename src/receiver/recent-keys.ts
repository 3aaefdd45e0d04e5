/**
 * A bounded set of recently accepted dedupe keys, oldest evicted first. It lets one receiver answer a quick repeat
 * (a source retrying after a lost response) without publishing again. It is a hint, never the source of truth:
 * repeats that reach another pod, or come after eviction or a restart, are published and collapse later because
 * the event id is derived from the dedupe key (see receiver.ts).
 */
export class RecentKeys {
  readonly #keys = new Set<string>();
  readonly #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  has(key: string): boolean {
    return this.#keys.has(key);
  }

  add(key: string): void {
    if (this.#capacity === 0) return;
    this.#keys.delete(key);
    this.#keys.add(key);
    if (this.#keys.size > this.#capacity) {
      const oldest = this.#keys.values().next().value;
      if (oldest !== undefined) this.#keys.delete(oldest);
    }
  }
}
