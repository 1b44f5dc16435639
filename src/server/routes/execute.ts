// Executions: in a session (POST /v1/sessions/{id}/execute) and one-shot (POST /v1/execute).
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { FastifyReply } from 'fastify';
import type { z } from 'zod';
import type { Config } from '../../config.js';
import type { Program, ResourceLimits } from '../../sandbox/types.js';
import type { ExecutionRequest } from '../../sessions/executor.js';
import { runOneShot } from '../../sessions/one-shot.js';
import { validateRelativePath } from '../../workspace/workspace-fs.js';
import { BadRequestError, ExtensionNotAllowedError, UploadTooLargeError } from '../../errors.js';
import {
  ErrorSchema, ExecuteBodySchema, ExecutionResultSchema, ExecutionStreamSchema, OneShotBodySchema, OneShotResultSchema, OneShotStreamSchema,
  SessionParamsSchema, type ExecuteBody,
} from '../schemas.js';
import { logOutcome } from '../request-log.js';
import { NDJSON, streamExecution, wantsStream } from '../streaming.js';
import { extensionAllowed } from './files.js';

const STREAM_NOTE = 'With `Accept: application/x-ndjson` the answer streams one JSON object per line: `{"type":"stdout"|"stderr","data":"..."}` as output arrives, then one `{"type":"result", ...ExecutionResult}` with empty stdout/stderr.';

/** The 200 answer: JSON, or NDJSON events when the client asks for them. */
function resultOrStream<R extends z.ZodType, S extends z.ZodType>(result: R, stream: S) {
  return {
    description: 'the result, or with Accept: application/x-ndjson a stream of events',
    content: { 'application/json': { schema: result }, [NDJSON]: { schema: stream } },
  };
}

function invalid(field: string, message: string): BadRequestError {
  return new BadRequestError('FST_ERR_VALIDATION', `body.${field}: ${message}`);
}

/** Turns a validated body into an execution request, enforcing the configured maxima. */
export function toExecutionRequest(body: ExecuteBody, config: Config, defaults: ResourceLimits, signal: AbortSignal): ExecutionRequest {
  const timeout = body.timeout_seconds ?? config.executionTimeoutSeconds;
  if (timeout > config.maxExecutionTimeoutSeconds) throw invalid('timeout_seconds', `must be at most ${config.maxExecutionTimeoutSeconds}`);
  const limits = { ...defaults };
  const l = body.limits ?? {};
  // The minima are in LimitsSchema; the maxima are this server's configuration.
  if (l.memory_bytes !== undefined) {
    if (l.memory_bytes > defaults.memoryBytes) throw invalid('limits.memory_bytes', `must be at most ${defaults.memoryBytes}`);
    limits.memoryBytes = l.memory_bytes;
  }
  if (l.pids !== undefined) {
    if (l.pids > defaults.pids) throw invalid('limits.pids', `must be at most ${defaults.pids}`);
    limits.pids = l.pids;
  }
  if (l.cpu_cores !== undefined) {
    if (l.cpu_cores > defaults.cpuCores) throw invalid('limits.cpu_cores', `must be at most ${defaults.cpuCores}`);
    limits.cpuCores = l.cpu_cores;
  }
  let program: Program;
  if (body.script !== undefined) program = { kind: 'script', source: body.script };
  else if (body.command !== undefined) program = { kind: 'command', command: body.command };
  else program = { kind: 'argv', argv: body.argv ?? [] };
  return { program, stdin: body.stdin, env: body.env, timeoutSeconds: timeout, limits, signal };
}

/** Aborts when the client goes away before the answer is sent (the response closes early). */
export function abortOnDisconnect(reply: FastifyReply): AbortController {
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return ac;
}

export const executeRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions, config, sandbox } = app.deps;
  const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 429: ErrorSchema, 503: ErrorSchema };
  const bodyLimit = 16 * 1024 * 1024;

  app.post('/sessions/:id/execute', {
    bodyLimit,
    schema: {
      tags: ['execute'], operationId: 'executeInSession', summary: 'Run a script, command or argv in the session', description: STREAM_NOTE,
      params: SessionParamsSchema, body: ExecuteBodySchema,
      response: { 200: resultOrStream(ExecutionResultSchema, ExecutionStreamSchema), ...errors },
    },
  }, async (request, reply) => {
    const ac = abortOnDisconnect(reply);
    const req = toExecutionRequest(request.body, config, sandbox.defaultLimits, ac.signal);
    const run = async (onOutput?: ExecutionRequest['onOutput']) => {
      const result = await sessions.execute(request.params.id, { ...req, onOutput });
      logOutcome(request, ac.signal.aborted, { status: result.status, execution_ms: result.duration_ms, stdout_chars: result.stdout.length, stderr_chars: result.stderr.length }, 'execution finished');
      return result;
    };
    if (wantsStream(request)) return streamExecution(reply, run);
    return run();
  });

  app.post('/execute', {
    bodyLimit: bodyLimit + Math.ceil((config.maxUploadSizeBytes * 4) / 3) + 1024 * 1024,
    schema: {
      tags: ['execute'], operationId: 'executeOneShot', summary: 'Run once in a throw-away workspace, files in and out inline', description: STREAM_NOTE,
      body: OneShotBodySchema,
      response: { 200: resultOrStream(OneShotResultSchema, OneShotStreamSchema), ...errors, 413: ErrorSchema, 415: ErrorSchema, 422: ErrorSchema },
    },
  }, async (request, reply) => {
    const body = request.body;
    let total = 0;
    const files = (body.files ?? []).map((f, i) => {
      try {
        validateRelativePath(f.path);
      } catch (err) {
        throw new BadRequestError('INVALID_PATH', `body.files.${i}.path: ${(err as Error).message}`);
      }
      const name = f.path.split('/').pop() ?? '';
      if (!extensionAllowed(name, config.allowedExtensions)) throw new ExtensionNotAllowedError(name, config.allowedExtensions);
      const content = Buffer.from(f.content_base64, 'base64');
      total += content.length;
      if (total > config.maxUploadSizeBytes) throw new UploadTooLargeError(config.maxUploadSizeBytes);
      return { path: f.path, content };
    });
    // Before a stream can begin: a bad pattern or a mode this host lacks is a plain 400/422.
    sessions.checkOneShotNetwork(body.network);
    const ac = abortOnDisconnect(reply);
    const req = toExecutionRequest(body, config, sandbox.defaultLimits, ac.signal);
    const run = async (onOutput?: ExecutionRequest['onOutput']) => {
      const result = await runOneShot(sessions, config, { environment: body.environment ?? 'bare', files, network: body.network, request: { ...req, onOutput } });
      logOutcome(request, ac.signal.aborted, { status: result.status, execution_ms: result.duration_ms, outputs: result.files.outputs.length }, 'one-shot execution finished');
      return result;
    };
    if (wantsStream(request)) return streamExecution(reply, run);
    return run();
  });
};
