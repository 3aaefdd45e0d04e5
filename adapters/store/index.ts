/**
 * Store registry: one factory per `store.kind`; a kind without a factory is a compile error. Each adapter module,
 * with its driver, is imported only when its kind is configured.
 */
import type { StoreConfig } from '../../config/schema.ts';
import type { Store } from './port.ts';

export const storeAdapters = {
  sqlite: async () => (await import('./sqlite.ts')).createSqliteStore,
  postgres: async () => (await import('./postgres.ts')).createPostgresStore,
} satisfies { [K in StoreConfig['kind']]: () => Promise<(config: Extract<StoreConfig, { kind: K }>) => Store> };

export async function createStore(config: StoreConfig): Promise<Store> {
  const load = storeAdapters[config.kind] as () => Promise<(config: StoreConfig) => Store>;
  return (await load())(config);
}
