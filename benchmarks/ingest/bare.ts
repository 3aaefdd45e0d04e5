/**
 * The calibration target: a bare node:http receiver with no storage. It reads the body, checks
 * X-Hub-Signature-256 (HMAC-SHA256 + timingSafeEqual) and answers 202, the "receive ceiling" row of
 * shared/reference/performance.md (about 16k/s on one core of the reference machine). `run.ts --target bare` runs the
 * same load against it, so the router's numbers can be read as a ratio to this ceiling on the same machine.
 *
 *   node benchmarks/ingest/bare.ts --port P --secret S     (binds 127.0.0.1 only; GET /readyz answers 200)
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { port: { type: 'string' }, secret: { type: 'string' } }, strict: true });
if (!args.port || !args.secret) throw new Error('--port and --secret are required');
const secret = Buffer.from(args.secret);

const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  if (req.method === 'GET' && req.url === '/readyz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
    const header = req.headers['x-hub-signature-256'];
    const given = typeof header === 'string' && header.startsWith('sha256=') ? Buffer.from(header.slice(7), 'hex') : Buffer.alloc(0);
    const expected = createHmac('sha256', secret).update(body).digest();
    const ok = given.length === expected.length && timingSafeEqual(given, expected);
    const payload = ok ? '{"accepted":true}' : '{"error":"signature"}';
    res.writeHead(ok ? 202 : 401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    res.end(payload);
  });
});
server.listen(Number(args.port), '127.0.0.1');
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
