// Stateful Python: a persistent interpreter per session (POST /v1/sessions/{id}/run_code) and
// its restart on demand.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ExecutionRequest } from '../../sessions/executor.js';
import type { RunCodeRequest } from '../../sessions/session-executions.js';
import { BadRequestError } from '../../errors.js';
import { ErrorSchema, RunCodeBodySchema, RunCodeResultSchema, RunCodeStreamSchema, SessionParamsSchema } from '../schemas.js';
import { logOutcome } from '../request-log.js';
import { NDJSON, streamExecution, wantsStream } from '../streaming.js';
import { abortOnDisconnect } from './execute.js';

export const runCodeRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions, config } = app.deps;
  const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 429: ErrorSchema, 503: ErrorSchema };

  app.post('/sessions/:id/run_code', {
    bodyLimit: 2 * 1024 * 1024,
    schema: {
      tags: ['run_code'],
      operationId: 'runCode',
      summary: 'Run Python in the session\'s persistent interpreter',
      description: 'Runs Python in the session\'s persistent interpreter (or a context\'s, with `context_id`): names defined by one call are there in the next. `outputs` carries rich outputs (display(), figures, the final value) as MIME bundles. Streams NDJSON with `Accept: application/x-ndjson`: stdout, stderr and display lines in order, then the result.',
      params: SessionParamsSchema, body: RunCodeBodySchema,
      response: {
        200: { description: 'the result, or with Accept: application/x-ndjson a stream of events', content: { 'application/json': { schema: RunCodeResultSchema }, [NDJSON]: { schema: RunCodeStreamSchema } } },
        ...errors,
      },
    },
  }, async (request, reply) => {
    const timeoutSeconds = request.body.timeout_seconds ?? config.executionTimeoutSeconds;
    if (timeoutSeconds > config.maxExecutionTimeoutSeconds) {
      throw new BadRequestError('FST_ERR_VALIDATION', `body.timeout_seconds: must be at most ${config.maxExecutionTimeoutSeconds}`);
    }
    const ac = abortOnDisconnect(reply);
    const run = async (onOutput?: ExecutionRequest['onOutput'], onDisplay?: RunCodeRequest['onDisplay']) => {
      const result = await sessions.runCode(request.params.id, {
        code: request.body.code, timeoutSeconds, contextId: request.body.context_id, signal: ac.signal, onOutput, onDisplay,
      });
      // On the request's one access-log line (request-log.ts), or its own line if the client left.
      logOutcome(request, ac.signal.aborted, {
        context_id: request.body.context_id, status: result.status, execution_ms: result.duration_ms,
        kernel_restarted: result.kernel_restarted, outputs: result.outputs.length,
      }, 'run_code finished');
      return result;
    };
    if (wantsStream(request)) return streamExecution(reply, run);
    return run();
  });

  app.post('/sessions/:id/kernel/restart', {
    schema: { tags: ['run_code'], operationId: 'restartKernel', summary: 'Restart the session\'s interpreter (fresh state)', params: SessionParamsSchema, response: { 204: z.null().describe('restarted'), ...errors } },
  }, async (request, reply) => {
    await sessions.restartKernel(request.params.id);
    request.log.info({ audit: 'kernel.restarted', session_id: request.params.id }, 'interpreter restarted on request');
    return reply.code(204).send(null);
  });
};
