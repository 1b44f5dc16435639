// Named contexts of a session: each its own persistent interpreter in the session's sandbox,
// chosen on run_code with `context_id`.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ContextListSchema, ContextParamsSchema, ContextSchema, CreateContextBodySchema, ErrorSchema, SessionParamsSchema } from '../schemas.js';

export const contextRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions } = app.deps;
  const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema };

  app.post('/sessions/:id/contexts', {
    schema: {
      tags: ['run_code'], operationId: 'createContext', summary: 'Create a context: an interpreter of its own in the session\'s sandbox',
      description: 'The interpreter starts at the context\'s first run_code and counts against MAX_KERNELS. Contexts do not survive a restart of the service.',
      params: SessionParamsSchema, body: CreateContextBodySchema,
      response: { 201: ContextSchema, ...errors, 429: ErrorSchema },
    },
  }, async (request, reply) => {
    const info = await sessions.createContext(request.params.id, { language: request.body.language });
    return reply.code(201).send(info);
  });

  app.get('/sessions/:id/contexts', {
    schema: {
      tags: ['run_code'], operationId: 'listContexts', summary: 'The session\'s contexts (the default one is not listed)',
      params: SessionParamsSchema, response: { 200: ContextListSchema, ...errors },
    },
  }, async (request) => ({ contexts: await sessions.listContexts(request.params.id) }));

  app.delete('/sessions/:id/contexts/:cid', {
    schema: {
      tags: ['run_code'], operationId: 'deleteContext', summary: 'Stop a context\'s interpreter and forget it',
      params: ContextParamsSchema, response: { 204: z.null().describe('deleted'), ...errors },
    },
  }, async (request, reply) => {
    await sessions.deleteContext(request.params.id, request.params.cid);
    return reply.code(204).send(null);
  });
};
