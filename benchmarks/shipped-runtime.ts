/**
 * How the router ships to run: the environment and Node flags of the `webhook-router` bin's shebang (src/main.ts),
 * read from that line so that the benchmarks start the router exactly as it ships and cannot drift from it.
 * test/unit/runtime-settings.test.ts checks that `npm start` passes the same flags.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Runtime {
  /** Variables the shebang sets (`NAME=value` before `node`). */
  readonly env: Readonly<Record<string, string>>;
  /** Flags passed to node before the script. */
  readonly flags: readonly string[];
}

/** Parses `<NAME=value …> node <flags …>`: the words of a shebang after `env -S`, or of an npm script before the script. */
export function parseRuntime(words: readonly string[]): Runtime {
  const at = words.indexOf('node');
  if (at < 0) throw new Error(`no "node" in: ${words.join(' ')}`);
  const env: Record<string, string> = {};
  for (const w of words.slice(0, at)) {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new Error(`not a NAME=value assignment: ${w}`);
    env[w.slice(0, eq)] = w.slice(eq + 1);
  }
  const flags: string[] = [];
  for (const w of words.slice(at + 1)) {
    if (!w.startsWith('-')) break;
    flags.push(w);
  }
  return { env, flags };
}

/** The runtime of the checkout at `root` (default: this one; the ingest harness's `--repo` measures another). */
export function shippedRuntime(root: string = fileURLToPath(new URL('..', import.meta.url))): Runtime {
  const first = readFileSync(join(root, 'src/main.ts'), 'utf8').split('\n', 1)[0] ?? '';
  const shebang = /^#!\/usr\/bin\/env -S (.+)$/.exec(first);
  if (!shebang?.[1]) throw new Error(`src/main.ts does not start with "#!/usr/bin/env -S …": ${first}`);
  return parseRuntime(shebang[1].trim().split(/\s+/));
}

/**
 * The environment a benchmark starts a server with: the caller's, without ROUTER_* variables (they would change the
 * config the benchmark wrote), plus `extra` (a shipped runtime's variables). Both harnesses start the router through
 * this, so a variable given to one reaches the router as it does in the other; the end-to-end harness once passed
 * PATH alone, and an A/B steered by a variable measured the unchanged router without saying so.
 */
export function benchmarkEnv(extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ROUTER_')) env[k] = v;
  return { ...env, ...extra };
}
