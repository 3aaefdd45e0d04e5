/**
 * Backend availability for suites that need a server. No silent skips: a suite whose backend cannot be reached
 * prints `skipped: <backend>: <reason>` and registers a skipped test saying so; when CI lists the backend in
 * REQUIRE_BACKENDS (comma-separated), the same situation is a failure instead.
 */
import { test } from 'node:test';

export const required = new Set((process.env.REQUIRE_BACKENDS ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export const env = {
  postgresUrl: process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
  redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  kafkaBrokers: process.env.KAFKA_BROKERS,
};

/**
 * Resolves true when the backend answers. Otherwise reports the skip (or fails when required) and resolves false;
 * the caller then registers no tests of its own.
 */
export async function backendAvailable(backend: string, probe: () => Promise<void>): Promise<boolean> {
  try {
    await probe();
    return true;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    if (required.has(backend)) {
      test(`${backend} is required (REQUIRE_BACKENDS) but unavailable`, () => {
        throw new Error(`${backend}: ${reason}`);
      });
    } else {
      process.stdout.write(`skipped: ${backend}: ${reason}\n`);
      test(`${backend} suites`, { skip: `skipped: ${backend}: ${reason}` }, () => {});
    }
    return false;
  }
}
