/**
 * Byte arrays packed end to end into one fresh ArrayBuffer, so a batch of message bodies crosses a thread boundary as
 * one transfer instead of one structured copy each. A fresh buffer matters: transferring a Buffer taken from Node's
 * shared pool would detach every other Buffer in that pool.
 */
export interface Packed {
  readonly buffer: ArrayBuffer;
  readonly places: readonly { readonly offset: number; readonly length: number }[];
}

export function pack(parts: readonly Uint8Array[]): Packed {
  let total = 0;
  for (const p of parts) total += p.byteLength;
  // allocUnsafeSlow: never from the shared pool, and not zero-filled (every byte is written below).
  const out = Buffer.allocUnsafeSlow(total);
  const places: { offset: number; length: number }[] = [];
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    places.push({ offset, length: p.byteLength });
    offset += p.byteLength;
  }
  return { buffer: out.buffer as ArrayBuffer, places };
}
