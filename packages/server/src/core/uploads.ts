import multipart from '@fastify/multipart';
import { coreErrors } from '@plinth/shared';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { RequestLimitsConfig } from '../config.ts';
import { AppError } from './errors.ts';

/** The largest non-file field of an upload (a caption, a JSON document of metadata), in bytes. */
const MAX_FIELD_BYTES = 64 * 1024;
/** Headers per part: a part needs two or three (disposition, type); more is not an upload. */
const MAX_HEADER_PAIRS = 20;

/**
 * Accepts `multipart/form-data` uploads on the routes of the context it is registered in — a module registers
 * it in the plugin that holds its upload routes, so every other route keeps answering multipart bodies with 415.
 * Limits (`UPLOAD_MAX_FILE_BYTES`, `UPLOAD_MAX_FILES`, `UPLOAD_MAX_FIELDS`) are enforced while the body streams
 * in, before a whole file is ever held: a file over the size limit, one file too many or one field too many
 * ends the request with 413 `PAYLOAD_TOO_LARGE`, a body that is not multipart with 406. Routes read the parts
 * in order with `request.parts()`, which raises a limit's error where it occurs.
 */
async function uploads(
  app: FastifyInstance,
  { limits }: { limits: RequestLimitsConfig['uploads'] },
): Promise<void> {
  await app.register(multipart, {
    // A file over the limit fails the request instead of arriving silently truncated.
    throwFileSizeLimit: true,
    limits: {
      fileSize: limits.maxFileBytes,
      files: limits.maxFiles,
      fields: limits.maxFields,
      parts: limits.maxFiles + limits.maxFields,
      fieldSize: MAX_FIELD_BYTES,
      fieldNameSize: 100,
      headerPairs: MAX_HEADER_PAIRS,
    },
  });
  // When a limit is reached while a file part is still being read (a field over the limit before a file, say),
  // the parser destroys that part's stream, and the route sees the stream's "premature close" instead of the
  // limit. A client that aborts causes the same error but is gone and reads no answer; so it is the limit.
  // Thrown from this context's handler, the error goes on to the application's, which renders it.
  app.setErrorHandler((error) => {
    if ((error as { code?: unknown }).code !== 'ERR_STREAM_PREMATURE_CLOSE') throw error;
    throw new AppError(coreErrors.PAYLOAD_TOO_LARGE, {
      detail: 'The upload has more files, fields or bytes than this installation accepts.',
      cause: error,
    });
  });
}

export const uploadsPlugin = fp(uploads, { name: 'plinth-uploads' });
