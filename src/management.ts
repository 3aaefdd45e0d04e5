/**
 * The management listener: `/livez` (the event loop answers; never checks dependencies, so a broker outage does not
 * make Kubernetes restart every pod), `/readyz` (each dependency check passes and the process is not draining) and
 * `/metrics`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Metrics } from './metrics.ts';

export interface ReadinessCheck {
  readonly name: string;
  check(): Promise<void>;
}

export interface ManagementDeps {
  readonly metrics: Metrics;
  readonly checks: readonly ReadinessCheck[];
  readonly draining: () => boolean;
  /** Each check must answer within this, or it counts as failed. */
  readonly checkTimeoutMs: number;
}

export function createManagementHandler(deps: ManagementDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const send = (res: ServerResponse, status: number, type: string, body: string) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    res.end(body);
  };

  async function readiness(): Promise<{ ready: boolean; checks: Record<string, string> }> {
    const checks: Record<string, string> = {};
    if (deps.draining()) return { ready: false, checks: { shutdown: 'draining' } };
    await Promise.all(
      deps.checks.map(async (c) => {
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            c.check(),
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`no answer within ${deps.checkTimeoutMs} ms`)), deps.checkTimeoutMs);
            }),
          ]);
          checks[c.name] = 'ok';
        } catch (err) {
          checks[c.name] = err instanceof Error ? err.message : 'failed';
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    return { ready: Object.values(checks).every((v) => v === 'ok'), checks };
  }

  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/livez':
        return send(res, 200, 'text/plain', 'ok\n');
      case '/readyz':
        readiness().then(
          (r) => send(res, r.ready ? 200 : 503, 'application/json', JSON.stringify({ status: r.ready ? 'ready' : 'not ready', checks: r.checks })),
          () => send(res, 503, 'application/json', '{"status":"not ready"}'),
        );
        return;
      case '/metrics':
        deps.metrics.registry.metrics().then(
          (text) => send(res, 200, deps.metrics.registry.contentType, text),
          () => send(res, 500, 'text/plain', 'metrics unavailable\n'),
        );
        return;
      default:
        return send(res, 404, 'text/plain', 'not found\n');
    }
  };
}
