/**
 * GET /openapi.json and the routes agree: the document lists exactly the operations express serves, each with the
 * scope the server enforces, the parameters and body schemas the server validates with, and references that resolve.
 * (Every other API test runs with `checkResponses`, so each answer also matches its documented response schema.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import type { Scope } from '../../src/api/auth.ts';
import { type StoreHarness, type TestApi, startApi, storeHarnesses, tokens } from './harness.ts';

type Json = Record<string, unknown>;

const tokenFor: Record<Scope, string> = {
  'subscribers:read': tokens.subscribersRead,
  'subscribers:write': tokens.subscribersWrite,
  'deliveries:read': tokens.deliveriesRead,
  'dlq:write': tokens.dlqWrite,
};

const METHODS = ['get', 'post', 'patch', 'delete', 'put'];

for (const harness of storeHarnesses) suite(harness);

function suite(harness: StoreHarness): void {
  describe(`OpenAPI document (${harness.name})`, () => {
    let t: TestApi;
    let doc: Json;
    before(async () => {
      t = await startApi(harness);
      const r = await t.call('GET', '/openapi.json', { token: null });
      assert.equal(r.status, 200);
      doc = r.json;
    });
    after(() => t.close());

    const operations = () =>
      Object.entries(doc.paths as Record<string, Json>).flatMap(([path, item]) =>
        Object.entries(item).map(([method, op]) => ({ path, method, op: op as Json })),
      );

    test('is OpenAPI 3.1, served without a token, and lists exactly the routes the server registers', () => {
      assert.equal(doc.openapi, '3.1.0');
      const documented = operations()
        .filter((o) => o.path !== '/openapi.json')
        .map((o) => `${o.method.toUpperCase()} ${o.path}`)
        .sort();
      const served = t.api.routes.map((r) => `${r.method.toUpperCase()} ${r.path}`).sort();
      assert.deepEqual(documented, served);
      // Design §5's table, so a route dropped from both would still be noticed.
      assert.deepEqual(served, [
        'DELETE /v1/dlq/{id}',
        'DELETE /v1/subscribers/{id}',
        'GET /v1/deliveries',
        'GET /v1/deliveries/{id}',
        'GET /v1/dlq',
        'GET /v1/events/{id}',
        'GET /v1/subscribers',
        'GET /v1/subscribers/{id}',
        'PATCH /v1/subscribers/{id}',
        'POST /v1/deliveries/{id}/retry',
        'POST /v1/dlq/replay',
        'POST /v1/subscribers',
        'POST /v1/subscribers/{id}/rotate-secret',
        'POST /v1/subscribers/{id}/test',
      ]);
    });

    test('every documented operation is served, behind the documented scope', async () => {
      for (const { path, method, op } of operations()) {
        if (path === '/openapi.json') continue;
        const url = path.replace(/\{[^}]+\}/g, 'probe_0');
        const scope = op['x-required-scope'] as Scope;
        assert.ok(scope in tokenFor, `${method} ${path} documents its scope`);
        const anonymous = await t.call(method, url, { token: null });
        assert.equal(anonymous.status, 401, `${method} ${path} without a token: ${anonymous.text}`);
        const other = Object.entries(tokenFor).find(([s]) => s !== scope)?.[1] as string;
        assert.equal((await t.call(method, url, { token: other })).status, 403, `${method} ${path} with another scope`);
        const allowed = await t.call(method, url, { token: tokenFor[scope] });
        assert.ok(![401, 403, 405].includes(allowed.status), `${method} ${path} with ${scope}: ${allowed.text}`);
        assert.notEqual(allowed.json?.error?.message, 'no such route', `${method} ${path} is routed`);
        assert.ok(allowed.status < 500, `${method} ${path}: ${allowed.text}`);
      }
    });

    test('undocumented methods on documented paths are 405 with an Allow header listing the documented ones', async () => {
      for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
        if (path === '/openapi.json') continue;
        const url = path.replace(/\{[^}]+\}/g, 'probe_0');
        const documented = Object.keys(item).map((m) => m.toUpperCase());
        for (const method of METHODS.filter((m) => !(m in item))) {
          // DELETE /v1/dlq/replay is DELETE /v1/dlq/{id} with id "replay": a real route, not a 405.
          const shadowed = Object.entries(doc.paths as Record<string, Json>).some(
            ([other, otherItem]) => other !== path && method in otherItem && new RegExp(`^${other.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(url),
          );
          if (shadowed) continue;
          const r = await t.call(method, url);
          assert.equal(r.status, 405, `${method} ${path}`);
          assert.deepEqual(r.headers.allow?.split(', ').filter((m) => m !== 'HEAD').sort(), documented.sort());
        }
      }
      assert.equal((await t.call('GET', '/v1/unknown')).status, 404);
    });

    test('parameters and request bodies are the zod schemas the server validates with', () => {
      const components = (doc.components as { schemas: Record<string, Json> }).schemas;
      const resolve = (s: Json): Json => (typeof s.$ref === 'string' ? (components[s.$ref.split('/').at(-1) as string] as Json) : s);
      const strip = (s: Json) => {
        const { $schema: _s, ...rest } = s;
        return rest;
      };
      for (const route of t.api.routes) {
        const op = (doc.paths as Record<string, Record<string, Json>>)[route.path]?.[route.method] as Json;
        const params = (op.parameters ?? []) as { name: string; in: string; required: boolean }[];
        const expect = (schema: z.ZodType | undefined) => (schema instanceof z.ZodObject ? Object.keys(schema.shape).sort() : []);
        assert.deepEqual(params.filter((p) => p.in === 'path').map((p) => p.name).sort(), expect(route.params), route.operationId);
        assert.deepEqual(params.filter((p) => p.in === 'query').map((p) => p.name).sort(), expect(route.query), route.operationId);
        assert.ok(params.filter((p) => p.in === 'path').every((p) => p.required), `${route.operationId}: path parameters are required`);
        const body = (op.requestBody as { content: { 'application/json': { schema: Json } } } | undefined)?.content['application/json'].schema;
        if (!route.body) {
          assert.equal(body, undefined, route.operationId);
          continue;
        }
        assert.ok(body, route.operationId);
        assert.deepEqual(resolve(body), strip(z.toJSONSchema(route.body, { io: 'input', unrepresentable: 'any' }) as Json), route.operationId);
      }
      // The transport config is one option per registered provider, not a free-form object.
      const create = components.SubscriberCreate as { properties: { transport: { oneOf: Json[] } } };
      assert.ok(create.properties.transport.oneOf.some((o) => (o.properties as Json).kind && ((o.properties as Record<string, Json>).kind?.const === 'https')));
    });

    test('every $ref resolves, and every operation documents its error answers with the shared Error schema', () => {
      const text = JSON.stringify(doc);
      const components = (doc.components as { schemas: Record<string, Json> }).schemas;
      for (const [, ref] of text.matchAll(/"\$ref":"([^"]+)"/g)) {
        assert.match(ref as string, /^#\/components\/schemas\//);
        assert.ok((ref as string).split('/').at(-1) as string in components, `${ref} resolves`);
      }
      assert.ok(!text.includes('$defs'), 'no local $defs whose references would break once inlined');
      for (const { path, op } of operations()) {
        if (path === '/openapi.json') continue;
        const responses = op.responses as Record<string, Json>;
        for (const status of ['401', '403']) assert.ok(responses[status], `${path} documents ${status}`);
        assert.ok(Object.keys(responses).some((s) => s.startsWith('2')), `${path} documents a success`);
      }
    });
  });
}
