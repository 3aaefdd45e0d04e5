/**
 * The benchmark fixture: a realistic GitHub `push` body, compact JSON, of an exact size (8,336 B by default, the size
 * shared/reference/performance.md measured with), and its `X-Hub-Signature-256` for a given secret.
 *
 * It starts from the `push` example in @octokit/webhooks-examples that carries one commit to a user repository
 * (Codertocat/Hello-World, 7.7 KB) and appends commits shaped like the example's own until the target size is
 * reached; the last commit's message is padded so that the body is exactly `targetBytes` long.
 */
import { createHash, createHmac } from 'node:crypto';
import { createRequire } from 'node:module';

export const DEFAULT_BODY_BYTES = 8_336;

interface Commit {
  id: string;
  tree_id: string;
  message: string;
  timestamp: string;
  url: string;
  [key: string]: unknown;
}
interface PushPayload {
  before: string;
  after: string;
  compare: string;
  commits: Commit[];
  head_commit: Commit | null;
  repository: { html_url: string };
  [key: string]: unknown;
}

const require = createRequire(import.meta.url);

function pushExample(): PushPayload {
  const all = require('@octokit/webhooks-examples/api.github.com/index.json') as { name: string; examples: PushPayload[] }[];
  const push = all.find((e) => e.name === 'push');
  const base = push?.examples.find((p) => p.commits.length === 1 && p.head_commit !== null);
  if (!base) throw new Error('@octokit/webhooks-examples has no push example with one commit');
  return structuredClone(base);
}

const sha1 = (text: string) => createHash('sha1').update(text).digest('hex');
const size = (p: unknown) => Buffer.byteLength(JSON.stringify(p));

/** A compact-JSON push body of exactly `targetBytes` (at least the size of the one-commit example). */
export function buildPushBody(targetBytes: number = DEFAULT_BODY_BYTES): Buffer {
  const payload = pushExample();
  const template = payload.commits[0] as Commit;
  const minimum = size(payload);
  if (targetBytes < minimum) throw new Error(`body target ${targetBytes} B is below the one-commit example (${minimum} B)`);

  let last = template;
  for (let i = 1; ; i++) {
    const id = sha1(`webhook-router benchmark commit ${i}`);
    const commit: Commit = {
      ...structuredClone(template),
      id,
      tree_id: sha1(`tree ${i}`),
      message: `Update README (${i})`,
      timestamp: new Date(Date.parse(template.timestamp) + i * 60_000).toISOString().replace('.000Z', 'Z'),
      url: `${payload.repository.html_url}/commit/${id}`,
    };
    payload.commits.push(commit);
    if (size(payload) > targetBytes) {
      payload.commits.pop();
      break;
    }
    last = commit;
  }
  payload.head_commit = structuredClone(last);
  payload.before = template.id === last.id ? payload.before : template.id;
  payload.after = last.id;
  payload.compare = `${payload.repository.html_url}/compare/${payload.before.slice(0, 12)}...${last.id.slice(0, 12)}`;

  // Pad the last commit's message (and its head_commit copy) to land on the exact size.
  const filler = ' Explain the change in the body of the commit message, as a careful author would.';
  const head = payload.head_commit;
  while (size(payload) < targetBytes) {
    const missing = targetBytes - size(payload);
    // Each character appears twice (commits[] and head_commit): add half of what is missing, at least one.
    const add = filler.repeat(Math.ceil(missing / filler.length)).slice(0, Math.max(1, Math.floor(missing / 2)));
    last.message += add;
    head.message = last.message;
    if (size(payload) > targetBytes) {
      // An odd remainder: trim the head copy by one character and add it to a field that appears once.
      last.message = last.message.slice(0, -add.length);
      head.message = last.message;
      const one = targetBytes - size(payload);
      last.message += filler.repeat(Math.ceil(one / filler.length)).slice(0, one);
      break;
    }
  }
  const body = Buffer.from(JSON.stringify(payload));
  if (body.length !== targetBytes) throw new Error(`built a ${body.length} B body, wanted ${targetBytes} B`);
  return body;
}

/** `X-Hub-Signature-256` for body and secret. GitHub signs only the body, so every delivery id keeps it valid. */
export function signGithub(body: Uint8Array, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

// `node benchmarks/ingest/body.ts [bytes]` prints the fixture, e.g. to inspect it or to feed another tool.
if (import.meta.main) {
  process.stdout.write(buildPushBody(Number(process.argv[2] ?? DEFAULT_BODY_BYTES)));
}
