// Session lifecycle routes; the rules live in SessionManager.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  CreateSessionBodyOrNothingSchema, DeleteSessionQuerySchema, ErrorSchema, SessionInfoSchema, SessionListSchema, SessionParamsSchema, UpdateNetworkBodySchema,
} from '../schemas.js';
import { createOnPeer, listAcrossReplicas, relayAnswer } from '../cluster-sessions.js';

export const sessionRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions } = app.deps;
  const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema };

  app.post('/sessions', {
    schema: { tags: ['sessions'], operationId: 'createSession', summary: 'Create a session (or get the same one again)', description: 'With several replicas (PEERS) any replica may be asked: the session is made on the replica with the most free capacity (free session and execution slots; a draining one takes none) and node_id in the answer says which; a session_id that a replica already holds goes to that one.', body: CreateSessionBodyOrNothingSchema, response: { 200: SessionInfoSchema, 201: SessionInfoSchema, ...errors, 409: ErrorSchema, 422: ErrorSchema, 429: ErrorSchema } },
  }, async (request, reply) => {
    const body = request.body ?? {};
    const placed = await createOnPeer(app, request, body);
    if (placed !== null) return relayAnswer(reply, placed);
    const { session, created } = await sessions.create(body);
    request.log.info({ session_id: session.session_id, created }, 'session create');
    return reply.code(created ? 201 : 200).send(session);
  });

  app.get('/sessions', { schema: { tags: ['sessions'], operationId: 'listSessions', summary: 'List sessions', description: 'With several replicas, every replica\'s sessions, oldest first; unavailable_nodes names replicas that could not be asked (their sessions are missing).', response: { 200: SessionListSchema, 401: ErrorSchema } } }, (request) => listAcrossReplicas(app, request));

  app.get('/sessions/:id', { schema: { tags: ['sessions'], operationId: 'getSession', summary: 'Get a session', params: SessionParamsSchema, response: { 200: SessionInfoSchema, ...errors } } }, async (request) => {
    return sessions.info(await sessions.touch(request.params.id));
  });

  app.patch('/sessions/:id/network', {
    schema: {
      tags: ['sessions'], operationId: 'updateSessionNetwork', summary: 'Replace the allow or deny list of an allowlist session',
      description: 'A list left out stays as it was. Every pattern is checked before anything changes (400 INVALID_NETWORK_POLICY naming the field); the egress proxy follows the new lists from its next connection on; the policy survives a restart. 409 NETWORK_MODE_MISMATCH for a session of another mode.',
      params: SessionParamsSchema, body: UpdateNetworkBodySchema, response: { 200: SessionInfoSchema, ...errors, 409: ErrorSchema },
    },
  }, async (request) => {
    const session = await sessions.updateNetwork(request.params.id, request.body);
    request.log.info({ session_id: session.session_id }, 'session network update');
    return session;
  });

  app.delete('/sessions/:id', {
    schema: { tags: ['sessions'], operationId: 'deleteSession', summary: 'Delete a session, with or without its data', params: SessionParamsSchema, querystring: DeleteSessionQuerySchema, response: { 204: z.null().describe('deleted'), ...errors, 403: ErrorSchema } },
  }, async (request, reply) => {
    await sessions.delete(request.params.id, request.query.clear_data);
    return reply.code(204).send(null);
  });
};
