/**
 * Routing fields, read once at the receiver so that workers match subscribers without re-parsing large bodies.
 * Payloads are untrusted: every read is type-checked and an absent or odd field is simply left out.
 */
import type { RoutingFields } from '../envelope.ts';

type Obj = Record<string, unknown>;

const obj = (v: unknown): Obj | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 && v.length <= 1024 ? v : undefined);
const id = (v: unknown): string | undefined => (typeof v === 'number' && Number.isSafeInteger(v) ? String(v) : str(v));

/** Drops undefined values so the envelope stays small and `exactOptional`-style comparisons hold. */
function compact(fields: RoutingFields): RoutingFields {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = v;
  return out as RoutingFields;
}

export function extractGithubRouting(payload: unknown, event: string): RoutingFields {
  const p = obj(payload) ?? {};
  const repository = obj(p.repository);
  const owner = obj(repository?.owner);
  const pullRequest = obj(p.pull_request);
  const sender = obj(p.sender);
  return compact({
    event,
    action: str(p.action),
    repository: str(repository?.full_name),
    organization: str(obj(p.organization)?.login) ?? (owner?.type === 'Organization' ? str(owner.login) : undefined),
    installation: id(obj(p.installation)?.id),
    // push and create/delete carry `ref`; pull requests target their base branch; workflow runs their head branch.
    ref: str(p.ref) ?? str(obj(pullRequest?.base)?.ref) ?? str(obj(p.workflow_run)?.head_branch) ?? str(obj(p.check_suite)?.head_branch),
    sender: str(sender?.login),
    senderType: str(sender?.type),
  });
}

export function extractGitlabRouting(payload: unknown, headerEvent: string): RoutingFields {
  const p = obj(payload) ?? {};
  const project = obj(p.project);
  const attributes = obj(p.object_attributes);
  const path = str(project?.path_with_namespace);
  const user = obj(p.user);
  return compact({
    // object_kind is the machine name (push, merge_request, pipeline…); the header is a phrase ("Push Hook").
    event: str(p.object_kind) ?? str(p.event_name) ?? headerEvent.replace(/ Hook$/, '').toLowerCase().replaceAll(' ', '_'),
    action: str(attributes?.action),
    repository: path,
    organization: path?.includes('/') ? path.slice(0, path.indexOf('/')) : undefined, // top-level group
    ref: str(p.ref) ?? str(attributes?.target_branch) ?? str(attributes?.ref),
    sender: str(p.user_username) ?? str(user?.username),
  });
}

export function extractStandardRouting(payload: unknown): RoutingFields {
  const p = obj(payload) ?? {};
  // The spec's recommended payload is { type, timestamp, data }; `type` is the event ("invoice.paid").
  const type = str(p.type) ?? 'webhook';
  const dot = type.indexOf('.');
  return compact(dot > 0 ? { event: type.slice(0, dot), action: type.slice(dot + 1) } : { event: type });
}
