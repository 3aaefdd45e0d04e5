/**
 * The subscriber side of the end-to-end benchmark: a node:http server on 127.0.0.1 that answers 204 and records the
 * first arrival of every (path, webhook-id), so the orchestrator can tell delivered, lost and duplicated apart and
 * compute end-to-end latency (it knows each webhook-id: derived from the event id the receiver answered and the
 * subscriber id). Runs as its own process and reports over IPC: `{ port }` once listening, `{ unique, total,
 * duplicates, firstAt, lastAt }` on 'stats', and every first arrival on 'dump'.
 */
import { createServer } from 'node:http';

const seen = new Map<string, number>();
const arrivals = new Map<string, number>();
let total = 0;
let lastAt = 0;
let firstAt = 0;

const server = createServer((req, res) => {
  const id = String(req.headers['webhook-id'] ?? '');
  const sub = req.url ?? '';
  req.resume();
  req.on('end', () => {
    const key = `${sub} ${id}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
    if (!arrivals.has(key)) arrivals.set(key, Date.now());
    total += 1;
    lastAt = Date.now();
    firstAt ||= lastAt;
    res.writeHead(204).end();
  });
});
server.keepAliveTimeout = 65_000;

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
});

process.on('message', (message) => {
  if (message === 'stats') {
    let duplicates = 0;
    for (const count of seen.values()) duplicates += count - 1;
    process.send?.({ unique: seen.size, total, duplicates, firstAt, lastAt });
  } else if (message === 'dump') {
    process.send?.({ arrivals: [...arrivals] });
  } else if (message === 'stop') {
    process.disconnect();
  }
});
// After a 'stop', and also when the benchmark is gone without one (it failed, or was killed): nobody is left to ask,
// so stop listening and let the process end.
process.on('disconnect', () => {
  server.close();
  server.closeAllConnections();
});
