/**
 * The queue envelope: what travels from a receiver to the workers, versioned so that a rolling upgrade can read
 * messages written by the previous release.
 *
 * Wire form: `<metadata JSON>\n<raw body bytes>`. JSON.stringify never emits a raw newline, so the first 0x0A ends
 * the metadata. The body is the exact bytes the source sent (never re-serialised: subscribers re-verify signatures
 * over it), appended without base64 so an 8 KB body costs 8 KB. `bodyBytes` guards against truncation.
 *
 * Bytes that fail to decode are a poison message: the consumer reports them and acks, never nacks them in a loop.
 */
import { z } from 'zod';
import { sourceKinds } from '../config/schema.ts';
import { RouterError } from './errors.ts';

export const RoutingFields = z
  .object({
    event: z.string(),
    action: z.string().optional(),
    repository: z.string().optional(),
    organization: z.string().optional(),
    installation: z.string().optional(),
    ref: z.string().optional(),
    sender: z.string().optional(),
    senderType: z.string().optional(),
  })
  .strict();
export type RoutingFields = z.infer<typeof RoutingFields>;

const EnvelopeMeta = z
  .object({
    v: z.literal(1),
    type: z.literal('webhook'),
    /** Event id: derived from source and dedupe key, so a repeat of the same webhook carries the same id. */
    id: z.string().min(1),
    source: z.string().min(1),
    sourceKind: z.enum(sourceKinds),
    dedupeKey: z.string().min(1),
    receivedAt: z.number().int(),
    /** The source's event headers, passed through to subscribers (never its signature or token). */
    headers: z.record(z.string(), z.string()),
    routing: RoutingFields,
    bodyBytes: z.number().int().min(0),
  })
  .strict();
export type EnvelopeMeta = z.infer<typeof EnvelopeMeta>;

export interface Envelope extends EnvelopeMeta {
  body: Uint8Array;
}

const NEWLINE = 0x0a;

export function encodeEnvelope(meta: Omit<EnvelopeMeta, 'v' | 'type' | 'bodyBytes'>, body: Uint8Array): Buffer {
  const head = Buffer.from(JSON.stringify({ v: 1, type: 'webhook', ...meta, bodyBytes: body.byteLength }));
  const out = Buffer.allocUnsafe(head.length + 1 + body.byteLength);
  head.copy(out, 0);
  out[head.length] = NEWLINE;
  out.set(body, head.length + 1);
  return out;
}

export function decodeEnvelope(bytes: Uint8Array): Envelope {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const split = buf.indexOf(NEWLINE);
  if (split < 0) throw new RouterError('ROUTER_ERR_ENVELOPE_INVALID', 'envelope has no metadata line');
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString('utf8', 0, split));
  } catch (err) {
    throw new RouterError('ROUTER_ERR_ENVELOPE_INVALID', 'envelope metadata is not JSON', { cause: err });
  }
  const parsed = EnvelopeMeta.safeParse(raw);
  if (!parsed.success) {
    throw new RouterError('ROUTER_ERR_ENVELOPE_INVALID', `envelope metadata is invalid: ${parsed.error.issues[0]?.message}`);
  }
  const body = buf.subarray(split + 1);
  if (body.byteLength !== parsed.data.bodyBytes) {
    throw new RouterError('ROUTER_ERR_ENVELOPE_INVALID', `envelope body has ${body.byteLength} bytes, expected ${parsed.data.bodyBytes}`);
  }
  return { ...parsed.data, body };
}
