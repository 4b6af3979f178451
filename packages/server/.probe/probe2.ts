import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { buildTestApp } from '../src/test/harness.ts';

const mod: FastifyPluginAsyncZod = async (api) => {
  api.get('/null', async () => { throw null; });
  api.get('/str', async () => { throw 'select secret from t'; });
  api.get('/teapot', async () => { throw Object.assign(new Error('nope'), { statusCode: 429 }); });
  api.get('/p/:id', { schema: { params: z.object({ id: z.string() }) } }, async () => ({ ok: 1 }));
  api.post('/obj', { schema: { body: z.object({ a: z.string() }) } }, async () => ({ ok: 1 }));
  api.get('/q', { schema: { querystring: z.object({ a: z.string() }), headers: z.object({ 'x-foo': z.string() }) } }, async () => ({ ok: 1 }));
};
const app = await buildTestApp('sqlite', { modules: [mod as never], env: { BODY_LIMIT_BYTES: '100' } });
const show = async (o: Parameters<typeof app.inject>[0]) => { const r = await app.inject(o); console.log(JSON.stringify(o).slice(0,120), '=>', r.statusCode, r.headers['content-type'], r.headers['x-request-id'], r.headers['content-security-policy'], r.body.slice(0, 300)); };
await show({ method: 'GET', url: '/api/v1/null' });
await show({ method: 'GET', url: '/api/v1/str' });
await show({ method: 'GET', url: '/api/v1/teapot' });
await show({ method: 'GET', url: '/api/v1/p/%E0%A4%A' });
await show({ method: 'GET', url: '/api/v1/p/' + 'a'.repeat(200) });
await show({ method: 'POST', url: '/api/v1/obj', payload: { a: 'x'.repeat(200) } });
await show({ method: 'POST', url: '/api/v1/obj', payload: '"str"', headers: {'content-type': 'application/json'} });
await show({ method: 'POST', url: '/api/v1/obj' });
await show({ method: 'GET', url: '/api/v1/q?a=1' });
await show({ method: 'GET', url: '/docs/static/nonexistent.js' });
await show({ method: 'GET', url: '/health/live', headers: { 'x-request-id': 'ab\r\nx-evil: 1' } });
await app.close();
