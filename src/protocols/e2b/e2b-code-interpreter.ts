// The code interpreter (port 49999): `POST /execute` runs Python in the session's persistent
// interpreter, or a named context's (sessions.runCode), and answers E2B's NDJSON: stdout/stderr
// and results (display() outputs, figures, the last expression: MIME bundles mapped to E2B's
// keys) in the order they come, then the cell's error (name, value, traceback) and the execution
// count. `/contexts` creates, lists and deletes named contexts (Python only). The answer
// starts at once (the SDK times out a request whose headers do not come), so anything that goes
// wrong after the start is an error line the SDK reports as `execution.error`. A client that goes
// away interrupts its cell, as on /v1. Errors before the start: a text body with the status
// (404 → the SDK's NotFoundError).
import { PassThrough } from 'node:stream';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { RichOutput } from '../../sandbox/kernel/rich-output.js';
import type { ContextInfo } from '../../sessions/session-manager.js';
import type { RunCodeResult } from '../../sessions/session-executions.js';
import { E2bError, describeError, invalidArgument, notFound } from './e2b-errors.js';
import { E2B_HOME, workspaceParts } from './e2b-paths.js';
import { sessionOf } from './e2b-filesystem.js';
import type { E2bContext } from './e2b-context.js';

const ExecuteBody = z.looseObject({
  code: z.string().max(2 * 1024 * 1024),
  context_id: z.string().max(256).nullish(),
  language: z.string().max(64).nullish(),
  env_vars: z.record(z.string(), z.string()).nullish(),
});

type Line = Record<string, unknown>;

const CreateContextBody = z.looseObject({ language: z.string().max(64).nullish(), cwd: z.string().max(4096).nullish() });
const ContextParams = z.object({ id: z.string().min(1).max(256) });

/** MIME types → the keys of E2B's result messages; any other type goes into `extra`. */
const E2B_KEYS: Record<string, string> = {
  'text/plain': 'text', 'text/html': 'html', 'text/markdown': 'markdown', 'image/svg+xml': 'svg', 'image/png': 'png',
  'image/jpeg': 'jpeg', 'application/pdf': 'pdf', 'text/latex': 'latex', 'application/json': 'json', 'application/javascript': 'javascript',
};

export function resultLine(output: RichOutput): Line {
  const line: Line = { type: 'result', is_main_result: output.type === 'execute_result' };
  const extra: Record<string, unknown> = {};
  for (const [mime, value] of Object.entries(output.data)) {
    const key = E2B_KEYS[mime];
    if (key !== undefined) line[key] = value;
    else extra[mime] = value;
  }
  if (Object.keys(extra).length > 0) line.extra = extra;
  return line;
}

function contextJson(c: ContextInfo) {
  return { id: c.context_id, language: c.language, cwd: E2B_HOME };
}

function checkLanguage(language: string | null | undefined): void {
  if (language && language.toLowerCase() !== 'python') throw invalidArgument(`language '${language.slice(0, 50)}' is not supported: this sandbox runs Python`);
}

/** The error line of a cell that did not end normally (an exception, a limit, a lost interpreter). */
function errorLine(result: RunCodeResult): Line | null {
  if (result.error) return { type: 'error', name: result.error.type, value: result.error.message, traceback: result.error.traceback.join('\n') };
  const why: Partial<Record<RunCodeResult['status'], [string, string]>> = {
    timeout: ['TimeoutError', `the cell ran longer than ${result.timeout_seconds} s and was interrupted`],
    oom: ['MemoryError', 'the interpreter ran out of memory and was restarted (its state is gone)'],
    killed: ['KernelDied', 'the interpreter was stopped (its state is gone)'],
  };
  const w = why[result.status];
  return w ? { type: 'error', name: w[0], value: w[1], traceback: '' } : null;
}

export function codeInterpreterRoutes(ctx: E2bContext): FastifyPluginAsyncZod {
  const { sessions, sandboxes, config } = ctx;
  return async (app) => {
    app.setErrorHandler((err, request, reply) => {
      const e = describeError(err);
      if (e.internal) request.log.error({ err }, 'E2B code interpreter request failed');
      void reply.code(e.status).header('content-type', 'text/plain; charset=utf-8').send(e.message);
    });

    app.post('/execute', { bodyLimit: 3 * 1024 * 1024, schema: { body: ExecuteBody } }, async (request, reply) => {
      const id = sessionOf(request);
      const { code, context_id: contextId, language, env_vars: envVars } = request.body;
      if (contextId && language) throw invalidArgument('give context_id or language, not both');
      if (contextId && !(await sessions.listContexts(id)).some((c) => c.context_id === contextId)) throw notFound(`context '${contextId.slice(0, 100)}' not found`);
      await sessions.touch(id);

      const body = new PassThrough();
      // The headers leave now, not with the first line: a cell can be silent for long, and the SDK
      // gives up on a request whose headers do not come (Fastify pipes the body right after writeHead).
      reply.raw.once('pipe', () => reply.raw.flushHeaders());
      void reply.code(200).header('content-type', 'application/x-ndjson').header('cache-control', 'no-store').header('x-accel-buffering', 'no').send(body);
      const line = (obj: Line) => body.write(`${JSON.stringify(obj)}\n`);
      const refuse = (name: string, value: string) => {
        line({ type: 'error', name, value, traceback: '' });
        body.end();
        return reply;
      };
      if (language && language.toLowerCase() !== 'python') return refuse('NotSupportedError', `language '${language.slice(0, 50)}' is not supported: this sandbox runs Python`);
      if (envVars && Object.keys(envVars).length > 0) return refuse('NotSupportedError', 'env_vars on a single execution are not supported: set envVars when creating the sandbox for commands, or os.environ in the code');

      const ac = new AbortController();
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) ac.abort();
      });
      try {
        let mainShown = false;
        const result = await sessions.runCode(id, {
          code, timeoutSeconds: config.maxExecutionTimeoutSeconds, signal: ac.signal, contextId: contextId ?? undefined,
          onOutput: (stream, text) => line({ type: stream, text, timestamp: new Date().toISOString() }),
          onDisplay: (output) => {
            if (output.type === 'execute_result') mainShown = true;
            line(resultLine(output));
          },
        });
        // The last expression's value when its rich form did not fit in MAX_OUTPUT_CHARS: its text.
        if (!mainShown && result.result !== null) line({ type: 'result', is_main_result: true, text: result.result });
        const error = errorLine(result);
        if (error) line(error);
        const state = sandboxes.stateOf(id);
        state.executions += 1;
        line({ type: 'number_of_executions', execution_count: state.executions });
        request.log.info({ session_id: id, status: result.status, duration_ms: result.duration_ms }, 'E2B execution finished');
      } catch (err) {
        const e = describeError(err);
        if (e.internal) request.log.error({ err }, 'E2B execution failed');
        line({ type: 'error', name: e.status === 429 ? 'BusyError' : e.status === 404 ? 'NotFoundError' : 'SandboxError', value: e.message, traceback: '' });
      }
      body.end();
      return reply;
    });

    app.post('/contexts', { schema: { body: CreateContextBody.optional() } }, async (request) => {
      const id = sessionOf(request);
      checkLanguage(request.body?.language);
      const cwd = request.body?.cwd;
      // Every interpreter runs in the workspace: a context elsewhere cannot be honoured.
      if (cwd && workspaceParts(cwd, 'cwd').length > 0) throw invalidArgument(`cwd '${cwd.slice(0, 200)}': contexts run in ${E2B_HOME}; chdir in the code instead`);
      return contextJson(await sessions.createContext(id, { language: 'python' }));
    });
    app.get('/contexts', async (request) => (await sessions.listContexts(sessionOf(request))).map(contextJson));
    app.delete('/contexts/:id', { schema: { params: ContextParams } }, async (request, reply) => {
      await sessions.deleteContext(sessionOf(request), request.params.id);
      return reply.code(204).send();
    });
    app.post('/contexts/:id/restart', { schema: { params: ContextParams } }, async () => {
      throw new E2bError(501, 'unimplemented', 'restarting a context is not supported by this service: delete it and create another');
    });
  };
}
