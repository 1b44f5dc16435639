// Shared volumes, for operators: list them, delete one no session names. The rules live in SessionManager.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ErrorSchema, VolumeListSchema, VolumeParamsSchema } from '../schemas.js';

export const volumeRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions, config } = app.deps;

  app.get('/volumes', {
    schema: {
      tags: ['volumes'],
      operationId: 'listVolumes',
      summary: 'List shared volumes',
      description: 'Every volume under <workspace_dir>/volumes, with the live sessions that name it and, for a quota image, its size and use.',
      response: { 200: VolumeListSchema, 401: ErrorSchema },
    },
  }, async () => ({ volumes: await sessions.listVolumes(), max_volumes: config.maxVolumes }));

  app.delete('/volumes/:name', {
    schema: {
      tags: ['volumes'],
      operationId: 'deleteVolume',
      summary: 'Delete a shared volume',
      description: 'Removes a volume no live session names, with its files, its quota image and its loop device, and frees its MAX_VOLUMES slot. '
        + '409 VOLUME_IN_USE while a session names it (delete those sessions first); 404 VOLUME_NOT_FOUND when there is none of that name.',
      params: VolumeParamsSchema,
      response: { 204: z.null().describe('deleted'), 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema },
    },
  }, async (request, reply) => {
    await sessions.deleteVolume(request.params.name);
    return reply.code(204).send(null);
  });
};
