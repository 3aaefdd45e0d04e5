import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { RouterError, errorCodes, isRouterError } from '../../src/errors.ts';

test('every error code is documented in docs/errors.md, and nothing else is', () => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const documented = new Set([...doc.matchAll(/`(ROUTER_ERR_[A-Z_]+)`/g)].map((m) => m[1]));
  assert.deepEqual([...documented].sort(), Object.keys(errorCodes).sort());
});

test('instanceof holds across copies through the Symbol.for brand', () => {
  const err = new RouterError('ROUTER_ERR_QUEUE_CLOSED', 'closed', { cause: new Error('why') });
  const lookalike = Object.assign(new Error('x'), { [Symbol.for('webhook-router.error')]: true, code: 'ROUTER_ERR_QUEUE_CLOSED' });
  assert.ok(err instanceof RouterError);
  assert.ok(lookalike instanceof RouterError);
  assert.ok(!(new Error('plain') instanceof RouterError));
  assert.equal((err.cause as Error).message, 'why');
  assert.ok(isRouterError(err, 'ROUTER_ERR_QUEUE_CLOSED'));
  assert.equal(isRouterError(err, 'ROUTER_ERR_INTERNAL'), false);
});
