// E2B SDK compatibility: one Fastify plugin, registered by src/server/app.ts. Requests that carry
// `E2b-Sandbox-Id` are the sandbox side (envd and the code interpreter, told apart by
// `E2b-Sandbox-Port`): rewriteE2bUrl moves them under /_e2b/<port>/ before routing, so they can
// never reach a /v1 route and /v1 paths never reach them. Everything else named /sandboxes or
// /v2/sandboxes is the control plane. Every route here is hidden from the OpenAPI document (it is
// E2B's API, documented by E2B) and answers errors in E2B's shapes (e2b-errors.ts).
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { SessionManager } from '../../sessions/session-manager.js';
import { SessionNotFoundError } from '../../errors.js';
import { createE2bAuth } from './e2b-auth.js';
import { E2bSandboxes } from './e2b-sandboxes.js';
import { E2bError, describeError, notFound, unauthenticated } from './e2b-errors.js';
import { controlPlaneRoutes } from './e2b-control-plane.js';
import { filesRoutes, filesystemService } from './e2b-filesystem.js';
import { processService } from './e2b-process.js';
import { codeInterpreterRoutes } from './e2b-code-interpreter.js';
import type { E2bContext } from './e2b-context.js';

const SANDBOX_SIDE = '/_e2b';
export const ENVD_PORT = '49983';
export const CODE_INTERPRETER_PORT = '49999';

/** Fastify's rewriteUrl: a request with E2b-Sandbox-Id goes to /_e2b/<port><url>. */
export function rewriteE2bUrl(req: IncomingMessage): string {
  const url = req.url ?? '/';
  if (req.headers['e2b-sandbox-id'] === undefined) return url;
  const port = req.headers['e2b-sandbox-port'];
  return `${SANDBOX_SIDE}/${typeof port === 'string' && /^\d{1,5}$/.test(port) ? port : '0'}${url.startsWith('/') ? url : `/${url}`}`;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The session an E2B sandbox-side request is for. */
    e2bSession?: string;
  }
}

export interface E2bPluginDeps {
  config: Config;
  sessions: SessionManager;
  logger: Logger;
  /**
   * With several replicas: the hook that passes a request for another replica's session to it
   * (the session is the sandbox-side header, or the control plane's `:id`) before anything here
   * reads it. The owner checks the E2B credentials.
   */
  forward?: ((request: FastifyRequest, reply: FastifyReply) => Promise<void>) | undefined;
}

/** The session an E2B request is about: the sandbox side's header, or the control plane's `:id`. */
export function e2bSessionIdOf(request: FastifyRequest): unknown {
  return request.headers['e2b-sandbox-id'] ?? (request.params as { id?: unknown } | undefined)?.id;
}

export function e2bPlugin(deps: E2bPluginDeps): FastifyPluginAsync {
  return async (app) => {
    if (deps.forward !== undefined) app.addHook('onRequest', deps.forward);
    const sandboxes = new E2bSandboxes(deps.sessions, deps.logger);
    const ctx: E2bContext = { ...deps, sandboxes, auth: createE2bAuth(deps.config.apiKey) };
    sandboxes.start();
    app.addHook('onClose', async () => sandboxes.close());
    app.addHook('onRoute', (route) => {
      route.schema = { ...(route.schema ?? {}), hide: true };
    });

    await app.register(controlPlaneRoutes(ctx));
    await app.register(async (side: FastifyInstance) => {
      side.addHook('onRequest', async (request) => {
        const id = request.headers['e2b-sandbox-id'];
        if (typeof id !== 'string' || id === '') throw notFound('no E2b-Sandbox-Id header');
        // The JS SDK sends no token on /contexts (it does on /execute): a context call without one
        // is let through (it runs no code), one with a wrong token is not.
        const contextsWithoutToken = request.headers['x-access-token'] === undefined && request.url.startsWith(`${SANDBOX_SIDE}/${CODE_INTERPRETER_PORT}/contexts`);
        if (!contextsWithoutToken && !ctx.auth.accessTokenOk(id, request.headers)) throw unauthenticated('Invalid access token: send the envdAccessToken of this sandbox in X-Access-Token');
        try {
          await deps.sessions.touch(id);
        } catch (err) {
          if (!(err instanceof SessionNotFoundError)) throw err;
          // E2B's proxy answers 502 for a sandbox that is gone; isRunning() reads exactly that
          // from /health. Every other call gets the clearer not found.
          if (/^\/_e2b\/\d+\/health(\?|$)/.test(request.url)) throw new E2bError(502, 'unavailable', `sandbox ${id.slice(0, 100)} is not running`);
          throw notFound(`sandbox ${id.slice(0, 100)} not found`);
        }
        request.e2bSession = id;
      });
      // envd's HTTP error shape; the Connect services and the code interpreter set their own.
      side.setErrorHandler((err, request, reply) => {
        const e = describeError(err);
        if (e.internal) request.log.error({ err }, 'E2B sandbox-side request failed');
        void reply.code(e.status).send({ code: e.status, message: e.message });
      });
      side.setNotFoundHandler((request, reply) => {
        void reply.code(404).send({ code: 404, message: `${request.method} ${(request.originalUrl.split('?')[0] ?? '').slice(0, 200)} on port ${String(request.headers['e2b-sandbox-port'] ?? '?')} is not served: this service answers envd (port ${ENVD_PORT}) and the code interpreter (port ${CODE_INTERPRETER_PORT})` });
      });
      await side.register(async (envd: FastifyInstance) => {
        envd.get('/health', async (_request, reply) => reply.code(204).send());
        await envd.register(filesRoutes(ctx));
        await envd.register(filesystemService(ctx));
        await envd.register(processService(ctx));
      }, { prefix: `/${ENVD_PORT}` });
      await side.register(async (interpreter: FastifyInstance) => {
        interpreter.get('/health', async (_request, reply) => reply.code(200).send('OK'));
        await interpreter.register(codeInterpreterRoutes(ctx));
      }, { prefix: `/${CODE_INTERPRETER_PORT}` });
    }, { prefix: SANDBOX_SIDE });
  };
}
