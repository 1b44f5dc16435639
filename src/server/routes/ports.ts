// ports/{port}/{path}: a reverse proxy to 127.0.0.1:{port} inside the session's network namespace,
// through SessionNetwork.connectPort (the namespace's helper). One helper connection per request;
// bodies stream both ways (never read into memory), hop-by-hop headers and the API key stay here.
// WebSocket (any Upgrade) requests arrive raw (src/server/upgrade.ts): their bytes are piped
// through untouched once the upstream connection stands, so the program's own handshake,
// subprotocols and frames pass as they are; auth, origin and the session are checked by hand
// there, since no Fastify hook runs on that path.
import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import type net from 'node:net';
import { pipeline, type Duplex } from 'node:stream';
import type { FastifyBaseLogger } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { z } from 'zod';
import { AppError, BadRequestError, ForbiddenOriginError, PortNotListeningError, UnauthorizedError } from '../../errors.js';
import { PortConnectError } from '../../sandbox/network/session-network.js';
import type { SessionManager } from '../../sessions/session-manager.js';
import { ErrorSchema, SessionIdSchema } from '../schemas.js';
import { rawErrorResponse, type RawUpgradeHandler } from '../upgrade.js';
import { hasApiKey, originAllowed, withoutAccessToken } from '../ws-guard.js';

const PortSchema = z.coerce.number().int().min(1).max(65535).describe('TCP port inside the session (1-65535)');
const PortParamsSchema = z.strictObject({ id: SessionIdSchema, port: PortSchema, '*': z.string().max(8192).describe('path (and query) forwarded to the program; may be empty') });

/** The route's prefix in a raw URL; the rest (path and query, still encoded) goes upstream. */
const PREFIX = /^\/v1\/sessions\/([^/?#]+)\/ports\/([^/?#]*)(.*)$/s;

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization', 'http2-settings'];

/** Headers without hop-by-hop ones (and those Connection names) and without the API key. */
function forwardable(headers: IncomingHttpHeaders, keep: { upgrade?: boolean; request?: boolean } = {}): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ...headers };
  const named = String(headers.connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean);
  for (const h of [...HOP_BY_HOP, ...named]) delete out[h];
  if (keep.request) delete out.authorization;
  if (keep.upgrade && headers.upgrade !== undefined) {
    out.connection = 'Upgrade';
    out.upgrade = headers.upgrade;
  }
  return out;
}

/** Upstream path and query: what follows /ports/{port} ('/' when nothing), without access_token. */
function upstreamPath(rawUrl: string): string {
  const rest = PREFIX.exec(rawUrl)?.[3] ?? '';
  const path = rest === '' || rest.startsWith('?') ? `/${rest}` : rest;
  return withoutAccessToken(path);
}

async function connect(sessions: SessionManager, id: string, port: number): Promise<net.Socket> {
  const network = await sessions.networkOf(id);
  if (!network.connectPort) throw new PortNotListeningError(port, 'the session has no network namespace');
  try {
    return await network.connectPort(port);
  } catch (err) {
    if (err instanceof PortConnectError) throw new PortNotListeningError(port, err.code);
    throw err;
  }
}

export const portRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions } = app.deps;
  // Bodies are the program's business: leave every one unread, to be streamed on.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));

  const handler = async (request: { params: { id: string; port: number }; raw: IncomingMessage; headers: IncomingHttpHeaders; method: string; log: FastifyBaseLogger }, reply: { hijack(): void; raw: http.ServerResponse }) => {
    const { id, port } = request.params;
    const sock = await connect(sessions, id, port);
    reply.hijack();
    const res = reply.raw;
    // createConnection hands over the socket connectPort made (paused: resume it). No `agent: false`
    // here: with it Node would ignore createConnection and dial the host's own port.
    const up = http.request({ createConnection: () => sock.resume(), method: request.method, path: upstreamPath(request.raw.url ?? '/'), headers: forwardable(request.headers, { request: true }) });
    up.on('response', (upstream) => {
      res.writeHead(upstream.statusCode ?? 502, upstream.statusMessage, forwardable(upstream.headers));
      pipeline(upstream, res, () => undefined);
    });
    up.on('error', (err) => {
      request.log.info({ err: err.message, port }, 'ports: upstream failed');
      if (!res.headersSent) {
        const e = new PortNotListeningError(port, 'the connection failed');
        res.writeHead(e.statusCode, { 'content-type': 'application/json; charset=utf-8', connection: 'close' });
        res.end(JSON.stringify({ statusCode: e.statusCode, code: e.code, error: 'Bad Gateway', message: e.message }));
      } else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    pipeline(request.raw, up, () => undefined);
  };

  const url = '/sessions/:id/ports/:port/*';
  app.get(url, {
    schema: {
      tags: ['processes'], operationId: 'proxyPort', summary: 'Reach a server in the session (HTTP and WebSocket reverse proxy)',
      description: 'Forwards the request, any method (GET is shown), to 127.0.0.1:{port} inside the session\'s network namespace, with {path} and the query string; bodies stream both ways and hop-by-hop headers and Authorization are not forwarded. A WebSocket (or other Upgrade) request is piped through as it is: the program answers its handshake (101). The API key applies; on a WebSocket upgrade it may also come as ?access_token=<key>, and a browser Origin other than this service\'s own must be in ALLOWED_ORIGINS (403 FORBIDDEN_ORIGIN). 502 PORT_NOT_LISTENING when nothing listens there.',
      params: PortParamsSchema,
      response: { 200: z.unknown().describe('whatever the program answers (any status, headers and body)'), 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 502: ErrorSchema, 503: ErrorSchema },
    },
  }, handler);
  app.route({ method: ['DELETE', 'OPTIONS', 'PATCH', 'POST', 'PUT'], url, schema: { hide: true, params: PortParamsSchema }, handler });
  // /ports/{port} without a trailing slash: the program's root.
  app.route({ method: ['DELETE', 'GET', 'OPTIONS', 'PATCH', 'POST', 'PUT'], url: '/sessions/:id/ports/:port', schema: { hide: true, params: PortParamsSchema.omit({ '*': true }) }, handler });
};

/** The raw upgrade side of ports/ (see the file header). */
export function portUpgradeHandler(deps: { sessions: SessionManager; expectedKey: Buffer | null; allowedOrigins: readonly string[]; logger: Logger }): RawUpgradeHandler {
  return (req, socket, head) => {
    const rawUrl = req.url ?? '';
    const m = PREFIX.exec(rawUrl);
    if (!m?.[1] || m[2] === undefined) return false;
    socket.on('error', () => socket.destroy());
    void proxyUpgrade(deps, req, socket, head, m[1], m[2]).catch((err: unknown) => {
      const appErr = err instanceof AppError ? err : null;
      if (!appErr) deps.logger.error({ err }, 'ports: upgrade failed');
      rawErrorResponse(socket, appErr ?? new AppError(500, 'INTERNAL_ERROR', 'Internal server error'));
    });
    return true;
  };
}

async function proxyUpgrade(
  deps: { sessions: SessionManager; expectedKey: Buffer | null; allowedOrigins: readonly string[] },
  req: IncomingMessage, socket: Duplex, head: Buffer, rawId: string, rawPort: string,
): Promise<void> {
  if (!hasApiKey(deps.expectedKey, req, true)) throw new UnauthorizedError();
  if (!originAllowed(req.headers, deps.allowedOrigins)) throw new ForbiddenOriginError();
  let decoded = '';
  try {
    decoded = decodeURIComponent(rawId);
  } catch {
    // not valid percent-encoding: refused below
  }
  const id = SessionIdSchema.safeParse(decoded);
  if (!id.success) throw new BadRequestError('FST_ERR_VALIDATION', 'params.id: must match [A-Za-z0-9_-]{1,64}');
  const port = PortSchema.safeParse(/^\d{1,5}$/.test(rawPort) ? rawPort : 'x');
  if (!port.success) throw new BadRequestError('FST_ERR_VALIDATION', 'params.port: must be a TCP port (1-65535)');
  const up = await connect(deps.sessions, id.data, port.data);
  if (socket.destroyed) {
    up.destroy();
    return;
  }
  up.on('error', () => socket.destroy());
  socket.on('close', () => up.destroy());
  up.on('close', () => socket.destroy());
  const lines = [`${req.method ?? 'GET'} ${upstreamPath(req.url ?? '/')} HTTP/1.1`];
  for (const [k, v] of Object.entries(forwardable(req.headers, { request: true, upgrade: true }))) {
    for (const one of Array.isArray(v) ? v : [v]) if (one !== undefined) lines.push(`${k}: ${String(one)}`);
  }
  up.write(`${lines.join('\r\n')}\r\n\r\n`);
  if (head.length > 0) up.write(head);
  up.pipe(socket);
  socket.pipe(up);
  up.resume();
}
