/**
 * src/receiver/verify.ts against independent oracles: signatures made by @octokit/webhooks-methods (GitHub) and by
 * the Standard Webhooks reference library (standardwebhooks) must verify; anything altered must not.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { sign as octokitSign } from '@octokit/webhooks-methods';
import { Webhook } from 'standardwebhooks';
import {
  standardWebhooksKey,
  verifyGithubSignature,
  verifyStandardSignature,
  verifyToken,
} from '../../src/receiver/verify.ts';
import { githubSignature, randomWhsecSecret, standardSignature } from '../helpers/sign.ts';

const enc = (s: string) => Buffer.from(s, 'utf8');
const TOLERANCE = 300;

describe('verifyGithubSignature', () => {
  const secret = 'It’s a Secret to Everybody';
  const body = JSON.stringify({ action: 'opened', number: 1, title: 'héllo ✓', nested: { a: [1, 2, 3] } });

  test('a signature made by @octokit/webhooks-methods verifies', async () => {
    const header = await octokitSign(secret, body);
    assert.match(header, /^sha256=[0-9a-f]{64}$/);
    assert.equal(verifyGithubSignature(enc(body), header, [enc(secret)]), true);
    // The helper used by the e2e tests agrees with the oracle.
    assert.equal(githubSignature(secret, body), header);
  });

  test("GitHub's documented test vector verifies", () => {
    // docs.github.com "Validating webhook deliveries": secret "It's a Secret to Everybody", payload "Hello, World!".
    const header = 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17';
    assert.equal(verifyGithubSignature(enc('Hello, World!'), header, [enc("It's a Secret to Everybody")]), true);
  });

  test('uppercase hex and surrounding whitespace are accepted', async () => {
    const header = await octokitSign(secret, body);
    assert.equal(verifyGithubSignature(enc(body), `sha256=${header.slice(7).toUpperCase()}`, [enc(secret)]), true);
    assert.equal(verifyGithubSignature(enc(body), ` ${header} `, [enc(secret)]), true);
  });

  test('many random bodies and secrets agree with the oracle', async () => {
    for (let i = 0; i < 50; i++) {
      const s = randomBytes(1 + (i % 40)).toString('base64');
      const b = randomBytes(i * 37).toString('latin1');
      // octokit signs the string as UTF-8; verify over the same bytes.
      const header = await octokitSign(s, b || 'x');
      assert.equal(verifyGithubSignature(enc(b || 'x'), header, [enc(s)]), true, `iteration ${i}`);
    }
  });

  test('wrong secret is rejected', async () => {
    const header = await octokitSign('another secret', body);
    assert.equal(verifyGithubSignature(enc(body), header, [enc(secret)]), false);
  });

  test('tampered body is rejected (one byte changed, one byte appended, re-serialised JSON)', async () => {
    const header = await octokitSign(secret, body);
    const changed = enc(body);
    changed[5] = (changed[5] ?? 0) ^ 0x01;
    assert.equal(verifyGithubSignature(changed, header, [enc(secret)]), false);
    assert.equal(verifyGithubSignature(enc(`${body} `), header, [enc(secret)]), false);
    assert.equal(verifyGithubSignature(enc(JSON.stringify(JSON.parse(body), null, 2)), header, [enc(secret)]), false);
  });

  test('wrong length, non-hex, empty and malformed headers are rejected', async () => {
    const header = await octokitSign(secret, body);
    const hex = header.slice('sha256='.length);
    const secrets = [enc(secret)];
    for (const bad of [
      `sha256=${hex.slice(0, 62)}`, // one byte short
      `sha256=${hex.slice(0, 63)}`, // odd length
      `sha256=${hex}00`, // one byte long
      `sha256=${hex.slice(0, 63)}g`, // non-hex
      `sha256=${'z'.repeat(64)}`,
      `sha256=${Buffer.from(hex, 'hex').toString('base64')}`, // right digest, wrong encoding
      '',
      'sha256=',
      hex, // no prefix
      `sha1=${hex}`,
      `SHA256=${hex}`,
      `sha256 = ${hex}`,
      `sha256=${hex},sha256=${hex}`,
      `sha256=${hex}, sha256=${hex}`, // what Node makes of a repeated header
    ]) {
      assert.equal(verifyGithubSignature(enc(body), bad, secrets), false, `accepted ${JSON.stringify(bad)}`);
    }
  });

  test('a legacy sha1 signature alone is never enough', () => {
    const sha1 = `sha1=${createHmac('sha1', secret).update(body).digest('hex')}`;
    assert.equal(verifyGithubSignature(enc(body), sha1, [enc(secret)]), false);
  });

  test('rotation: with two secrets, a signature by either one verifies', async () => {
    const secrets = [enc('old-secret'), enc('new-secret')];
    assert.equal(verifyGithubSignature(enc(body), await octokitSign('old-secret', body), secrets), true);
    assert.equal(verifyGithubSignature(enc(body), await octokitSign('new-secret', body), secrets), true);
    assert.equal(verifyGithubSignature(enc(body), await octokitSign('third-secret', body), secrets), false);
  });

  test('no secrets configured: nothing verifies', async () => {
    assert.equal(verifyGithubSignature(enc(body), await octokitSign(secret, body), []), false);
  });

  test('empty body with a valid signature verifies (signature is over the raw bytes, even zero of them)', () => {
    assert.equal(verifyGithubSignature(new Uint8Array(0), githubSignature(secret, ''), [enc(secret)]), true);
  });
});

describe('verifyToken (GitLab X-Gitlab-Token)', () => {
  test('the exact token matches; anything else does not', () => {
    const secrets = [enc('gl-token-1')];
    assert.equal(verifyToken('gl-token-1', secrets), true);
    for (const bad of ['', 'gl-token-', 'gl-token-10', 'GL-TOKEN-1', ' gl-token-1', 'gl-token-1 ', 'x'.repeat(10_000)]) {
      assert.equal(verifyToken(bad, secrets), false, `accepted ${JSON.stringify(bad.slice(0, 20))}`);
    }
  });

  test('rotation: either of two tokens matches', () => {
    const secrets = [enc('old-token'), enc('new-token')];
    assert.equal(verifyToken('old-token', secrets), true);
    assert.equal(verifyToken('new-token', secrets), true);
    assert.equal(verifyToken('other-token', secrets), false);
  });

  test('non-ASCII tokens compare as UTF-8 bytes', () => {
    assert.equal(verifyToken('tökén-✓', [enc('tökén-✓')]), true);
    assert.equal(verifyToken('token-✓', [enc('tökén-✓')]), false);
  });
});

describe('standardWebhooksKey', () => {
  test('decodes whsec_ secrets; refuses other forms', () => {
    const raw = randomBytes(32);
    assert.deepEqual(Buffer.from(standardWebhooksKey(`whsec_${raw.toString('base64')}`) ?? []), raw);
    assert.equal(standardWebhooksKey(raw.toString('base64')), undefined);
    assert.equal(standardWebhooksKey('whsec_'), undefined);
  });
});

describe('verifyStandardSignature', () => {
  const secret = randomWhsecSecret(32);
  const keys = [standardWebhooksKey(secret) as Uint8Array];
  const payload = JSON.stringify({ type: 'invoice.paid', timestamp: '2024-01-01T00:00:00Z', data: { id: 'in_1', note: 'ünïcødé' } });
  const now = Math.floor(Date.now() / 1000);
  const id = 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W';

  /** A signature made by the reference library. */
  const refSign = (s: string, msgId: string, tsSec: number, body: string) => new Webhook(s).sign(msgId, new Date(tsSec * 1000), body);

  test('a signature made by standardwebhooks verifies', () => {
    const signature = refSign(secret, id, now, payload);
    assert.match(signature, /^v1,[A-Za-z0-9+/]+=*$/);
    assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(now), signature }, keys, now, TOLERANCE), 'ok');
    // The helper used by the e2e tests agrees with the oracle.
    assert.equal(standardSignature(secret, id, now, payload), signature);
  });

  test("the reference library's verify() accepts what the helper signs", () => {
    const headers = { 'webhook-id': id, 'webhook-timestamp': String(now), 'webhook-signature': standardSignature(secret, id, now, payload) };
    assert.deepEqual(new Webhook(secret).verify(payload, headers), JSON.parse(payload));
  });

  test('many random secrets, ids and bodies agree with the oracle', () => {
    for (let i = 0; i < 50; i++) {
      const s = randomWhsecSecret(24 + (i % 41));
      const msgId = `msg_${randomBytes(8).toString('hex')}`;
      const body = JSON.stringify({ i, blob: randomBytes(i * 11).toString('base64') });
      const ts = now - 299 + ((i * 13) % 598);
      const signature = refSign(s, msgId, ts, body);
      const verdict = verifyStandardSignature(enc(body), { id: msgId, timestamp: String(ts), signature }, [standardWebhooksKey(s) as Uint8Array], now, TOLERANCE);
      assert.equal(verdict, 'ok', `iteration ${i}`);
    }
  });

  test('wrong secret → mismatch', () => {
    const signature = refSign(randomWhsecSecret(), id, now, payload);
    assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(now), signature }, keys, now, TOLERANCE), 'mismatch');
  });

  test('tampered body, id or timestamp → mismatch', () => {
    const signature = refSign(secret, id, now, payload);
    assert.equal(verifyStandardSignature(enc(`${payload} `), { id, timestamp: String(now), signature }, keys, now, TOLERANCE), 'mismatch');
    assert.equal(verifyStandardSignature(enc(payload), { id: `${id}x`, timestamp: String(now), signature }, keys, now, TOLERANCE), 'mismatch');
    assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(now - 1), signature }, keys, now, TOLERANCE), 'mismatch');
  });

  test('malformed signature headers → mismatch', () => {
    const good = refSign(secret, id, now, payload);
    const b64 = good.slice(3);
    const digest = Buffer.from(b64, 'base64');
    for (const bad of [
      '',
      ' ',
      'v1,',
      b64, // no version
      `v2,${b64}`,
      `v1a,${b64}`, // ed25519 marker with an HMAC
      `V1,${b64}`,
      `v1,${digest.subarray(0, 31).toString('base64')}`, // one byte short
      `v1,${Buffer.concat([digest, Buffer.from([0])]).toString('base64')}`, // one byte long
      `v1,${digest.toString('hex')}`, // hex instead of base64
      `v1;${b64}`,
    ]) {
      assert.equal(
        verifyStandardSignature(enc(payload), { id, timestamp: String(now), signature: bad }, keys, now, TOLERANCE),
        'mismatch',
        `accepted ${JSON.stringify(bad)}`,
      );
    }
  });

  test('stale or future timestamps beyond the tolerance → stale, even when correctly signed', () => {
    for (const ts of [now - TOLERANCE - 1, now + TOLERANCE + 1, now - 86_400, 0]) {
      const signature = refSign(secret, id, ts, payload);
      assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(ts), signature }, keys, now, TOLERANCE), 'stale', `ts ${ts - now}`);
    }
    // The edges of the window are inside.
    for (const ts of [now - TOLERANCE, now + TOLERANCE]) {
      const signature = refSign(secret, id, ts, payload);
      assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(ts), signature }, keys, now, TOLERANCE), 'ok');
    }
  });

  test('non-numeric timestamps → stale', () => {
    const signature = refSign(secret, id, now, payload);
    for (const ts of ['', 'abc', `${now}.0`, `+${now}`, `-${now}`, ` ${now}`, `${now}e0`, '1'.repeat(13)]) {
      assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: ts, signature }, keys, now, TOLERANCE), 'stale', JSON.stringify(ts));
    }
  });

  test('several signatures in webhook-signature: one valid is enough', () => {
    const valid = refSign(secret, id, now, payload);
    const other = refSign(randomWhsecSecret(), id, now, payload);
    const junk = `v1,${randomBytes(32).toString('base64')}`;
    for (const signature of [`${other} ${valid}`, `${valid} ${other}`, `${junk} ${other} ${valid}`, `v1a,${randomBytes(64).toString('base64')} ${valid}`, `garbage ${valid}`]) {
      assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(now), signature }, keys, now, TOLERANCE), 'ok', signature);
    }
    assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(now), signature: `${other} ${junk}` }, keys, now, TOLERANCE), 'mismatch');
  });

  test('rotation: with two keys configured, a signature by either one verifies', () => {
    const oldSecret = randomWhsecSecret();
    const newSecret = randomWhsecSecret();
    const both = [standardWebhooksKey(oldSecret) as Uint8Array, standardWebhooksKey(newSecret) as Uint8Array];
    for (const s of [oldSecret, newSecret]) {
      const signature = refSign(s, id, now, payload);
      assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(now), signature }, both, now, TOLERANCE), 'ok');
    }
    const signature = refSign(randomWhsecSecret(), id, now, payload);
    assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(now), signature }, both, now, TOLERANCE), 'mismatch');
  });

  test('no keys configured: nothing verifies', () => {
    const signature = refSign(secret, id, now, payload);
    assert.equal(verifyStandardSignature(enc(payload), { id, timestamp: String(now), signature }, [], now, TOLERANCE), 'mismatch');
  });
});
