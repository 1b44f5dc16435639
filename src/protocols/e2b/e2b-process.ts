// envd's process service over the session's processes (src/sessions/session-processes.ts): each
// E2B command is a session process, in a sandbox of its own with the session's workspace, uid,
// network and limits. Start and Connect stream start, data (base64) and end events; List,
// SendInput, SendSignal, CloseStdin and Update (terminal size) are unary. A client that goes away
// leaves its command running (E2B's disconnect), bounded by its timeout: Connect-Timeout-Ms, at
// most PROCESS_MAX_SECONDS. E2B pids are numbers handed out per session (e2b-sandboxes.ts).
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ProcessInfo, SessionProcesses } from '../../sessions/session-processes.js';
import { E2bError, invalidArgument, notFound, unimplemented } from './e2b-errors.js';
import { connectTimeoutMs, keepaliveMs, openStream, useConnect } from './e2b-connect.js';
import { workspaceParts } from './e2b-paths.js';
import { sessionOf } from './e2b-filesystem.js';
import type { E2bContext } from './e2b-context.js';

const Selector = z.looseObject({ pid: z.number().int().min(0).optional(), tag: z.string().max(256).optional() });
const PtySchema = z.looseObject({ size: z.looseObject({ cols: z.number().int(), rows: z.number().int() }) });
const StartBody = z.looseObject({
  process: z.looseObject({
    cmd: z.string().min(1).max(4096),
    args: z.array(z.string().max(1024 * 1024)).max(4096).optional(),
    envs: z.record(z.string().max(1024), z.string().max(64 * 1024)).optional(),
    cwd: z.string().max(4096).optional(),
  }),
  pty: PtySchema.optional(),
  tag: z.string().max(256).optional(),
  stdin: z.boolean().optional(),
});
const SelectBody = z.looseObject({ process: Selector });
const InputBody = z.looseObject({ process: Selector, input: z.looseObject({ stdin: z.base64().optional(), pty: z.base64().optional() }) });
const SignalBody = z.looseObject({ process: Selector, signal: z.union([z.string(), z.number()]) });
const UpdateBody = z.looseObject({ process: Selector, pty: PtySchema.optional() });

const SIGNALS: Record<string, string> = { SIGNAL_SIGKILL: 'SIGKILL', SIGNAL_SIGTERM: 'SIGTERM', 9: 'SIGKILL', 15: 'SIGTERM' };

/** envd's end event: a killed process has exitCode -1 and exited false, as Go's ProcessState says. */
function endEvent(info: ProcessInfo) {
  if (info.status === 'exited') return { exitCode: info.exit_code ?? 0, exited: true, status: `exit status ${info.exit_code ?? 0}` };
  return { exitCode: -1, exited: false, status: `signal: ${(info.signal ?? 'SIGKILL').replace(/^SIG/, '').toLowerCase()}` };
}

export function processService(ctx: E2bContext): FastifyPluginAsyncZod {
  const { sessions, sandboxes, config } = ctx;
  const base = '/process.Process';

  const selected = async (request: FastifyRequest, selector: z.infer<typeof Selector>): Promise<{ procs: SessionProcesses; pid: number; processId: string }> => {
    const id = sessionOf(request);
    const pid = selector.pid ?? (selector.tag !== undefined ? sandboxes.pidOfTag(id, selector.tag) : undefined);
    if (pid === undefined) throw invalidArgument('process: select a process by pid or tag');
    const processId = sandboxes.processIdOf(id, pid);
    return { procs: await sessions.processesOf(id), pid, processId };
  };

  /** Streams a process's events from output offset `since` until it ends or the client leaves. */
  const stream = (request: FastifyRequest, reply: FastifyReply, procs: SessionProcesses, pid: number, processId: string, since: number, pty: boolean) => {
    // A client that leaves stops the stream, never the command (E2B's disconnect). openStream
    // calls this asynchronously only, after `keepalive` and `stop` below exist.
    const out = openStream(reply, () => {
      clearInterval(keepalive);
      stop();
    });
    void out.send({ event: { start: { pid } } });
    const keepalive = setInterval(() => void out.send({ event: { keepalive: {} } }), keepaliveMs(request));
    const stop = procs.follow(processId, since, {
      // The ring keeps a bounded tail meanwhile: a reader that falls behind skips what fell out.
      output: (name, text) => out.send({ event: { data: { [pty ? 'pty' : name]: Buffer.from(text).toString('base64') } } }),
      exit: (info) => {
        clearInterval(keepalive);
        if (info.status === 'timeout') {
          out.end(new E2bError(504, 'deadline_exceeded', 'the command reached its timeout and was killed'));
          return;
        }
        void out.send({ event: { end: endEvent(info) } });
        out.end();
      },
    });
    return reply;
  };

  return async (app) => {
    useConnect(app);

    app.post(`${base}/Start`, { schema: { body: StartBody } }, async (request, reply) => {
      const id = sessionOf(request);
      const body = request.body;
      const state = sandboxes.stateOf(id);
      const procs = await sessions.processesOf(id);
      const cwdParts = body.process.cwd === undefined || body.process.cwd === '' ? [] : workspaceParts(body.process.cwd, 'cwd');
      const timeoutMs = connectTimeoutMs(request);
      const pty = body.pty ? { cols: body.pty.size.cols, rows: body.pty.size.rows } : null;
      const info = await procs.start({
        argv: [body.process.cmd, ...(body.process.args ?? [])],
        // HOME is the workspace, where /home/user's files are (it is mounted at /workspace inside).
        env: { HOME: '/workspace', ...state.envVars, ...(body.process.envs ?? {}) },
        cwd: cwdParts.length === 0 ? undefined : cwdParts.join('/'),
        timeoutSeconds: Math.min(config.processMaxSeconds, timeoutMs === null ? config.processMaxSeconds : Math.max(1, timeoutMs / 1000)),
        pty,
      });
      sandboxes.prunePids(id, procs.list().map((p) => p.pid));
      const pid = sandboxes.pidOf(id, info.pid, { cmd: body.process.cmd, args: body.process.args ?? [], envs: body.process.envs ?? {}, cwd: body.process.cwd, tag: body.tag });
      // E2B's default is no stdin: a program that reads it gets end-of-file instead of waiting.
      if (body.stdin !== true && pty === null) await procs.stdin(info.pid, 'eof').catch(() => undefined);
      request.log.info({ session_id: id, pid: info.pid, pty: pty !== null }, 'E2B command started');
      return stream(request, reply, procs, pid, info.pid, 0, pty !== null);
    });

    app.post(`${base}/Connect`, { schema: { body: SelectBody } }, async (request, reply) => {
      const { procs, pid, processId } = await selected(request, request.body.process);
      const info = procs.get(processId);
      // From now on, as envd does: what was printed before is not replayed.
      const since = procs.output(processId, Number.MAX_SAFE_INTEGER).next;
      return stream(request, reply, procs, pid, processId, since, info.pty);
    });

    app.post(`${base}/List`, async (request) => {
      const id = sessionOf(request);
      const procs = await sessions.processesOf(id);
      const state = sandboxes.stateOf(id);
      const processes = procs.list().filter((p) => p.status === 'running').map((p) => {
        const pid = sandboxes.pidOf(id, p.pid);
        const cfg = state.configs.get(pid);
        return {
          config: { cmd: cfg?.cmd ?? '/bin/sh', args: cfg?.args ?? ['-c', p.command], envs: cfg?.envs ?? {}, ...(cfg?.cwd !== undefined ? { cwd: cfg.cwd } : {}) },
          pid,
          ...(cfg?.tag !== undefined ? { tag: cfg.tag } : {}),
        };
      });
      return { processes };
    });

    app.post(`${base}/SendInput`, { schema: { body: InputBody } }, async (request) => {
      const { procs, processId } = await selected(request, request.body.process);
      const data = request.body.input.stdin ?? request.body.input.pty;
      if (data === undefined) throw invalidArgument('input: stdin or pty is required');
      await procs.stdin(processId, Buffer.from(data, 'base64')).catch(gone);
      return {};
    });

    app.post(`${base}/CloseStdin`, { schema: { body: SelectBody } }, async (request) => {
      const { procs, processId } = await selected(request, request.body.process);
      await procs.stdin(processId, 'eof').catch(gone);
      return {};
    });

    app.post(`${base}/SendSignal`, { schema: { body: SignalBody } }, async (request) => {
      const { procs, processId } = await selected(request, request.body.process);
      const signal = SIGNALS[String(request.body.signal)];
      if (signal === undefined) throw invalidArgument('signal: SIGNAL_SIGKILL or SIGNAL_SIGTERM');
      try {
        procs.signal(processId, signal);
      } catch (err) {
        gone(err);
      }
      return {};
    });

    app.post(`${base}/Update`, { schema: { body: UpdateBody } }, async (request) => {
      const { procs, processId } = await selected(request, request.body.process);
      if (request.body.pty) procs.attachPty(processId).resize(request.body.pty.size.cols, request.body.pty.size.rows);
      return {};
    });

    app.post(`${base}/StreamInput`, async () => {
      throw unimplemented('StreamInput: client streaming is not supported; use SendInput');
    });
  };
}

/** A process that has ended is, to E2B, not there any more. */
function gone(err: unknown): never {
  if ((err as { code?: string }).code === 'PROCESS_EXITED') throw notFound('the process has already ended');
  throw err;
}
