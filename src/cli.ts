/**
 * The `webhook-router` command line. Builds the commander program around injected I/O so tests can run commands
 * in-process; src/main.ts supplies the real process, signals and exit codes.
 */
import { Command } from 'commander';
import { stringify } from 'yaml';
import { curlExample, firstRunLayer, wantsFirstRun } from '../config/first-run.ts';
import { loadConfig } from '../config/load.ts';
import { redactConfig } from '../config/redact.ts';
import type { Config } from '../config/schema.ts';
import { createStore } from '../adapters/store/index.ts';
import { type App, buildApp, type Role } from './app.ts';
import { isRouterError } from './errors.ts';
import { createLogger, type Logger } from './logger.ts';

export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile: (path: string) => string;
  /** Where `serve` keeps first-run secrets and the embedded databases (./data). */
  readonly dataDir: string;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
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
      app = buildApp(config, { logger, roles, migrate });
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
      'Everything in one process on the embedded defaults (SQLite queue under ./data). With no configuration at all, ' +
        'the first run generates a webhook secret for a "github" source in ./data/first-run.json and prints it once. ' +
        'Runs the receiver and the worker, and brings the store schema up to date first.',
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
      }
      await run(['receiver', 'worker'], load(base), true);
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
    .command('migrate')
    .description('Bring the store schema up to date and exit. Other roles refuse to start on a schema that is behind.')
    .action(async () => {
      const config = load();
      if (!config) return;
      const store = createStore(config.store);
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
