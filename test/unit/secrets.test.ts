import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Store } from '../../adapters/store/port.ts';
import { createSqliteStore } from '../../adapters/store/sqlite.ts';
import { isRouterError } from '../../src/errors.ts';
import { createKeyring, generateKey, keyIdOf, parseKey } from '../../src/secrets/keyring.ts';
import { reencryptAll, withSecretEncryption } from '../../src/secrets/store.ts';
import { type Subscriber, SubscriberSpec } from '../../src/subscribers/model.ts';
import { tempDir } from '../helpers/app.ts';

const KEY_A = Buffer.alloc(32, 1).toString('base64');
const KEY_B = Buffer.alloc(32, 2).toString('hex');

const unreadable = (err: unknown) => isRouterError(err, 'ROUTER_ERR_SECRET_UNREADABLE');

describe('keyring', () => {
  test('encrypts to enc:v1:<keyId>:<base64> and decrypts back; each encryption is fresh', () => {
    const ring = createKeyring({ encryptionKey: KEY_A });
    const a = ring.encrypt('whsec_top-secret', 'sub_1');
    const b = ring.encrypt('whsec_top-secret', 'sub_1');
    assert.match(a, /^enc:v1:[0-9a-f]{16}:[A-Za-z0-9+/]+=*$/);
    assert.equal(a.split(':')[2], keyIdOf(parseKey(KEY_A)));
    assert.notEqual(a, b, 'a random IV per value');
    assert.ok(!a.includes('top-secret'));
    assert.equal(ring.decrypt(a, 'sub_1'), 'whsec_top-secret');
  });

  test('the value is bound to its owner: moved to another subscriber it does not decrypt', () => {
    const ring = createKeyring({ encryptionKey: KEY_A });
    const sealed = ring.encrypt('s', 'sub_1');
    assert.throws(() => ring.decrypt(sealed, 'sub_2'), unreadable);
  });

  test('an altered value fails authentication', () => {
    const ring = createKeyring({ encryptionKey: KEY_A });
    const sealed = ring.encrypt('secret value', 'sub_1');
    const raw = Buffer.from(sealed.split(':')[3] as string, 'base64');
    raw[raw.length - 1] = (raw[raw.length - 1] as number) ^ 1;
    const altered = `${sealed.split(':').slice(0, 3).join(':')}:${raw.toString('base64')}`;
    assert.throws(() => ring.decrypt(altered, 'sub_1'), unreadable);
    assert.throws(() => ring.decrypt('enc:v1:zz:abc', 'sub_1'), unreadable);
    assert.throws(() => ring.decrypt(`enc:v1:${keyIdOf(parseKey(KEY_A))}:AAAA`, 'sub_1'), unreadable);
  });

  test('key rotation: the old key goes to previousKeys and still decrypts; new values use the new key', () => {
    const before = createKeyring({ encryptionKey: KEY_A });
    const old = before.encrypt('v', 'sub_1');
    const rotated = createKeyring({ encryptionKey: KEY_B, previousKeys: [KEY_A] });
    assert.equal(rotated.decrypt(old, 'sub_1'), 'v');
    assert.equal(rotated.encrypt('v', 'sub_1').split(':')[2], keyIdOf(parseKey(KEY_B)));
    const forgotten = createKeyring({ encryptionKey: KEY_B });
    assert.throws(
      () => forgotten.decrypt(old, 'sub_1'),
      (err: unknown) => unreadable(err) && (err as Error).message.includes(keyIdOf(parseKey(KEY_A))) && !(err as Error).message.includes('v,'),
    );
  });

  test('plaintext from before encryption was configured reads as is; encrypting without a key is refused', () => {
    const none = createKeyring({});
    assert.equal(none.currentKeyId, undefined);
    assert.equal(none.decrypt('whsec_plain', 'sub_1'), 'whsec_plain');
    assert.throws(() => none.encrypt('x', 'sub_1'), (err: unknown) => isRouterError(err, 'ROUTER_ERR_CONFIG_INVALID'));
  });

  test('keys: 64 hex digits or base64 of 32 bytes; anything else is refused', () => {
    assert.equal(parseKey(KEY_B).length, 32);
    assert.equal(parseKey(generateKey()).length, 32);
    assert.equal(parseKey(Buffer.alloc(32, 3).toString('base64url')).length, 32);
    assert.throws(() => parseKey('too-short'), (err: unknown) => isRouterError(err, 'ROUTER_ERR_CONFIG_INVALID'));
    assert.throws(() => createKeyring({ encryptionKey: KEY_A, previousKeys: ['abc'] }), (err: unknown) => isRouterError(err, 'ROUTER_ERR_CONFIG_INVALID'));
  });
});

describe('withSecretEncryption', () => {
  const dir = tempDir('wr-secrets-');
  const stores: Store[] = [];
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    dir.remove();
  });

  async function rawStore(name: string): Promise<Store> {
    const store = createSqliteStore({ kind: 'sqlite', path: `${dir.path}/${name}.db` });
    stores.push(store);
    await store.connect();
    await store.migrate();
    return store;
  }

  const subscriber = (id: string, secrets: Subscriber['secrets']) => ({
    ...SubscriberSpec.parse({
      name: id,
      transport: {
        kind: 'https',
        url: 'https://hooks.example.com/x',
        headers: { 'X-Api-Key': 'api-key-value', 'X-Team': 'blue' },
        secretHeaders: ['X-Api-Key'],
      },
    }),
    id,
    secrets,
  });

  test('secrets and secret transport values are encrypted at rest and plaintext through the decorator', async () => {
    const raw = await rawStore('at-rest');
    const store = withSecretEncryption(raw, createKeyring({ encryptionKey: KEY_A }));
    const created = await store.createSubscriber(subscriber('sub_1', { current: 'whsec_current-secret' }), Date.now());
    assert.equal(created.secrets.current, 'whsec_current-secret');

    const atRest = (await raw.getSubscriber('sub_1')) as Subscriber;
    assert.match(atRest.secrets.current, /^enc:v1:/);
    const headers = atRest.transport.headers as Record<string, string>;
    assert.match(headers['X-Api-Key'] as string, /^enc:v1:/);
    assert.equal(headers['X-Team'], 'blue', 'values the provider does not redact stay readable');
    assert.ok(!JSON.stringify(atRest).includes('api-key-value'));
    assert.ok(!JSON.stringify(atRest).includes('current-secret'));

    for (const s of [await store.getSubscriber('sub_1'), (await store.listSubscribers({ limit: 10 })).items[0], (await store.allSubscribers())[0]]) {
      assert.equal(s?.secrets.current, 'whsec_current-secret');
      assert.equal((s?.transport.headers as Record<string, string>)['X-Api-Key'], 'api-key-value');
    }
  });

  test('updates encrypt what they write and keep what they do not touch', async () => {
    const raw = await rawStore('updates');
    const store = withSecretEncryption(raw, createKeyring({ encryptionKey: KEY_A }));
    await store.createSubscriber(subscriber('sub_1', { current: 'whsec_one' }), Date.now());
    const rotated = await store.updateSubscriber('sub_1', { secrets: { current: 'whsec_two', previous: 'whsec_one', previousExpiresAt: Date.now() + 60_000 } }, Date.now(), 1);
    assert.equal(rotated?.secrets.current, 'whsec_two');
    assert.equal(rotated?.secrets.previous, 'whsec_one');
    const renamed = await store.updateSubscriber('sub_1', { spec: { name: 'renamed' } }, Date.now());
    assert.equal(renamed?.secrets.previous, 'whsec_one');
    const atRest = (await raw.getSubscriber('sub_1')) as Subscriber;
    assert.match(atRest.secrets.current, /^enc:v1:/);
    assert.match(atRest.secrets.previous as string, /^enc:v1:/);
  });

  test('a previous secret past its expiry is never returned, and the worker is told to reload', async () => {
    let now = 1_000_000;
    const raw = await rawStore('expiry');
    const store = withSecretEncryption(raw, createKeyring({ encryptionKey: KEY_A }), { now: () => now });
    await store.createSubscriber(subscriber('sub_1', { current: 'whsec_new', previous: 'whsec_old', previousExpiresAt: now + 5_000 }), now);
    const v1 = await store.subscribersVersion();
    assert.equal((await store.allSubscribers())[0]?.secrets.previous, 'whsec_old');
    assert.equal(await store.subscribersVersion(), v1, 'nothing changed yet');

    now += 5_000;
    const v2 = await store.subscribersVersion();
    assert.notEqual(v2, v1, 'the grace period ended: the cached list must be reloaded');
    const [reloaded] = await store.allSubscribers();
    assert.equal(reloaded?.secrets.previous, undefined);
    assert.equal(reloaded?.secrets.previousExpiresAt, undefined);
    assert.equal((await store.getSubscriber('sub_1'))?.secrets.previous, undefined);
    assert.equal(await store.subscribersVersion(), v2, 'and stays put after the reload');
  });

  test('values written under an old key stay readable after a key rotation and move to the new key on write', async () => {
    const raw = await rawStore('rotation');
    await withSecretEncryption(raw, createKeyring({ encryptionKey: KEY_A })).createSubscriber(subscriber('sub_1', { current: 'whsec_a' }), Date.now());
    const rotated = withSecretEncryption(raw, createKeyring({ encryptionKey: KEY_B, previousKeys: [KEY_A] }));
    assert.equal((await rotated.getSubscriber('sub_1'))?.secrets.current, 'whsec_a');
    await rotated.updateSubscriber('sub_1', { secrets: { current: 'whsec_b' } }, Date.now());
    const atRest = (await raw.getSubscriber('sub_1')) as Subscriber;
    assert.equal(atRest.secrets.current.split(':')[2], keyIdOf(parseKey(KEY_B)));
    const withoutOldKey = withSecretEncryption(raw, createKeyring({ encryptionKey: KEY_B }));
    await assert.rejects(withoutOldKey.getSubscriber('sub_1'), unreadable, 'the transport header is still under the old key');

    assert.equal(await reencryptAll(rotated), 1);
    const moved = (await withoutOldKey.getSubscriber('sub_1')) as Subscriber;
    assert.equal(moved.secrets.current, 'whsec_b', 'after reencryptAll the old key is no longer needed');
    assert.equal((moved.transport.headers as Record<string, string>)['X-Api-Key'], 'api-key-value');
  });

  test('values that merely look encrypted, and secrets near the size limit, round-trip unharmed', async () => {
    const raw = await rawStore('lookalikes');
    const store = withSecretEncryption(raw, createKeyring({ encryptionKey: KEY_A }));
    const lookalike = `enc:v1:${keyIdOf(parseKey(KEY_A))}:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`;
    const big = 'k'.repeat(8_000); // sealed, it is longer than the 8192 characters the https schema allows a value
    const spec = SubscriberSpec.parse({
      name: 'lookalikes',
      transport: { kind: 'https', url: 'https://hooks.example.com/x', headers: { 'X-Plain': lookalike, 'X-Secret': lookalike, 'X-Big': big }, secretHeaders: ['X-Secret', 'X-Big'] },
    });
    await store.createSubscriber({ ...spec, id: 'sub_l', secrets: { current: 'whsec_x' } }, Date.now());
    const read = (await store.getSubscriber('sub_l')) as Subscriber;
    assert.deepEqual(read.transport.headers, { 'X-Plain': lookalike, 'X-Secret': lookalike, 'X-Big': big });
    const atRest = (await raw.getSubscriber('sub_l'))?.transport.headers as Record<string, string>;
    assert.equal(atRest['X-Plain'], lookalike, 'a value that is not secret is stored as given');
    assert.notEqual(atRest['X-Secret'], lookalike, 'a secret value is sealed even when it looks sealed');
    assert.ok((atRest['X-Big'] as string).length > 8_192);
  });

  test('without a key, values pass through as given (worker-only deployments and tests)', async () => {
    const raw = await rawStore('no-key');
    const store = withSecretEncryption(raw, createKeyring({}));
    await store.createSubscriber(subscriber('sub_1', { current: 'whsec_plain' }), Date.now());
    assert.equal((await raw.getSubscriber('sub_1'))?.secrets.current, 'whsec_plain');
    assert.equal((await store.getSubscriber('sub_1'))?.secrets.current, 'whsec_plain');
  });
});
