/**
 * Parses a webhook body for routing and filters: JSON, or GitHub's form encoding with the JSON in `payload`.
 * Returns undefined when the body is neither. The bytes themselves are never changed.
 */
export function parsePayload(body: Uint8Array, contentType: string | undefined): unknown {
  const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const mediaType = (contentType ?? 'application/json').split(';')[0]?.trim().toLowerCase();
  try {
    if (mediaType !== 'application/x-www-form-urlencoded') return JSON.parse(buf.toString('utf8'));
    const field = new URLSearchParams(buf.toString('utf8')).get('payload');
    return field === null ? undefined : JSON.parse(field);
  } catch {
    return undefined;
  }
}
