/**
 * Envelope encryption of secrets at rest (design §5: "encrypted at rest with a key from configuration").
 *
 * Wire form of an encrypted value: `enc:v1:<keyId>:<base64(iv ‖ tag ‖ ciphertext)>`, AES-256-GCM with a random
 * 96-bit IV and a 128-bit tag. The additional authenticated data binds the value to its owner (a subscriber id), so a
 * ciphertext copied into another row does not decrypt there.
 *
 * Key rotation: the key id is derived from the key itself (the first 16 hex digits of a SHA-256 over a label and
 * the key), so operators configure keys only. The keyring encrypts with `secrets.encryptionKey` and decrypts with it
 * or any of `secrets.previousKeys`; a value written under an old key is re-encrypted under the current one on its
 * next write. A value whose key id is unknown, or whose tag does not verify, throws ROUTER_ERR_SECRET_UNREADABLE.
 *
 * Values that do not start with `enc:` are plaintext written before encryption was configured; they are read as they
 * are and encrypted on their next write.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { RouterError } from '../errors.ts';

const PREFIX = 'enc:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const VALUE = /^enc:v1:([0-9a-f]{16}):([A-Za-z0-9+/]+={0,2})$/;

export interface KeyringConfig {
  /** 64 hex digits or the base64 (or base64url) of 32 bytes. */
  readonly encryptionKey?: string | undefined;
  readonly previousKeys?: readonly string[] | undefined;
}

export interface Keyring {
  /** Id of the key new values are encrypted with; undefined when no key is configured. */
  readonly currentKeyId: string | undefined;
  /** Encrypts `plaintext` bound to `owner`. Throws when no key is configured. */
  encrypt(plaintext: string, owner: string): string;
  /** Decrypts a value written by encrypt(); plaintext (not `enc:`) passes through unchanged. */
  decrypt(value: string, owner: string): string;
  isEncrypted(value: string): boolean;
}

/** Parses a configured key: 64 hex digits, or base64 / base64url of exactly 32 bytes. */
export function parseKey(text: string): Buffer {
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (key.length !== 32) {
    throw new RouterError('ROUTER_ERR_CONFIG_INVALID', 'an encryption key must be 256 bits: 64 hex digits or the base64 of 32 bytes');
  }
  return key;
}

export function keyIdOf(key: Buffer): string {
  return createHash('sha256').update('webhook-router/secret-key-id\0').update(key).digest('hex').slice(0, 16);
}

/** A fresh key in the form the configuration takes (base64 of 32 random bytes). */
export function generateKey(): string {
  return randomBytes(32).toString('base64');
}

const aad = (owner: string) => Buffer.from(`webhook-router:v1:${owner}`, 'utf8');

export function createKeyring(config: KeyringConfig): Keyring {
  const keys = new Map<string, Buffer>();
  let currentKeyId: string | undefined;
  if (config.encryptionKey !== undefined) {
    const key = parseKey(config.encryptionKey);
    currentKeyId = keyIdOf(key);
    keys.set(currentKeyId, key);
  }
  for (const text of config.previousKeys ?? []) {
    const key = parseKey(text);
    const id = keyIdOf(key);
    if (!keys.has(id)) keys.set(id, key);
  }

  return {
    currentKeyId,
    isEncrypted: (value) => VALUE.test(value),

    encrypt(plaintext, owner) {
      if (currentKeyId === undefined) {
        throw new RouterError('ROUTER_ERR_CONFIG_INVALID', 'secrets.encryptionKey is not configured; secrets cannot be encrypted');
      }
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', keys.get(currentKeyId) as Buffer, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad(owner));
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return `${PREFIX}${currentKeyId}:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
    },

    decrypt(value, owner) {
      if (!value.startsWith('enc:')) return value;
      const m = VALUE.exec(value);
      // Messages name the key id at most: never the value, which may be a secret written without encryption.
      if (!m) throw new RouterError('ROUTER_ERR_SECRET_UNREADABLE', 'a stored secret has an unknown encryption format');
      const key = keys.get(m[1] as string);
      if (!key) {
        throw new RouterError(
          'ROUTER_ERR_SECRET_UNREADABLE',
          `a stored secret is encrypted with key id ${m[1]}, which is neither secrets.encryptionKey nor one of secrets.previousKeys`,
        );
      }
      const raw = Buffer.from(m[2] as string, 'base64');
      if (raw.length < IV_BYTES + TAG_BYTES) throw new RouterError('ROUTER_ERR_SECRET_UNREADABLE', 'a stored secret is truncated');
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES), { authTagLength: TAG_BYTES });
        decipher.setAAD(aad(owner));
        decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
        return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
      } catch (err) {
        throw new RouterError('ROUTER_ERR_SECRET_UNREADABLE', `a stored secret (key id ${m[1]}) failed authentication: altered or moved`, {
          cause: err,
        });
      }
    },
  };
}
