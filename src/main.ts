#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=8
// How the router runs (package.json's start script passes the same flags, test/unit/runtime-settings.test.ts; it
// leaves the variable out so that it runs under any shell npm uses, Windows' included). Where node is called
// directly, as a container's command, run `MALLOC_ARENA_MAX=2 node --max-semi-space-size=8 src/main.ts <role>`:
// - --max-semi-space-size=8: V8 otherwise grows the young generation to 64 MB under a worker's allocation rate and
//   keeps it, 48 MB of RSS that buys no measurable throughput here (benchmarks/RESULTS.md, memory).
// - MALLOC_ARENA_MAX=2: glibc gives threads malloc arenas of their own (up to eight per core) and keeps what each has
//   freed; a router process has a dozen threads (SQLite's, V8's, libuv's). With two arenas a worker under a
//   100,000-event backlog peaked at 256–264 MB of RSS in every run instead of 272–331 MB, at the same throughput
//   (benchmarks/RESULTS.md, 4 December, second session). C libraries other than glibc ignore it.
// The process boundary: the only module that reads process.env/argv, installs signal handlers or sets the exit code.
import { readFileSync } from 'node:fs';
import closeWithGrace from 'close-with-grace';
import { CommanderError } from 'commander';
import { buildCli } from './cli.ts';

const cli = buildCli({
  env: process.env,
  readFile: (path) => readFileSync(path, 'utf8'),
  dataDir: './data',
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  stderrIsTTY: process.stderr.isTTY === true,
  setExitCode: (code) => {
    process.exitCode = code;
  },
  async runService(app, logger, graceMs) {
    // close-with-grace handles SIGTERM/SIGINT and uncaught errors; a second signal or the deadline forces the exit.
    closeWithGrace({ delay: graceMs + 5_000 }, async ({ signal, err }) => {
      if (err) logger.fatal({ err }, 'fatal error, shutting down');
      else logger.info({ signal }, 'shutting down');
      await app.close();
    });
    try {
      await app.start();
    } catch (err) {
      logger.fatal({ err }, 'start-up failed');
      await app.close().catch(() => {});
      process.exitCode = 1;
      process.exit();
    }
  },
});

try {
  await cli.parseAsync(process.argv);
} catch (err) {
  // --help and --version end through commander's exit override with their own code; real errors were printed.
  if (!(err instanceof CommanderError)) throw err;
  process.exitCode = err.exitCode;
}
