// GET /v1/environments: the usable environments (venvs and imported root filesystems), sorted by name.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { discoverEnvironments } from '../../sandbox/environments.js';
import { EnvironmentListSchema, ErrorSchema } from '../schemas.js';

export const environmentRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get('/environments', { schema: { tags: ['environments'], operationId: 'listEnvironments', summary: 'List the usable environments', response: { 200: EnvironmentListSchema, 401: ErrorSchema } } }, async () => {
    const envs = await discoverEnvironments(app.deps.config.environmentsDir, app.deps.config.workspaceDir);
    return {
      environments: envs.filter((e) => e.usable).map(({ name, description, dependencies, kind, python, preload }) => ({ name, description, dependencies, kind, python, preload: preload ?? [] })),
    };
  });
};
