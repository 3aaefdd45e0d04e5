/**
 * The `webhook-router` command line. Builds the commander program around injected I/O so tests can run commands
 * in-process; src/main.ts supplies the real process, signals and exit codes.
 */
import { Command } from 'commander';
import { stringify } from 'yaml';
import { apiCurlExample, curlExample, firstRunLayer, wantsFirstRun } from '../config/first-run.ts';
import { loadConfig } from '../config/load.ts';
import { redactConfig } from '../config/redact.ts';
import type { Config } from '../config/schema.ts';
import { createStore } from '../adapters/store/index.ts';
import type { Store } from '../adapters/store/port.ts';
import { DlqUsageError, dlqList, dlqPurge, dlqReplay, dlqShow, progressBar, type SelectOptions } from './dlq/commands.ts';
import { type App, buildApp, type Role } from './app.ts';
import { RouterError, isRouterError } from './errors.ts';
import { createLogger, type Logger } from './logger.ts';
import { createKeyring } from './secrets/keyring.ts';
import { reencryptAll, withSecretEncryption } from './secrets/store.ts';

export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile: (path: string) => string;
  /** Where `serve` keeps first-run secrets and the embedded databases (./data). */
  readonly dataDir: string;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Whether stderr is a terminal (progress bars go there only then). */
  readonly stderrIsTTY: boolean;
  /** Runs a long-lived app until a shutdown signal; resolves once it has closed. */
  readonly runService: (app: App, logger: Logger, graceMs: number) => Promise<void>;
  readonly setExitCode: (code: number) => void;
}

export function buildCli(io: CliIo): Command {
  const program = new Command('webhook-router')
    .description('Receives verified webhooks, queues them durably and fans them out to subscribers.')
    .option('-c, --config <path>', 'YAML configuration file (default: $ROUTER_CONFIG; ROUTER_<SECTION>__<KEY> variables override it)')
    .showHelpAfterError()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .exitOverride();

  const configPath = () => program.opts<{ config?: string }>().config;

  /** Loads the configuration, printing every problem and setting exit code 1 when it is invalid. */
  const load = (base?: Record<string, unknown>): Readonly<Config> | undefined => {
    try {
      return loadConfig({ configPath: configPath(), env: io.env, readFile: io.readFile, ...(base ? { base } : {}) });
    } catch (err) {
      if (!isRouterError(err, 'ROUTER_ERR_CONFIG_INVALID')) throw err;
      io.stderr(`${err.message}\n`);
      io.setExitCode(1);
      return undefined;
    }
  };

  const run = async (roles: Role[], config: Readonly<Config> | undefined, migrate = false) => {
    if (!config) return;
    const logger = createLogger(config.log);
    let app: App;
    try {
      app = await buildApp(config, { logger, roles, migrate });
    } catch (err) {
      if (!isRouterError(err)) throw err;
      io.stderr(`${err.code}: ${err.message}\n`);
      io.setExitCode(1);
      return;
    }
    await io.runService(app, logger, config.shutdownGraceMs);
  };

  program
    .command('serve')
    .description(
      'Everything in one process on the embedded defaults (SQLite queue and store under ./data). With no configuration ' +
        'at all, the first run generates a webhook secret for a "github" source, an admin API token and an encryption ' +
        'key in ./data/first-run.json and prints the secret and the token once. Runs the receiver, the worker and the ' +
        'REST API, and brings the store schema up to date first.',
    )
    .action(async () => {
      let base: Record<string, unknown> | undefined;
      if (wantsFirstRun(configPath(), io.env)) {
        const first = firstRunLayer(io.dataDir);
        base = first.layer;
        if (first.created) {
          const port = Number(io.env.ROUTER_LISTEN__WEBHOOKS ?? 8080);
          io.stdout(
            `\nFirst run: generated a webhook secret for source "github" (kept in ${first.file}, mode 0600).\n` +
              `  secret: ${first.githubSecret}\n\nSend a signed test webhook:\n\n${curlExample(first.githubSecret, port)}\n\n`,
          );
        }
        if (first.tokenCreated) {
          const port = Number(io.env.ROUTER_LISTEN__API ?? 8081);
          io.stdout(
            `Generated an admin API token (scope *, kept in ${first.file}):\n  token: ${first.adminToken}\n\n` +
              `Create a subscriber:\n\n${apiCurlExample(first.adminToken, port)}\n\n`,
          );
        }
      }
      await run(['receiver', 'worker', 'api'], load(base), true);
    });

  program
    .command('receiver')
    .description('The webhook receiver only: verifies, dedupes and publishes to the queue (ports: webhooks, management).')
    .action(() => run(['receiver'], load()));

  program
    .command('worker')
    .description('The worker only: consumes the queue, records events and deliveries, delivers, retries, dead-letters (port: management).')
    .action(() => run(['worker'], load()));

  program
    .command('api')
    .description('The subscriber REST API only (ports: api, management). Needs api.tokens and secrets.encryptionKey.')
    .action(() => run(['api'], load()));

  program
    .command('migrate')
    .description('Bring the store schema up to date and exit. Other roles refuse to start on a schema that is behind.')
    .action(async () => {
      const config = load();
      if (!config) return;
      const store = await createStore(config.store);
      try {
        await store.connect();
        const before = await store.schemaStatus();
        const after = await store.migrate();
        io.stdout(before.current === after.current ? `schema is up to date (v${after.current})\n` : `migrated schema v${before.current} → v${after.current}\n`);
      } catch (err) {
        if (!isRouterError(err)) throw err;
        io.stderr(`${err.code}: ${err.message}\n`);
        io.setExitCode(1);
      } finally {
        await store.close();
      }
    });

  /** Runs fn against the configured store; usage errors exit 2, store and schema errors exit 1. */
  const withStore = async (fn: (store: Store, config: Readonly<Config>) => Promise<void>) => {
    const config = load();
    if (!config) return;
    const store = await createStore(config.store);
    try {
      await store.connect();
      const status = await store.schemaStatus();
      if (status.current !== status.latest) {
        throw new RouterError('ROUTER_ERR_SCHEMA_MISMATCH', `store schema is v${status.current}, this release needs v${status.latest}: run \`webhook-router migrate\``);
      }
      await fn(store, config);
    } catch (err) {
      if (err instanceof DlqUsageError) {
        io.stderr(`${err.message}\n`);
        io.setExitCode(2);
      } else if (isRouterError(err)) {
        io.stderr(`${err.code}: ${err.message}\n`);
        io.setExitCode(1);
      } else throw err;
    } finally {
      await store.close();
    }
  };
  const dlqIo = (json?: boolean) => ({
    out: io.stdout,
    progress: io.stderrIsTTY && !json ? progressBar(io.stderr) : undefined,
    now: Date.now,
  });
  const filters = (cmd: Command) =>
    cmd
      .option('--subscriber <id>', 'only dead letters of this subscriber')
      .option('--event <id>', 'only dead letters of this event')
      .option('--reason <reason>', 'max_attempts, endpoint_gone, rejected, ssrf_blocked, poison, subscriber_deleted, …')
      .option('--since <time>', 'dead since this time: ISO 8601 or a duration ago (2h, 7d)')
      .option('--until <time>', 'dead before this time: ISO 8601 or a duration ago')
      .option('--limit <n>', 'at most this many')
      .option('--json', 'machine-readable output');

  const dlq = program.command('dlq').description('Dead letters: deliveries that finally failed, and poison queue messages.');
  filters(dlq.command('list').description('List dead letters, oldest first.')).action((o: SelectOptions & { json?: boolean }) =>
    withStore((store) => dlqList(store, o, dlqIo(o.json))),
  );
  dlq
    .command('show <id>')
    .description('Show one dead letter with its delivery and every attempt.')
    .action((id: string) =>
      withStore(async (store) => {
        if (!(await dlqShow(store, id, dlqIo(true)))) {
          io.stderr(`no dead letter ${id}\n`);
          io.setExitCode(1);
        }
      }),
    );
  filters(dlq.command('replay').description('Deliver again: a new attempt cycle with the same webhook-id.'))
    .option('--dry-run', 'show what would be replayed, change nothing')
    .option('--rate <n/s>', 'replays per second (e.g. 50 or 50/s)')
    .option('--to-subscriber <id>', 'deliver the events to this subscriber instead (a new delivery id)')
    .action((o: SelectOptions & { json?: boolean; dryRun?: boolean; rate?: string; toSubscriber?: string }) =>
      withStore(async (store) => {
        await dlqReplay(store, o, dlqIo(o.json));
      }),
    );
  filters(dlq.command('purge').description('Delete dead letters for good (needs a filter or --all).'))
    .option('--all', 'purge every dead letter')
    .action((o: SelectOptions & { json?: boolean; all?: boolean }) =>
      withStore(async (store) => {
        await dlqPurge(store, o, dlqIo(o.json));
      }),
    );

  program
    .command('secrets')
    .description('Secrets at rest.')
    .command('reencrypt')
    .description(
      'Rewrite every subscriber secret under secrets.encryptionKey, after a key rotation (the old key in ' +
        'secrets.previousKeys); the old key can be removed afterwards.',
    )
    .action(() =>
      withStore(async (store, config) => {
        if (config.secrets.encryptionKey === undefined) throw new RouterError('ROUTER_ERR_CONFIG_INVALID', 'secrets.encryptionKey is not configured');
        const rewritten = await reencryptAll(withSecretEncryption(store, createKeyring(config.secrets)));
        io.stdout(`re-encrypted the secrets of ${rewritten} subscriber(s)\n`);
      }),
    );

  const configCmd = program.command('config').description('Validate or show the configuration.');
  configCmd
    .command('check')
    .description('Validate the configuration (file + environment); print every problem; exit 1 if there is any.')
    .action(() => {
      if (load()) io.stdout('configuration is valid\n');
    });
  configCmd
    .command('print')
    .description('Print the effective configuration (defaults filled in) as YAML, with secrets redacted.')
    .action(() => {
      const config = load();
      if (config) io.stdout(stringify(redactConfig(config)));
    });

  return program;
}
