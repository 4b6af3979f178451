import type { FastifyPluginAsync } from 'fastify';
import { describe, expect, it } from 'vitest';
import { cleanupAfterEach, expectProblem, startTestApp } from '../test/auth-helpers.ts';
import { uploadsPlugin } from './uploads.ts';

const cleanups = cleanupAfterEach();

/**
 * An upload route as a module would write one: in its own plugin, which registers the uploads plugin for its
 * routes alone. It reads every file to the end and answers what it received.
 */
const uploadModule: FastifyPluginAsync = async (api) => {
  await api.register(async (module) => {
    await module.register(uploadsPlugin, { limits: api.config.requestLimits.uploads });
    module.post('/test-uploads', async (request) => {
      const received: { name: string; bytes: number }[] = [];
      for await (const part of request.parts()) {
        if (part.type === 'file')
          received.push({ name: part.filename, bytes: (await part.toBuffer()).length });
      }
      return { received };
    });
  });
  api.post('/test-json', async () => ({ ok: true }));
};

const BOUNDARY = 'plinth-test-boundary';

/** A multipart/form-data body with one part per file (`name` → content) and per field. */
function form(files: Record<string, string>, fields: Record<string, string> = {}): string {
  const parts = [
    ...Object.entries(fields).map(
      ([name, value]) =>
        `--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`,
    ),
    ...Object.entries(files).map(
      ([name, content]) =>
        `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n${content}\r\n`,
    ),
  ];
  return `${parts.join('')}--${BOUNDARY}--\r\n`;
}

const upload = (app: Awaited<ReturnType<typeof start>>, url: string, body: string) =>
  app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` },
    payload: body,
  });

const start = () =>
  startTestApp('sqlite', cleanups, {
    modules: [uploadModule],
    env: { UPLOAD_MAX_FILE_BYTES: '1000', UPLOAD_MAX_FILES: '2', UPLOAD_MAX_FIELDS: '1' },
  });

describe('uploads', () => {
  it('accepts files within the limits', async () => {
    const app = await start();
    const res = await upload(app, '/api/v1/test-uploads', form({ 'a.bin': 'x'.repeat(1000), 'b.bin': 'y' }));
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({
      received: [
        { name: 'a.bin', bytes: 1000 },
        { name: 'b.bin', bytes: 1 },
      ],
    });
  });

  it('refuses a file over UPLOAD_MAX_FILE_BYTES with 413, rather than truncating it', async () => {
    const app = await start();
    const res = await upload(app, '/api/v1/test-uploads', form({ 'big.bin': 'x'.repeat(1001) }));
    expectProblem(res, 413, 'PAYLOAD_TOO_LARGE');
  });

  it('refuses more files than UPLOAD_MAX_FILES with 413', async () => {
    const app = await start();
    expectProblem(
      await upload(app, '/api/v1/test-uploads', form({ '1.bin': 'a', '2.bin': 'b', '3.bin': 'c' })),
      413,
      'PAYLOAD_TOO_LARGE',
    );
  });

  it('refuses more fields than UPLOAD_MAX_FIELDS with 413', async () => {
    const app = await start();
    expectProblem(
      await upload(app, '/api/v1/test-uploads', form({ '1.bin': 'a' }, { one: '1', two: '2' })),
      413,
      'PAYLOAD_TOO_LARGE',
    );
  });

  it('leaves every other route refusing multipart bodies with 415', async () => {
    const app = await start();
    expectProblem(
      await upload(app, '/api/v1/test-json', form({ 'a.bin': 'a' })),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
    );
  });

  it('refuses configuration outside the bounds, naming the variable', async () => {
    await expect(startTestApp('sqlite', cleanups, { env: { UPLOAD_MAX_FILES: '0' } })).rejects.toThrow(
      /UPLOAD_MAX_FILES: must be at least 1/,
    );
  });
});
