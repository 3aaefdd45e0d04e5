/**
 * `withSecretEncryption(store, keyring)`: a Store decorator that encrypts subscriber secrets on their way in and
 * decrypts them on their way out, so the worker, the API and the CLI keep using the store port unchanged and only
 * ever see plaintext, while the database holds `enc:v1:…` values (keyring.ts).
 *
 * What is encrypted:
 * - the signing secrets (`secrets.current`, `secrets.previous`);
 * - every transport config value that the transport's provider redacts on read (for https: the values of the
 *   headers listed in `secretHeaders`). The provider decides what is secret; this module needs no per-kind code.
 *
 * Rotation of signing secrets: a previous secret whose `previousExpiresAt` has passed is dropped on read, so nothing
 * signs with it any more. The worker caches subscribers until `subscribersVersion()` changes; this decorator
 * therefore adds an expiry generation to the version, bumped once the earliest pending expiry it has seen passes,
 * which makes the worker reload within its refresh interval (≈ 1 s) of the grace period ending.
 *
 * Without `secrets.encryptionKey` (worker-only deployments, tests) values are stored as given; the api role, the only
 * writer of secrets, refuses to start without a key.
 */
import type { NewSubscriber, PageRequest, Store, SubscriberPatch } from '../../adapters/store/port.ts';
import { transportProviders } from '../../transports/index.ts';
import type { TransportProvider } from '../../transports/port.ts';
import type { Subscriber, SubscriberSecrets, SubscriberSpec } from '../subscribers/model.ts';
import type { Keyring } from './keyring.ts';

export interface SecretEncryptionOptions {
  readonly now?: () => number;
}

type Transport = SubscriberSpec['transport'];
type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function providerOf(kind: string): TransportProvider<{ kind: string }> | undefined {
  return Object.hasOwn(transportProviders, kind) ? (transportProviders as Record<string, TransportProvider<{ kind: string }>>)[kind] : undefined;
}

/**
 * Paths of the transport values its provider treats as secret: where `redact()` changes a string leaf.
 *
 * A stored config is its provider's parsed output (the API validated it), so redact() takes it as it is, sealed
 * values included; re-parsing it could fail (a sealed value is longer than the plaintext the schema bounds). A config
 * written around the API (tests, seeding) may lack defaults: it is parsed first. One the provider rejects has none.
 */
function secretPaths(transport: Transport): string[][] {
  const provider = providerOf(transport.kind);
  if (!provider) return [];
  let base: unknown = transport;
  let redacted: unknown;
  try {
    redacted = provider.redact(transport as never);
  } catch {
    const parsed = provider.configSchema.safeParse(transport);
    if (!parsed.success) return [];
    base = parsed.data;
    redacted = provider.redact(parsed.data);
  }
  const paths: string[][] = [];
  const walk = (plain: unknown, red: unknown, at: string[]) => {
    if (typeof plain === 'string') {
      if (red !== plain) paths.push(at);
      return;
    }
    if (isObject(plain) && isObject(red)) for (const k of Object.keys(plain)) walk(plain[k], red[k], [...at, k]);
  };
  walk(base, redacted, []);
  return paths;
}

/** A deep copy of `value` with `fn` applied to the string leaves at `paths`. */
function mapAt(value: Json, paths: readonly string[][], fn: (s: string) => string): Json {
  const copy = structuredClone(value);
  for (const path of paths) {
    let node: unknown = copy;
    for (const key of path.slice(0, -1)) node = isObject(node) && Object.hasOwn(node, key) ? node[key] : undefined;
    const leaf = path.at(-1) as string;
    if (isObject(node) && Object.hasOwn(node, leaf) && typeof node[leaf] === 'string') node[leaf] = fn(node[leaf] as string);
  }
  return copy;
}

export function withSecretEncryption(store: Store, keyring: Keyring, options: SecretEncryptionOptions = {}): Store {
  const now = options.now ?? Date.now;
  const canEncrypt = keyring.currentKeyId !== undefined;
  /** Earliest previousExpiresAt (still in the future) among the subscribers last loaded by allSubscribers(). */
  let nextExpiry = Number.POSITIVE_INFINITY;
  let expiryGeneration = 0;

  // Writes only ever carry plaintext (callers read through this decorator), so every secret value is sealed, even one
  // that happens to look sealed. Reads open only the secret paths: a non-secret value never goes through decryption.
  const seal = (value: string, owner: string) => (canEncrypt ? keyring.encrypt(value, owner) : value);
  const open = (value: string, owner: string) => keyring.decrypt(value, owner);

  function sealSecrets(secrets: SubscriberSecrets, owner: string): SubscriberSecrets {
    return {
      ...secrets,
      current: seal(secrets.current, owner),
      ...(secrets.previous === undefined ? {} : { previous: seal(secrets.previous, owner) }),
    };
  }

  function sealTransport(transport: Transport, owner: string): Transport {
    if (!canEncrypt) return transport;
    return mapAt(transport, secretPaths(transport), (v) => seal(v, owner)) as Transport;
  }

  function openSubscriber(s: Subscriber): Subscriber {
    const expired = s.secrets.previousExpiresAt !== undefined && s.secrets.previousExpiresAt <= now();
    const secrets: SubscriberSecrets = {
      current: open(s.secrets.current, s.id),
      ...(s.secrets.previous === undefined || expired
        ? {}
        : { previous: open(s.secrets.previous, s.id), previousExpiresAt: s.secrets.previousExpiresAt }),
    };
    const transport = mapAt(s.transport, secretPaths(s.transport), (v) => open(v, s.id)) as Transport;
    return { ...s, secrets, transport };
  }

  function sealPatch(id: string, patch: SubscriberPatch): SubscriberPatch {
    return {
      ...patch,
      ...(patch.secrets ? { secrets: sealSecrets(patch.secrets, id) } : {}),
      ...(patch.spec?.transport ? { spec: { ...patch.spec, transport: sealTransport(patch.spec.transport, id) } } : {}),
    };
  }

  // Only the subscriber methods differ; every other method (events, deliveries, dead letters, lifecycle, and any
  // the port gains later) goes straight to the wrapped store, bound to it.
  const overrides = {
    async createSubscriber(s: NewSubscriber, at: number) {
      const sealed: NewSubscriber = { ...s, secrets: sealSecrets(s.secrets, s.id), transport: sealTransport(s.transport, s.id) };
      return openSubscriber(await store.createSubscriber(sealed, at));
    },
    async getSubscriber(id: string) {
      const s = await store.getSubscriber(id);
      return s && openSubscriber(s);
    },
    async listSubscribers(page: PageRequest) {
      const result = await store.listSubscribers(page);
      return { ...result, items: result.items.map(openSubscriber) };
    },
    async allSubscribers() {
      const all = await store.allSubscribers();
      const t = now();
      nextExpiry = all.reduce((min, s) => {
        const e = s.secrets.previousExpiresAt;
        return e !== undefined && e > t && e < min ? e : min;
      }, Number.POSITIVE_INFINITY);
      return all.map(openSubscriber);
    },
    async subscribersVersion() {
      const version = await store.subscribersVersion();
      if (now() >= nextExpiry) {
        expiryGeneration += 1;
        nextExpiry = Number.POSITIVE_INFINITY; // the reload this triggers computes the next one
      }
      return `${version}.${expiryGeneration}`;
    },
    async updateSubscriber(id: string, patch: SubscriberPatch, at: number, expectedVersion?: number) {
      const s = await store.updateSubscriber(id, sealPatch(id, patch), at, expectedVersion);
      return s && openSubscriber(s);
    },
  } satisfies Partial<Store>;

  return new Proxy(store, {
    get(target, prop) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof typeof overrides];
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/**
 * Rewrites every subscriber's secrets and transport config under the current key (after a key rotation), so the
 * previous key can then be removed from `secrets.previousKeys`. `store` is the decorated store. A subscriber changed
 * concurrently is read again; returns how many were rewritten.
 */
export async function reencryptAll(store: Store, now: () => number = Date.now): Promise<number> {
  let rewritten = 0;
  let cursor: string | undefined;
  do {
    const page = await store.listSubscribers({ limit: 200, cursor });
    for (const first of page.items) {
      let s: Subscriber | undefined = first;
      for (let attempt = 0; s && attempt < 5; attempt++) {
        if (await store.updateSubscriber(s.id, { secrets: s.secrets, spec: { transport: s.transport } }, now(), s.version)) {
          rewritten += 1;
          break;
        }
        s = await store.getSubscriber(s.id);
      }
    }
    cursor = page.nextCursor;
  } while (cursor);
  return rewritten;
}
