/** What the route modules share: the ports and settings they work with. Built once by createApi (app.ts). */
import type { Store } from '../../adapters/store/port.ts';
import type { Config } from '../../config/schema.ts';
import type { SenderDeps } from '../../transports/port.ts';

export interface ApiContext {
  /** Already wrapped with withSecretEncryption: plaintext in and out. */
  readonly store: Store;
  readonly api: Readonly<Config['api']>;
  /** Senders for test pings; its egress policy and resolver also drive the registration-time SSRF check. */
  readonly senderDeps: SenderDeps;
  readonly now: () => number;
  /** Aborted when the API closes: in-flight test pings and paced replays stop. */
  readonly signal: AbortSignal;
}
