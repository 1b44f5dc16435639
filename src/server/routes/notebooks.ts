// Notebooks run end to end with a Jupyter kernel inside the session's sandbox.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { BadRequestError } from '../../errors.js';
import { validateRelativePath } from '../../workspace/safe-open.js';
import { ErrorSchema, NotebookExecuteBodySchema, NotebookResultSchema, SessionParamsSchema } from '../schemas.js';
import { abortOnDisconnect } from './execute.js';

function validPath(field: string, value: string): void {
  try {
    validateRelativePath(value);
  } catch (err) {
    if ((err as { code?: string }).code === 'INVALID_PATH') throw new BadRequestError('INVALID_PATH', `${field}: ${(err as Error).message}`);
    throw err;
  }
}

export const notebookRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions, config } = app.deps;

  app.post('/sessions/:id/notebooks/execute', {
    schema: {
      tags: ['run_code'], operationId: 'executeNotebook', summary: 'Run a notebook of the workspace with a Jupyter kernel in the session\'s sandbox',
      description: 'Executes the code cells in order (the first failing one stops the run; later cells are `skipped`), writes the executed notebook to `output_path`, and answers per-cell status and errors. Needs an environment that ships nbclient and ipykernel (`jupyter`).',
      params: SessionParamsSchema, body: NotebookExecuteBodySchema,
      response: {
        200: NotebookResultSchema,
        400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 413: ErrorSchema, 422: ErrorSchema, 429: ErrorSchema, 503: ErrorSchema,
      },
    },
  }, async (request, reply) => {
    const body = request.body;
    validPath('body.path', body.path);
    if (body.output_path !== undefined) validPath('body.output_path', body.output_path);
    const timeoutSeconds = body.timeout_seconds ?? config.executionTimeoutSeconds;
    if (timeoutSeconds > config.maxExecutionTimeoutSeconds) {
      throw new BadRequestError('FST_ERR_VALIDATION', `body.timeout_seconds: must be at most ${config.maxExecutionTimeoutSeconds}`);
    }
    const cellTimeoutSeconds = body.cell_timeout_seconds ?? Math.ceil(timeoutSeconds);
    if (body.cell_timeout_seconds !== undefined && cellTimeoutSeconds > timeoutSeconds) {
      throw new BadRequestError('FST_ERR_VALIDATION', `body.cell_timeout_seconds: must be at most timeout_seconds (${timeoutSeconds})`);
    }
    const result = await sessions.executeNotebook(request.params.id, {
      path: body.path, outputPath: body.output_path, timeoutSeconds, cellTimeoutSeconds, signal: abortOnDisconnect(reply).signal,
    });
    request.log.info({ session_id: request.params.id, status: result.status, cells: result.cells.length, duration_ms: result.duration_ms }, 'notebook executed');
    return result;
  });
};
