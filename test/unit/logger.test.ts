import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/logger.ts';

test('signatures, tokens and configuration secrets never reach the log', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const logger = createLogger({ level: 'debug' }, sink);
  logger.info({
    req: { headers: { 'x-hub-signature-256': 'sha256=SIG-GH', 'x-gitlab-token': 'TOKEN-GL', authorization: 'Bearer TOKEN-API' } },
    headers: { 'webhook-signature': 'v1,SIG-SW' },
    source: { id: 'github', secrets: ['SECRET-1', 'SECRET-2'] },
    token: 'TOKEN-TOP',
  }, 'hello');
  const out = lines.join('');
  for (const secret of ['SIG-GH', 'TOKEN-GL', 'TOKEN-API', 'SIG-SW', 'SECRET-1', 'SECRET-2', 'TOKEN-TOP']) {
    assert.ok(!out.includes(secret), `${secret} leaked: ${out}`);
  }
  assert.match(out, /"source":\{"id":"github"/);
});
