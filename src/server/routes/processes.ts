// Long-running processes of a session (the pty WebSocket is in its own route file); the rules live
// in SessionProcesses.
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ErrorSchema, SessionParamsSchema } from '../schemas.js';
import {
  OutputQuerySchema, ProcessErrors, ProcessInfoSchema, ProcessListSchema, ProcessOutputSchema, ProcessOutputStreamSchema, ProcessParamsSchema,
  SignalBodySchema, StartProcessBodySchema, StdinBodySchema,
} from '../process-schemas.js';
import { NDJSON, wantsStream } from '../streaming.js';

const FOLLOW_NOTE = 'With `Accept: application/x-ndjson` the answer follows the output live, one JSON object per line: `{"type":"stdout"|"stderr","data":"..."}` from offset `since` on, then `{"type":"exit", ...ProcessInfo}` once the process has ended. A client that reads slowly skips what fell out of the buffer meanwhile.';

export const processRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions } = app.deps;
  const tags = ['processes'];

  app.post('/sessions/:id/processes', {
    bodyLimit: 4 * 1024 * 1024,
    schema: {
      tags, operationId: 'startProcess', summary: 'Start a long-running process (pipes or a terminal) in the session',
      description: 'It runs in the session\'s sandbox (workspace, network namespace, environment, uid, limits) until it exits, is killed, reaches timeout_seconds, or the session ends. At most MAX_PROCESSES_PER_SESSION run at once (429 TOO_MANY_PROCESSES).',
      params: SessionParamsSchema, body: StartProcessBodySchema,
      response: { 201: ProcessInfoSchema, ...ProcessErrors, 429: ErrorSchema },
    },
  }, async (request, reply) => {
    const b = request.body;
    const procs = await sessions.processesOf(request.params.id);
    const info = await procs.start({ command: b.command, argv: b.argv, env: b.env, cwd: b.cwd, timeoutSeconds: b.timeout_seconds, pty: b.pty });
    return reply.code(201).send(info);
  });

  app.get('/sessions/:id/processes', {
    schema: { tags, operationId: 'listProcesses', summary: 'List the session\'s processes', params: SessionParamsSchema, response: { 200: ProcessListSchema, ...ProcessErrors } },
  }, async (request) => ({ processes: (await sessions.processesOf(request.params.id)).list() }));

  app.get('/sessions/:id/processes/:pid', {
    schema: { tags, operationId: 'getProcess', summary: 'Get a process', params: ProcessParamsSchema, response: { 200: ProcessInfoSchema, ...ProcessErrors } },
  }, async (request) => (await sessions.processesOf(request.params.id)).get(request.params.pid));

  app.get('/sessions/:id/processes/:pid/output', {
    schema: {
      tags, operationId: 'getProcessOutput', summary: 'Read a process\'s output since an offset, or follow it', description: FOLLOW_NOTE,
      params: ProcessParamsSchema, querystring: OutputQuerySchema,
      response: {
        200: { description: 'the output, or with Accept: application/x-ndjson a stream of events', content: { 'application/json': { schema: ProcessOutputSchema }, [NDJSON]: { schema: ProcessOutputStreamSchema } } },
        ...ProcessErrors,
      },
    },
  }, async (request, reply) => {
    const { id, pid } = request.params;
    const procs = await sessions.processesOf(id);
    if (!wantsStream(request)) return procs.output(pid, request.query.since);
    procs.get(pid); // 404 as a plain answer, before the stream begins
    const body = new PassThrough();
    const line = (obj: unknown) => body.write(`${JSON.stringify(obj)}\n`);
    const stop = procs.follow(pid, request.query.since, {
      // The client's pace: past the stream's buffer, wait for it to drain (the ring keeps the rest, bounded).
      output: (stream, data) => (line({ type: stream, data }) ? undefined : once(body, 'drain').then(() => undefined)),
      exit: (info) => {
        line({ type: 'exit', ...info });
        body.end();
      },
    });
    reply.raw.on('close', stop);
    // The stream is written here, not through the response schema's serializer (as in streaming.ts).
    const raw: FastifyReply = reply;
    return raw.code(200).header('content-type', NDJSON).header('cache-control', 'no-store').header('x-accel-buffering', 'no').send(body);
  });

  app.post('/sessions/:id/processes/:pid/stdin', {
    bodyLimit: 2 * 1024 * 1024,
    schema: {
      tags, operationId: 'writeProcessStdin', summary: 'Write to a process\'s stdin, or close it',
      description: '409 PROCESS_EXITED once the process has ended (also when it ended before taking this data); 409 STDIN_CLOSED after eof; 429 STDIN_BACKLOG while the program has not read 1 MiB it was already sent. Answers once the data is in the pipe.',
      params: ProcessParamsSchema, body: StdinBodySchema, response: { 204: z.null().describe('written'), ...ProcessErrors, 409: ErrorSchema, 429: ErrorSchema },
    },
  }, async (request, reply) => {
    const b = request.body;
    const data = b.eof === true ? 'eof' : b.data !== undefined ? Buffer.from(b.data, 'utf8') : Buffer.from(b.data_base64 ?? '', 'base64');
    await (await sessions.processesOf(request.params.id)).stdin(request.params.pid, data);
    return reply.code(204).send(null);
  });

  app.post('/sessions/:id/processes/:pid/signal', {
    schema: {
      tags, operationId: 'signalProcess', summary: 'Send a signal to a process',
      description: 'SIGKILL ends it with everything it started; the others reach its process group (a terminal\'s foreground group), so its handlers run. 409 PROCESS_EXITED once it has ended.',
      params: ProcessParamsSchema, body: SignalBodySchema, response: { 204: z.null().describe('sent'), ...ProcessErrors, 409: ErrorSchema },
    },
  }, async (request, reply) => {
    (await sessions.processesOf(request.params.id)).signal(request.params.pid, request.body.signal);
    return reply.code(204).send(null);
  });

  app.delete('/sessions/:id/processes/:pid', {
    schema: {
      tags, operationId: 'killProcess', summary: 'Kill a process and everything it started',
      description: 'Answers once they are all gone. The process stays listed (status killed) until MAX_FINISHED_PROCESSES newer ones have ended or the session ends; an ended one is left as it is.',
      params: ProcessParamsSchema, response: { 204: z.null().describe('gone'), ...ProcessErrors },
    },
  }, async (request, reply) => {
    await (await sessions.processesOf(request.params.id)).kill(request.params.pid);
    return reply.code(204).send(null);
  });
};
