import { DataExport, DataExportAccepted, DataExportDownloadQuery } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { callerOf, clientOf, selfCaller, userOf } from '../auth/index.ts';
import type { PrivacyDeps } from './deps.ts';
import { downloadExport, getExport, requestExport } from './export.service.ts';

const meRoute = { tags: ['Privacy'], security: [{ bearerAuth: [] }] };
const ExportParams = z.object({ exportId: idParam('Not an export id.') });

/**
 * Data exports: `POST /api/v1/me/export`, `GET /api/v1/me/exports/{id}` (signed in), and the download link
 * `GET /api/v1/me/exports/{id}/download`, which its signature alone authorises.
 */
export const exportRoutes: FastifyPluginAsyncZod<{ deps: PrivacyDeps }> = async (app, { deps }) => {
  app.post(
    '/me/export',
    {
      onRequest: app.authenticate,
      // Building an archive reads everything the person has: limited like the other expensive routes.
      config: { routeClass: 'expensive' },
      schema: {
        ...meRoute,
        summary: 'Export my data',
        description:
          'Starts building a zip archive (JSON files) of everything the installation holds about the caller. Answers 202 at once; `GET /me/exports/{id}` follows it, and a mail with the download link says when it is ready. While one export is being built, asking again answers with that one.',
        operationId: 'requestMyDataExport',
        response: { 202: jsonResponse(DataExportAccepted, 'Accepted.'), ...problemResponses(401, 403) },
      },
    },
    async (request, reply) => reply.status(202).send(await requestExport(deps, callerOf(request))),
  );

  app.get(
    '/me/exports/:exportId',
    {
      onRequest: app.authenticate,
      schema: {
        ...meRoute,
        summary: 'My data export',
        description: 'Its status, and while it is ready, the signed `downloadUrl`.',
        operationId: 'getMyDataExport',
        params: ExportParams,
        response: { 200: jsonResponse(DataExport, 'The export.'), ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request) => getExport(deps, userOf(request).userId, request.params.exportId),
  );

  app.get(
    '/me/exports/:exportId/download',
    {
      config: { routeClass: 'expensive' },
      schema: {
        tags: ['Privacy'],
        security: [],
        summary: 'Download a data export',
        description:
          'The signed link from `downloadUrl` (or the mail): it needs no other credential, works once, and stops working at `expiresAt`. 403 for a link whose signature does not verify, 410 once used or expired.',
        operationId: 'downloadMyDataExport',
        params: ExportParams,
        querystring: DataExportDownloadQuery,
        response: {
          200: {
            description: 'The zip archive.',
            content: { 'application/zip': { schema: z.string().meta({ format: 'binary' }) } },
          },
          ...problemResponses(400, 403, 404, 410),
        },
      },
    },
    async (request, reply) => {
      const { archive, fileName } = await downloadExport(
        deps,
        request.params.exportId,
        request.query,
        (ownerId) => selfCaller(ownerId, clientOf(request)),
      );
      return (
        reply
          .type('application/zip')
          .header('content-disposition', `attachment; filename="${fileName}"`)
          .header('cache-control', 'no-store')
          // A buffer is sent as is; the type provider types only the documented string body.
          .send(archive as unknown as string)
      );
    },
  );
};
