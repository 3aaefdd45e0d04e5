/**
 * The one logger factory. Components receive a `Logger` (pino's shape) and make children per unit of work; nothing
 * else in the code base writes to stdout except the CLI's user-facing output.
 *
 * Redaction is by key name: signatures, tokens, authorization and every configuration secret key, wherever they sit
 * in a logged object (`*.key` covers one level of nesting, explicit paths cover request headers).
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';
import { secretKeys } from '../config/schema.ts';

export type Logger = Pick<PinoLogger, 'info' | 'warn' | 'error' | 'debug' | 'trace' | 'fatal' | 'child' | 'level' | 'isLevelEnabled'>;

const redactedHeaders = ['x-hub-signature-256', 'x-hub-signature', 'x-gitlab-token', 'webhook-signature', 'authorization', 'cookie'];

export const redactPaths = [
  ...redactedHeaders.flatMap((h) => [`req.headers["${h}"]`, `headers["${h}"]`]),
  ...[...secretKeys].flatMap((k) => [k, `*.${k}`]),
];

export function createLogger(options: { level: string }, destination?: DestinationStream): Logger {
  return pino(
    {
      level: options.level,
      base: { service: 'webhook-router' },
      redact: { paths: redactPaths, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

export const silentLogger: Logger = pino({ level: 'silent' });
