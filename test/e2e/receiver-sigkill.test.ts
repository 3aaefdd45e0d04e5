/**
 * "202 only after the queue confirmed the write", tested the hard way: the real CLI (`node src/main.ts receiver`)
 * with a SQLite queue takes a burst of concurrent signed webhooks and is SIGKILLed while requests are still in
 * flight. The queue file is then opened by this process: every event id that was answered 202 must be in it.
 * Messages that are in the queue without a 202 (committed, but killed before answering) are allowed: the source
 * retries and the event id, derived from the dedupe key, collapses the copies.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { createSqliteQueue } from '../../adapters/queue/sqlite.ts';
import { Queue } from '../../config/schema.ts';
import { decodeEnvelope } from '../../src/envelope.ts';
import { freePort, tempDir } from '../helpers/app.ts';
import { githubRequest, randomSecret } from '../helpers/sign.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BURST = Number(process.env.SIGKILL_BURST ?? 500);

test(`SIGKILL during a burst of ${BURST} webhooks: every 202 is in the SQLite queue`, { timeout: 90_000 }, async (t) => {
  const dir = tempDir('wr-sigkill-');
  const queuePath = join(dir.path, 'queue.db');
  const secret = randomSecret();
  const [webhooksPort, managementPort] = [await freePort(), await freePort()];
  const configPath = join(dir.path, 'router.yaml');
  writeFileSync(
    configPath,
    stringify({
      listen: { webhooks: webhooksPort, management: managementPort, host: '127.0.0.1' },
      queue: { kind: 'sqlite', path: queuePath },
      sources: [{ id: 'github', kind: 'github', secrets: [secret] }],
      log: { level: 'info' },
    }),
  );

  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ROUTER_')));
  const child = spawn(process.execPath, ['src/main.ts', 'receiver', '--config', configPath], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  const agent = new Agent({ keepAliveTimeout: 1_000 });
  let passed = false;
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    await agent.close();
    if (passed) dir.remove();
    else t.diagnostic(`kept ${dir.path}; child output:\n${output.join('').slice(-4_000)}`);
  });

  const started = performance.now();
  await waitForStart(child, output);
  const startMs = performance.now() - started;
  const ready = await request(`http://127.0.0.1:${managementPort}/readyz`, { dispatcher: agent });
  assert.equal(ready.statusCode, 200, await ready.body.text());

  // The burst: BURST distinct requests (each its own delivery GUID) all in flight at once, while a stream of further
  // requests keeps going, so that some are in flight when the child is killed right after the burst was answered.
  const url = `http://127.0.0.1:${webhooksPort}/webhooks/github`;
  const accepted = new Set<string>();
  const otherStatuses = new Map<number, number>();
  const counts = { sent: 0, failed: 0, burst202: 0 };
  let killed = false;
  const exited = once(child, 'exit');
  const sendOne = async (): Promise<void> => {
    const i = counts.sent++;
    const req = githubRequest({ secret, body: JSON.stringify({ ref: 'refs/heads/main', i, pad: 'x'.repeat(i % 2_000) }), hookId: 42 });
    try {
      const res = await request(url, { method: 'POST', headers: req.headers, body: req.body, dispatcher: agent, headersTimeout: 15_000, bodyTimeout: 15_000 });
      const text = await res.body.text();
      if (res.statusCode === 202) accepted.add((JSON.parse(text) as { id: string }).id);
      else otherStatuses.set(res.statusCode, (otherStatuses.get(res.statusCode) ?? 0) + 1);
    } catch {
      counts.failed += 1; // in flight when the process died
    }
  };
  const trickle = Array.from({ length: 32 }, async () => {
    while (!killed) await sendOne();
  });
  const burstStarted = performance.now();
  await Promise.all(Array.from({ length: BURST }, () => sendOne()));
  const burstMs = performance.now() - burstStarted;
  counts.burst202 = accepted.size;
  killed = true;
  child.kill('SIGKILL');
  await Promise.all(trickle);
  const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  assert.equal(signal, 'SIGKILL', `child exited by itself (code ${code})`);

  // Open the queue the dead process left behind (WAL recovery happens here) and read everything.
  const queue = createSqliteQueue(Queue.parse({ kind: 'sqlite', path: queuePath }) as Parameters<typeof createSqliteQueue>[0]);
  await queue.connect();
  const inQueue = new Set<string>();
  let messages = 0;
  try {
    const consumer = queue.consumer();
    for (;;) {
      const batch = await consumer.receive({ max: 1_000, waitMs: 0 });
      if (batch.length === 0) break;
      for (const delivery of batch) {
        const envelope = decodeEnvelope(delivery.body);
        assert.equal(envelope.source, 'github');
        inQueue.add(envelope.id);
        messages += 1;
      }
      await Promise.all(batch.map((delivery) => delivery.ack())); // one group commit, not one per message
    }
    await consumer.close();
  } finally {
    await queue.close();
  }

  const lost = [...accepted].filter((id) => !inQueue.has(id));
  const unanswered = [...inQueue].filter((id) => !accepted.has(id)).length;
  t.diagnostic(
    `sent ${counts.sent} (burst ${BURST} + ${counts.sent - BURST} streamed alongside); 202 ${accepted.size} (${counts.burst202} when the burst ended and SIGKILL was sent); ` +
      `other statuses ${JSON.stringify(Object.fromEntries(otherStatuses))}; connection errors ${counts.failed}; ` +
      `in the queue ${messages} messages / ${inQueue.size} ids, of which ${unanswered} committed without a 202 reaching the client; ` +
      `lost 202s ${lost.length}; child start ${startMs.toFixed(0)} ms, burst ${burstMs.toFixed(0)} ms`,
  );
  assert.ok(counts.burst202 > 0, 'the burst got no 202 at all');
  assert.ok(counts.failed > 0 || counts.sent > BURST, 'nothing was in flight at the kill');
  assert.deepEqual(lost, [], `${lost.length} events answered 202 are not in the queue`);
  assert.equal(messages, inQueue.size, 'an event was enqueued twice');
  passed = true;
});

/** Resolves on the child's "webhook-router started" log line; rejects if it exits first. Bounded at 20 s. */
async function waitForStart(child: ChildProcess, output: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`the receiver did not start within 20 s:\n${output.join('')}`)), 20_000);
    const onData = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output.push(text);
      buffered += text;
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          if ((JSON.parse(line) as { msg?: string }).msg === 'webhook-router started') {
            clearTimeout(timer);
            child.off('exit', onExit);
            resolve();
          }
        } catch {
          // not a log line
        }
      }
    };
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`the receiver exited (code ${code}) before it started:\n${output.join('')}`));
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString('utf8')));
    child.once('exit', onExit);
  });
}
