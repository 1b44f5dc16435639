// GET /v1/sessions/{id}/processes/{pid}/pty: a process's terminal over a WebSocket. On connect the
// recent scrollback, then binary frames both ways are terminal bytes; a text frame
// {"type":"resize","cols":C,"rows":R} resizes. When the process ends: a text frame
// {"type":"exit", ...ProcessInfo}, then close 1000. Closing the socket leaves the process running.
// Close codes: 1008 a text frame that is not a valid resize, 1009 a frame over WS_MAX_FRAME_BYTES
// (ws itself), 1013 a client too slow to take the output (it may reconnect and get the
// scrollback): the process is unaffected by any of them.
// Input is bounded the other way round: keystrokes the program has not taken yet (its terminal and
// the relay hold 64 KiB each, then the service's pipe writer) are held in memory only up to
// PTY_MAX_PENDING_INPUT_BYTES; past it the service stops reading the socket (TCP backpressure to
// the client, no close) until the program has taken them all. Output keeps flowing meanwhile.
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { RawData, WebSocket } from 'ws';
import { z } from 'zod';
import { ForbiddenOriginError, ProcessNotPtyError, UpgradeRequiredError } from '../../errors.js';
import type { SessionProcesses } from '../../sessions/session-processes.js';
import { PTY_MAX_SIZE, PTY_MIN_SIZE } from '../../sandbox/process-sandbox.js';
import { ProcessParamsSchema } from '../process-schemas.js';
import { ErrorSchema } from '../schemas.js';
import { originAllowed } from '../ws-guard.js';

/** Output queued to one client past which it counts as too slow (closed 1013, output not kept for it). */
export const PTY_MAX_BUFFERED_BYTES = 1024 * 1024;
/** Keystrokes held for a program that has not read them, past which the socket is not read (paused until they are taken). */
export const PTY_MAX_PENDING_INPUT_BYTES = 1024 * 1024;
/** Keystrokes keep the session alive, at most one touch per this many ms. */
const TOUCH_EVERY_MS = 10_000;

const Size = z.number().int().min(PTY_MIN_SIZE).max(PTY_MAX_SIZE);
const ResizeFrameSchema = z.strictObject({ type: z.literal('resize'), cols: Size, rows: Size });

const AccessTokenQuerySchema = z.object({
  access_token: z.string().optional().describe('the API key, for clients that cannot set Authorization on a WebSocket (browsers)'),
});

/** A close reason fits in a control frame (123 bytes). */
const reason = (s: string) => Buffer.from(s).subarray(0, 123).toString('utf8').replace(/\uFFFD+$/, '');

function parseResize(data: RawData): { cols: number; rows: number } | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]).toString('utf8'));
  } catch {
    return 'a text frame must be JSON: {"type":"resize","cols":C,"rows":R}';
  }
  const r = ResizeFrameSchema.safeParse(parsed);
  if (!r.success) return `bad resize: cols and rows are integers ${PTY_MIN_SIZE}..${PTY_MAX_SIZE} ({"type":"resize","cols":C,"rows":R})`;
  return r.data;
}

const toBuffer = (data: RawData): Buffer => (Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data));

export const ptyRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions, config } = app.deps;
  /** The session's processes, looked up before the handshake (so a missing one is an HTTP 404). */
  const found = new WeakMap<FastifyRequest, SessionProcesses>();

  app.route({
    method: 'GET',
    url: '/sessions/:id/processes/:pid/pty',
    config: { accessToken: true },
    schema: {
      tags: ['processes'], operationId: 'attachProcessTerminal', summary: 'Attach to a process\'s terminal (WebSocket)',
      description: 'A WebSocket (101 Switching Protocols). The server first sends the recent scrollback; then binary frames both ways are terminal bytes, and a text frame {"type":"resize","cols":C,"rows":R} resizes. When the process ends the server sends {"type":"exit", ...ProcessInfo} as text and closes with 1000. Closing the socket leaves the process running. Close codes: 1008 a bad text frame, 1009 a frame over WS_MAX_FRAME_BYTES, 1013 a client too slow to take the output; the process is unaffected. Keystrokes the program has not read are held up to 1 MiB: past that the server stops reading the socket (TCP backpressure) until the program takes them. The API key may come as ?access_token=<key>; a browser Origin other than this service\'s own must be in ALLOWED_ORIGINS (403 FORBIDDEN_ORIGIN). Without an Upgrade: 426.',
      params: ProcessParamsSchema, querystring: AccessTokenQuerySchema,
      response: { 101: z.null().describe('Switching Protocols: the terminal stream'), 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 426: ErrorSchema, 503: ErrorSchema },
    },
    onRequest: async (request) => {
      if (!originAllowed(request.headers, config.allowedOrigins)) throw new ForbiddenOriginError();
    },
    preHandler: async (request) => {
      const procs = await sessions.processesOf(request.params.id);
      if (!procs.get(request.params.pid).pty) throw new ProcessNotPtyError(request.params.pid);
      found.set(request, procs);
    },
    handler: async () => {
      throw new UpgradeRequiredError();
    },
    wsHandler: (socket: WebSocket, request) => {
      const procs = found.get(request);
      const { id, pid } = request.params;
      if (!procs) {
        socket.close(1011, 'internal error');
        return;
      }
      const attachment = procs.attachPty(pid);
      const log = request.log.child({ session_id: id, pid });
      let lastTouch = Date.now();
      const stops: (() => void)[] = [];
      const stop = () => {
        for (const s of stops.splice(0)) s();
      };
      // A client whose keystrokes are not being taken is not read from until they are (frames the
      // socket already delivered still arrive: a bounded overshoot of one read).
      const resumeInput = () => {
        if (socket.isPaused) socket.resume();
      };
      const closeWith = (code: number, why: string) => {
        stop();
        resumeInput(); // the close handshake needs the client's close frame read
        if (socket.readyState === socket.OPEN) socket.close(code, reason(why));
      };
      // Scrollback and subscription in one tick: nothing written meanwhile is lost or doubled.
      if (attachment.scrollback.length > 0) socket.send(attachment.scrollback, { binary: true });
      stops.push(attachment.onData((chunk) => {
        if (socket.readyState !== socket.OPEN) return;
        if (socket.bufferedAmount > PTY_MAX_BUFFERED_BYTES) {
          log.info({ buffered: socket.bufferedAmount }, 'pty: client too slow, closed');
          closeWith(1013, 'client too slow to take the output: reconnect for the scrollback');
          return;
        }
        socket.send(chunk, { binary: true });
      }));
      stops.push(attachment.onDrain(resumeInput));
      stops.push(attachment.onExit((info) => {
        stop();
        resumeInput(); // the close handshake needs the client's close frame read
        if (socket.readyState !== socket.OPEN) return;
        socket.send(JSON.stringify({ type: 'exit', ...info }));
        socket.close(1000, 'process exited');
      }));
      socket.on('message', (data, isBinary) => {
        if (socket.readyState !== socket.OPEN) return; // closing: what the client still sent is dropped
        if (Date.now() - lastTouch > TOUCH_EVERY_MS) {
          lastTouch = Date.now();
          void sessions.touch(id).catch(() => undefined);
        }
        if (isBinary) {
          try {
            attachment.write(toBuffer(data));
            if (attachment.pendingInput() > PTY_MAX_PENDING_INPUT_BYTES && !socket.isPaused) {
              log.debug({ pending: attachment.pendingInput() }, 'pty: input backed up, socket paused');
              socket.pause();
            }
          } catch (err) {
            log.debug({ err }, 'pty: input not written (the process has ended)');
          }
          return;
        }
        const resize = parseResize(data);
        if (typeof resize === 'string') {
          closeWith(1008, resize);
          return;
        }
        try {
          attachment.resize(resize.cols, resize.rows);
        } catch (err) {
          log.debug({ err }, 'pty: resize not applied (the process has ended)');
        }
      });
      socket.on('close', (code) => {
        stop();
        log.info({ code }, 'pty: client detached');
      });
      log.info({ scrollback_bytes: attachment.scrollback.length }, 'pty: client attached');
    },
  });
};

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route accepts the API key as ?access_token= on a WebSocket upgrade (browsers cannot set headers there). */
    accessToken?: boolean;
  }
}
