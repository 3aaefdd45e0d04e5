/**
 * Bearer-token authentication and scopes (design §3 `api.tokens`).
 *
 * Tokens are compared in constant time: the presented token is hashed with SHA-256 and the digest compared with
 * every configured digest through `timingSafeEqual`, all of them, with no early exit. Hashing first makes every
 * comparison 32 bytes long, so neither the length nor the position of a match leaks. A token configured as
 * `tokenSha256` is never held in memory at all.
 *
 * 401 (ROUTER_ERR_UNAUTHORIZED) when the header is missing, malformed or matches nothing; 403 (ROUTER_ERR_FORBIDDEN)
 * when the token lacks the route's scope. The answer never says which of several tokens came close.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiScope, ApiTokenConfig } from '../../config/schema.ts';
import { ApiError } from './errors.ts';

/** A route's required scope; `*` in a token grants all of them. */
export type Scope = Exclude<ApiScope, '*'>;

export interface Principal {
  /** The token's configured name: logged as who made the request. */
  readonly name: string;
  readonly scopes: ReadonlySet<ApiScope>;
}

export const REALM = 'webhook-router';
const BEARER = /^Bearer +([\x21-\x7e]{1,1024}) *$/i;

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest();

export interface Authenticator {
  /** The principal of a valid `Authorization` header; throws a 401 ApiError otherwise. */
  authenticate(header: string | undefined): Principal;
  /** Throws a 403 ApiError unless the principal holds `scope`. */
  authorize(principal: Principal, scope: Scope): void;
}

export function createAuthenticator(tokens: readonly ApiTokenConfig[]): Authenticator {
  const entries = tokens.map((t) => ({
    principal: { name: t.name, scopes: new Set(t.scopes) } satisfies Principal,
    digest: t.token !== undefined ? sha256(t.token) : Buffer.from(t.tokenSha256 as string, 'hex'),
  }));
  const unauthorized = (message: string) =>
    new ApiError('ROUTER_ERR_UNAUTHORIZED', message, { headers: { 'www-authenticate': `Bearer realm="${REALM}"` } });

  return {
    authenticate(header) {
      const m = header === undefined ? null : BEARER.exec(header);
      if (!m) throw unauthorized('an Authorization: Bearer <token> header is required');
      const digest = sha256(m[1] as string);
      let found: Principal | undefined;
      for (const e of entries) {
        // Every entry is compared; the first match wins.
        if (timingSafeEqual(digest, e.digest) && found === undefined) found = e.principal;
      }
      if (!found) throw unauthorized('the token is not valid');
      return found;
    },
    authorize(principal, scope) {
      if (principal.scopes.has('*') || principal.scopes.has(scope)) return;
      throw new ApiError('ROUTER_ERR_FORBIDDEN', `this token lacks the ${scope} scope`, {
        headers: { 'www-authenticate': `Bearer realm="${REALM}", error="insufficient_scope", scope="${scope}"` },
      });
    },
  };
}
