/**
 * Subscriber filters (design §5), compiled once per subscriber version and evaluated per event.
 *
 * - sources / events / repositories / branches: lists of globs where `*` matches any run of characters; an empty
 *   list means "any". Events match `event` (any action) or `event.action`. Repositories may exclude with a leading
 *   `!`. Branches match the ref without `refs/heads/`; a tag ref never matches a branch filter.
 * - GitHub `ping` reaches only subscribers that list `ping` explicitly: a wildcard or an empty list does not ask for it.
 * - `match`: Mongo-style operators over `payload.*` and the routing fields. The payload is parsed only when a filter
 *   that survived the cheap checks actually refers to it.
 */
import { z } from 'zod';
import type { RoutingFields } from '../envelope.ts';

const Scalar = z.union([z.string().max(1_024), z.number(), z.boolean(), z.null()]);
type Scalar = z.infer<typeof Scalar>;

const Condition = z
  .object({
    $eq: Scalar.optional(),
    $ne: Scalar.optional(),
    $in: z.array(Scalar).max(100).optional(),
    $nin: z.array(Scalar).max(100).optional(),
    $gt: z.union([z.number(), z.string()]).optional(),
    $gte: z.union([z.number(), z.string()]).optional(),
    $lt: z.union([z.number(), z.string()]).optional(),
    $lte: z.union([z.number(), z.string()]).optional(),
    $exists: z.boolean().optional(),
    $startsWith: z.string().max(1_024).optional(),
    $endsWith: z.string().max(1_024).optional(),
  })
  .strict()
  .refine((c) => Object.keys(c).length > 0, 'a condition needs at least one operator');
type Condition = z.infer<typeof Condition>;

export const routingPaths = ['source', 'event', 'action', 'repository', 'organization', 'installation', 'ref', 'sender', 'senderType'] as const;
const PATH = new RegExp(`^(payload(\\.[A-Za-z0-9_-]{1,128}){1,16}|${routingPaths.join('|')})$`);

export type MatchExpr = { $and: MatchExpr[] } | { $or: MatchExpr[] } | { $not: MatchExpr } | { [path: string]: Condition | Scalar };

const MAX_DEPTH = 8;

const Expr: z.ZodType<MatchExpr> = z.lazy(() =>
  z.union([
    z.object({ $and: z.array(Expr).min(1).max(50) }).strict(),
    z.object({ $or: z.array(Expr).min(1).max(50) }).strict(),
    z.object({ $not: Expr }).strict(),
    z
      .record(z.string().regex(PATH, 'a path is payload.<field>… or a routing field'), z.union([Condition, Scalar]))
      .refine((r) => Object.keys(r).length >= 1 && Object.keys(r).length <= 50, 'between 1 and 50 paths'),
  ]),
) as z.ZodType<MatchExpr>;

/** Depth is checked before the recursive schema runs, so hostile nesting cannot exhaust the stack. */
export const MatchExpression = z
  .unknown()
  .refine((v) => depth(v, 0) <= MAX_DEPTH, `match expressions nest at most ${MAX_DEPTH} levels`)
  .pipe(Expr);

function depth(v: unknown, d: number): number {
  if (d > MAX_DEPTH || typeof v !== 'object' || v === null) return d;
  let max = d;
  for (const child of Object.values(v)) max = Math.max(max, depth(child, d + 1));
  return max;
}

export interface MatchInput {
  readonly source: string;
  readonly routing: RoutingFields;
  /** Parsed on first use and shared by every subscriber matched against this event. */
  readonly payload: () => unknown;
}

export interface CompiledFilter {
  matches(input: MatchInput): boolean;
}

export interface FilterSpec {
  readonly sources: readonly string[];
  readonly events: readonly string[];
  readonly repositories: readonly string[];
  readonly branches: readonly string[];
  readonly match?: MatchExpr | undefined;
}

export function compileFilter(filter: FilterSpec): CompiledFilter {
  const sources = globs(filter.sources);
  const events = globs(filter.events);
  const asksForPing = filter.events.some((e) => e === 'ping' || e.startsWith('ping.'));
  const includeRepos = globs(filter.repositories.filter((r) => !r.startsWith('!')));
  const excludeRepos = globs(filter.repositories.filter((r) => r.startsWith('!')).map((r) => r.slice(1)));
  const branches = globs(filter.branches);
  const expr = filter.match;

  return {
    matches(input) {
      const { routing } = input;
      if (sources && !sources.some((g) => g.test(input.source))) return false;
      if (routing.event === 'ping' && !asksForPing) return false;
      if (events) {
        const full = routing.action ? `${routing.event}.${routing.action}` : routing.event;
        if (!events.some((g) => g.test(routing.event) || g.test(full))) return false;
      }
      if (includeRepos && !(routing.repository !== undefined && includeRepos.some((g) => g.test(routing.repository as string)))) return false;
      if (excludeRepos && routing.repository !== undefined && excludeRepos.some((g) => g.test(routing.repository as string))) return false;
      if (branches) {
        const branch = branchOf(routing.ref);
        if (branch === undefined || !branches.some((g) => g.test(branch))) return false;
      }
      return expr === undefined || evaluate(expr, input);
    },
  };
}

function branchOf(ref: string | undefined): string | undefined {
  if (ref === undefined || ref.startsWith('refs/tags/')) return undefined;
  return ref.startsWith('refs/heads/') ? ref.slice('refs/heads/'.length) : ref;
}

function globs(patterns: readonly string[]): RegExp[] | undefined {
  if (patterns.length === 0) return undefined;
  return patterns.map((p) => new RegExp(`^${p.split('*').map(escape).join('.*')}$`, 's'));
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export function evaluate(expr: MatchExpr, input: MatchInput): boolean {
  if ('$and' in expr && Array.isArray(expr.$and)) return expr.$and.every((e) => evaluate(e, input));
  if ('$or' in expr && Array.isArray(expr.$or)) return expr.$or.some((e) => evaluate(e, input));
  if ('$not' in expr && typeof expr.$not === 'object' && expr.$not !== null && !Array.isArray(expr.$not)) {
    return !evaluate(expr.$not as MatchExpr, input);
  }
  for (const [path, test] of Object.entries(expr as Record<string, Condition | Scalar>)) {
    const value = resolve(path, input);
    const ok = isCondition(test) ? check(value, test) : value === test;
    if (!ok) return false;
  }
  return true;
}

const isCondition = (v: Condition | Scalar): v is Condition => typeof v === 'object' && v !== null;

function resolve(path: string, input: MatchInput): unknown {
  if (!path.startsWith('payload.')) return path === 'source' ? input.source : input.routing[path as keyof RoutingFields];
  let node: unknown = input.payload();
  for (const key of path.slice('payload.'.length).split('.')) {
    // Own data only: no prototype members, and arrays by index only (no `length`).
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, key)) return undefined;
    if (Array.isArray(node) && !/^\d+$/.test(key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

function check(value: unknown, c: Condition): boolean {
  if (c.$exists !== undefined && (value !== undefined) !== c.$exists) return false;
  if ('$eq' in c && value !== c.$eq) return false;
  if ('$ne' in c && value === c.$ne) return false;
  if (c.$in && !c.$in.some((v) => v === value)) return false;
  if (c.$nin?.some((v) => v === value)) return false;
  if (c.$gt !== undefined && !compare(value, c.$gt, (d) => d > 0)) return false;
  if (c.$gte !== undefined && !compare(value, c.$gte, (d) => d >= 0)) return false;
  if (c.$lt !== undefined && !compare(value, c.$lt, (d) => d < 0)) return false;
  if (c.$lte !== undefined && !compare(value, c.$lte, (d) => d <= 0)) return false;
  if (c.$startsWith !== undefined && !(typeof value === 'string' && value.startsWith(c.$startsWith))) return false;
  if (c.$endsWith !== undefined && !(typeof value === 'string' && value.endsWith(c.$endsWith))) return false;
  return true;
}

/** Orders numbers with numbers and strings with strings; mixed types never compare (as in MongoDB). */
function compare(value: unknown, bound: number | string, ok: (diff: number) => boolean): boolean {
  if (typeof value === 'number' && typeof bound === 'number') return ok(value - bound);
  if (typeof value === 'string' && typeof bound === 'string') return ok(value < bound ? -1 : value > bound ? 1 : 0);
  return false;
}
