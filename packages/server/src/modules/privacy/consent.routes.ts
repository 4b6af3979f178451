import { ConsentPurposeList, ConsentRecord, MyConsents, RecordConsentBody } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { callerOf, userOf } from '../auth/index.ts';
import { consentHistoryList } from './consent.repo.ts';
import { myConsents, recordConsent } from './consent.service.ts';
import type { PrivacyDeps } from './deps.ts';

const meRoute = { tags: ['Privacy'], security: [{ bearerAuth: [] }] };

/** The signed-in person's consents: `/api/v1/me/consents`. */
export const consentRoutes: FastifyPluginAsyncZod<{ deps: PrivacyDeps }> = async (app, { deps }) => {
  // onRequest, so that an anonymous caller is refused before the body is parsed or validated; it also refuses
  // API keys (consent is a person's own act) and marks the answers `Cache-Control: no-store`.
  app.addHook('onRequest', app.authenticate);

  app.get(
    '/me/consents',
    {
      schema: {
        ...meRoute,
        summary: 'My consents',
        description:
          'The current state of every declared purpose (`never_asked` when nothing was recorded), and the history of every grant and withdrawal, newest first, one page at a time.',
        operationId: 'getMyConsents',
        querystring: listQuerySchema(consentHistoryList),
        response: {
          200: jsonResponse(MyConsents, 'Current state and one page of history.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => myConsents(deps, userOf(request).userId, request.query),
  );

  app.put(
    '/me/consents',
    {
      schema: {
        ...meRoute,
        summary: 'Grant or withdraw a consent',
        description:
          'Appends a record to the history (always: repeating the current state records a renewed consent), with the time, address, user agent and request id as evidence. Answers 201 with the new record.',
        operationId: 'recordMyConsent',
        body: RecordConsentBody,
        response: {
          201: jsonResponse(ConsentRecord, 'The recorded entry.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request, reply) => {
      const record = await recordConsent(deps, callerOf(request), request.body);
      return reply.status(201).send(record);
    },
  );
};

/** `GET /api/v1/consent-purposes`: public, so that a sign-up form can show what it will ask before any account exists. */
export const consentPurposeRoutes: FastifyPluginAsyncZod<{ deps: PrivacyDeps }> = async (app, { deps }) => {
  app.get(
    '/consent-purposes',
    {
      schema: {
        tags: ['Privacy'],
        security: [],
        summary: 'Consent purposes',
        description: 'Every purpose the installation declares, which `PUT /api/v1/me/consents` accepts.',
        operationId: 'listConsentPurposes',
        response: { 200: jsonResponse(ConsentPurposeList, 'The declared purposes.'), ...problemResponses() },
      },
    },
    async () => ({ data: deps.purposes.list() }),
  );
};
