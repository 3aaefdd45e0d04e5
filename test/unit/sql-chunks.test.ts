import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chunker, padToPowerOfTwo } from '../../adapters/store/sql/store.ts';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

test('sqlite parts come from the 256…1 ladder, keep the order and drop nothing', () => {
  const chunks = chunker('sqlite');
  const sizes = new Set<number>();
  for (let n = 0; n <= 1_000; n++) {
    const parts = chunks(range(n));
    assert.deepEqual(parts.flat(), range(n));
    for (const p of parts) sizes.add(p.length);
  }
  // Nine row counts in all, so each statement has at most nine texts for the thread to prepare.
  assert.deepEqual([...sizes].sort((a, b) => a - b), [1, 2, 4, 8, 16, 32, 64, 128, 256]);
});

test('postgres parts are slices of 256, one round trip each', () => {
  assert.deepEqual(chunker('postgres')(range(600)).map((p) => p.length), [256, 256, 88]);
  assert.deepEqual(chunker('postgres')([]), []);
});

test('a NOT IN list is padded with its first item to a power of two, and an empty one stays empty', () => {
  assert.deepEqual(padToPowerOfTwo([]), []);
  assert.deepEqual(padToPowerOfTwo(['a']), ['a']);
  assert.deepEqual(padToPowerOfTwo(['a', 'b', 'c']), ['a', 'b', 'c', 'a']);
  assert.equal(padToPowerOfTwo(range(129)).length, 256);
});
