/** Store registry: one factory per `store.kind`; a kind without a factory is a compile error. */
import type { StoreConfig } from '../../config/schema.ts';
import type { Store } from './port.ts';
import { createPostgresStore } from './postgres.ts';
import { createSqliteStore } from './sqlite.ts';

export const storeAdapters = {
  sqlite: createSqliteStore,
  postgres: createPostgresStore,
} satisfies { [K in StoreConfig['kind']]: (config: Extract<StoreConfig, { kind: K }>) => Store };

export function createStore(config: StoreConfig): Store {
  const factory = storeAdapters[config.kind] as (config: StoreConfig) => Store;
  return factory(config);
}
