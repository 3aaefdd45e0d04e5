/**
 * The OpenAPI 3.1 document, generated from the route table and the zod schemas that validate requests (zod 4's
 * `z.toJSONSchema`, JSON Schema 2020-12 as OpenAPI 3.1 uses). Request schemas are rendered as their input (defaults
 * optional), responses as their output. Named schemas (schemas.ts `requestComponents`, `responseComponents`) become
 * `#/components/schemas/<name>`; the rest is inlined.
 *
 * Error answers are derived from what a route validates: 401/403 for every route, 404 with path parameters, 400 with
 * a query, 400/413/415/422 with a body, 409/412 where the route can answer them.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { REALM } from './auth.ts';
import type { Route } from './route.ts';
import { requestComponents, responseComponents } from './schemas.ts';

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

type Json = Record<string, unknown>;

const ERROR_REF = { $ref: '#/components/schemas/Error' };
const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: ERROR_REF } } });

/** Named schemas rendered once, with references between them. */
function renderComponents(named: Record<string, z.ZodType>, io: 'input' | 'output'): Record<string, Json> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(named)) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, { io, unrepresentable: 'any', uri: (id) => `#/components/schemas/${id}` }) as {
    schemas: Record<string, Json>;
  };
  for (const s of Object.values(schemas)) {
    delete s.$schema;
    delete s.$id;
  }
  return schemas;
}

/** A reference when the schema is named, else the schema inlined. */
function schemaRef(schema: z.ZodType, named: Record<string, z.ZodType>, io: 'input' | 'output'): Json {
  const name = Object.entries(named).find(([, s]) => s === schema)?.[0];
  if (name) return { $ref: `#/components/schemas/${name}` };
  const json = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Json;
  delete json.$schema;
  return json;
}

function parameters(route: Route): Json[] {
  const out: Json[] = [];
  const add = (schema: z.ZodType | undefined, where: 'path' | 'query') => {
    if (!(schema instanceof z.ZodObject)) return;
    for (const [name, field] of Object.entries(schema.shape as Record<string, z.ZodType>)) {
      const json = z.toJSONSchema(field, { io: 'input', unrepresentable: 'any' }) as Json;
      delete json.$schema;
      const description = typeof json.description === 'string' ? json.description : undefined;
      delete json.description;
      out.push({ name, in: where, required: !field.safeParse(undefined).success, ...(description ? { description } : {}), schema: json });
    }
  };
  add(route.params, 'path');
  add(route.query, 'query');
  for (const [name, description] of Object.entries(route.requestHeaders ?? {})) {
    out.push({ name, in: 'header', required: false, description, schema: { type: 'string' } });
  }
  return out;
}

function operation(route: Route): Json {
  const responses: Json = {};
  for (const [status, spec] of Object.entries(route.responses)) {
    responses[status] = {
      description: spec.description,
      ...(spec.headers
        ? { headers: Object.fromEntries(Object.entries(spec.headers).map(([h, d]) => [h, { description: d, schema: { type: 'string' } }])) }
        : {}),
      ...(spec.schema ? { content: { 'application/json': { schema: schemaRef(spec.schema, responseComponents, 'output') } } } : {}),
    };
  }
  if (route.query) responses['400'] = errorResponse('A query parameter is invalid (ROUTER_ERR_BAD_REQUEST), or the body is not valid JSON');
  else if (route.body) responses['400'] = errorResponse('The body is not valid JSON (ROUTER_ERR_BODY_INVALID)');
  responses['401'] = errorResponse('No valid bearer token (ROUTER_ERR_UNAUTHORIZED)');
  responses['403'] = errorResponse(`The token lacks the ${route.scope} scope (ROUTER_ERR_FORBIDDEN)`);
  if (route.params) responses['404'] = errorResponse('No such resource (ROUTER_ERR_NOT_FOUND)');
  responses['406'] = errorResponse('Accept rules out application/json (ROUTER_ERR_NOT_ACCEPTABLE)');
  if (route.method === 'patch' || route.method === 'post') responses['409'] = errorResponse('Conflicts with the current state (ROUTER_ERR_CONFLICT)');
  if (route.requestHeaders?.['If-Match']) responses['412'] = errorResponse('If-Match names another version (ROUTER_ERR_PRECONDITION_FAILED)');
  if (route.body) {
    responses['413'] = errorResponse('The body exceeds api.maxBodyBytes (ROUTER_ERR_BODY_TOO_LARGE)');
    responses['415'] = errorResponse('The body is not application/json (ROUTER_ERR_UNSUPPORTED_MEDIA_TYPE)');
    responses['422'] = errorResponse('The body failed validation; details lists each problem (ROUTER_ERR_VALIDATION)');
  }
  return {
    operationId: route.operationId,
    summary: route.summary,
    ...(route.description ? { description: route.description } : {}),
    security: [{ bearer: [] }],
    'x-required-scope': route.scope,
    ...(route.params || route.query || route.requestHeaders ? { parameters: parameters(route) } : {}),
    ...(route.body
      ? {
          requestBody: {
            required: !route.bodyOptional,
            content: { 'application/json': { schema: schemaRef(route.body, requestComponents, 'input') } },
          },
        }
      : {}),
    responses,
  };
}

export function buildOpenApi(routes: readonly Route[]): Json {
  const paths: Record<string, Json> = {};
  for (const route of routes) {
    paths[route.path] ??= {};
    (paths[route.path] as Json)[route.method] = operation(route);
  }
  paths['/openapi.json'] = {
    get: {
      operationId: 'getOpenApi',
      summary: 'This document',
      security: [],
      responses: { 200: { description: 'The OpenAPI 3.1 document', content: { 'application/json': { schema: { type: 'object' } } } } },
    },
  };
  return {
    openapi: '3.1.0',
    info: {
      title: 'webhook-router API',
      version,
      description:
        'Subscribers, deliveries, attempts, dead letters and events. Bearer tokens from api.tokens with scopes ' +
        '(subscribers:read, subscribers:write, deliveries:read, dlq:write, *). Errors: { "error": { "code", "message", ' +
        '"details", "requestId" } }. Lists: ?limit=&cursor= → { "items", "nextCursor" }.',
    },
    paths,
    components: {
      schemas: { ...renderComponents(requestComponents, 'input'), ...renderComponents(responseComponents, 'output') },
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: `Realm ${REALM}: a token from api.tokens.` } },
    },
  };
}
