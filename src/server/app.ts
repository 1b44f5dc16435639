// buildApp(deps) → a Fastify instance with every route; it never listens (main.ts does).
import multipart from '@fastify/multipart';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors, validatorCompiler, type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import type { SessionManager } from '../sessions/session-manager.js';
import { AppError, UnauthorizedError } from '../errors.js';
import { mcpRoutes } from '../protocols/mcp/http.js';
import { clusterRouting, clusterUpgrades, createCluster, mcpForwarding, replicaRoutes } from './cluster-plugin.js';
import { errorBody } from './error-body.js';
import type { Metrics } from './metrics.js';
import { openApiOptions } from './openapi.js';
import { AccessLog, registerRequestLog } from './request-log.js';
import { responseSerializerCompiler } from './response-serializer.js';
import { portRoutes, portUpgradeHandler } from './routes/ports.js';
import { ptyRoutes } from './routes/pty.js';
import { registerUpgrades } from './upgrade.js';
import { hasApiKey, isWebSocketUpgrade, keyDigest, originAllowed } from './ws-guard.js';
import { environmentRoutes } from './routes/environments.js';
import { executeRoutes } from './routes/execute.js';
import { fileRoutes } from './routes/files.js';
import { probeRoutes } from './routes/probes.js';
import { processRoutes } from './routes/processes.js';
import { runCodeRoutes } from './routes/run-code.js';
import { contextRoutes } from './routes/contexts.js';
import { notebookRoutes } from './routes/notebooks.js';
import { sessionRoutes } from './routes/sessions.js';
import { volumeRoutes } from './routes/volumes.js';
import { e2bPlugin, e2bSessionIdOf, rewriteE2bUrl } from '../protocols/e2b/e2b-routes.js';

/** What /readyz says of the isolation self-test run at start-up. */
export interface SelfTestSummary {
  status: 'disabled' | 'running' | 'passed' | 'failed';
  passed: number;
  failed: number;
  failed_probes: string[];
  finished_at: string | null;
}

export interface AppDeps {
  config: Config;
  selfTest?: () => SelfTestSummary;
  /** True from a SIGTERM on, while the listener still serves (the drain): /readyz answers 503. */
  shuttingDown?: () => boolean;
  sandbox: Sandbox;
  sessions: SessionManager;
  metrics: Metrics;
  logger: Logger;
}

declare module 'fastify' {
  interface FastifyInstance {
    deps: AppDeps;
  }
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config } = deps;
  const loggerInstance: FastifyBaseLogger = deps.logger;
  const app = Fastify({
    loggerInstance,
    // One access-log line per request instead of Fastify's two (request-log.ts).
    logController: new AccessLog(),
    requestTimeout: 120_000,
    connectionTimeout: 0,
    keepAliveTimeout: 10_000,
    bodyLimit: 1024 * 1024,
    requestIdHeader: 'x-request-id',
    genReqId: () => crypto.randomUUID(),
    // E2B SDK compatibility: requests for a sandbox's inside are routed by header (e2b-routes.ts).
    rewriteUrl: rewriteE2bUrl,
    routerOptions: { maxParamLength: 2048 },
    ajv: { customOptions: { coerceTypes: false } },
    // Router-level refusals (bad URL encoding, over-long segments) get the same error shape,
    // with a short message instead of an echo of the URL.
    frameworkErrors: (err, _request, rawReply) => {
      const reply = rawReply as unknown as FastifyReply;
      const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      const message = err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'A URL segment is too long' : err.code === 'FST_ERR_BAD_URL' ? 'The URL is not valid' : 'Bad request';
      deps.metrics.rejected.inc({ reason: err.code });
      void reply.code(status).send(errorBody(status, err.code, message));
    },
  }).withTypeProvider<ZodTypeProvider>();
  app.server.headersTimeout = 15_000;

  // An empty body sent with a JSON content type (what many HTTP clients do on a body-less POST) is
  // no body, not a parse error; anything else goes to Fastify's own JSON parser.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = String(body);
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    void parseJson(request, text, done);
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(responseSerializerCompiler);
  app.decorate('deps', deps);

  app.setErrorHandler((err: FastifyError | AppError | Error, request, reply) => {
    let status = 500;
    let code = 'INTERNAL_ERROR';
    let message = 'Internal server error';
    if (err instanceof AppError) {
      status = err.statusCode;
      code = err.code;
      message = err.message;
      for (const [k, v] of Object.entries(err.headers)) void reply.header(k, v);
    } else if (hasZodFastifySchemaValidationErrors(err)) {
      status = 400;
      code = 'FST_ERR_VALIDATION';
      message = err.validation
        .map((v) => `${err.validationContext ?? 'request'}${v.instancePath ? v.instancePath.replace(/\//g, '.') : ''}: ${v.message}`)
        .join('; ');
    } else {
      const e = err as FastifyError & { statusCode?: unknown };
      if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
        status = e.statusCode;
        code = typeof e.code === 'string' ? e.code : 'BAD_REQUEST';
        message = e.message;
      }
    }
    if (status >= 500) request.log.error({ err }, 'request failed');
    deps.metrics.rejected.inc({ reason: code });
    void reply.code(status).send(errorBody(status, code, message));
  });
  // While shutting down (the drain included), answers end their connection: close() is not held
  // by keep-alive, and a client behind a load balancer reconnects to an instance that stays.
  app.addHook('onSend', async (_request, reply) => {
    if (deps.sessions.isClosing || deps.shuttingDown?.() === true) void reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    // The route template, never the URL (ids and paths would make a series per request).
    const route = request.routeOptions.url ?? 'unmatched';
    deps.metrics.httpDuration.observe({ method: request.method, route, status_code: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });
  registerRequestLog(app);
  app.setNotFoundHandler((request, reply) => {
    deps.metrics.rejected.inc({ reason: 'NOT_FOUND' });
    void reply.code(404).send(errorBody(404, 'NOT_FOUND', `Route ${request.method} ${request.url.split('?')[0] ?? ''} not found`));
  });

  await app.register(swagger, openApiOptions(config));
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(multipart, {
    limits: { fileSize: config.maxUploadSizeBytes, files: config.maxUploadFiles, fields: 20, parts: config.maxUploadFiles + 20, fieldSize: 64 * 1024, headerPairs: 200 },
  });

  await app.register(probeRoutes);
  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());

  const expected = config.apiKey ? keyDigest(config.apiKey) : null;
  // Several replicas (PEERS): requests for another replica's session go there (cluster-plugin.ts).
  const cluster = createCluster(deps);
  app.decorate('cluster', cluster);
  app.decorateRequest('clusterForwarded', false);
  if (cluster !== null) {
    app.addHook('onClose', async () => cluster.close());
    await app.register(replicaRoutes(cluster, deps), { prefix: '/cluster/v1' });
  }
  // WebSockets: the pty route through @fastify/websocket, ports/ upgrades raw (see upgrade.ts).
  await registerUpgrades(app, {
    maxFrameBytes: config.wsMaxFrameBytes,
    raw: [portUpgradeHandler({ sessions: deps.sessions, expectedKey: expected, allowedOrigins: config.allowedOrigins, logger: deps.logger })],
    ...(cluster !== null ? { forward: clusterUpgrades(cluster, deps, expected) } : {}),
  });
  await app.register(
    async (v1) => {
      if (expected) {
        v1.addHook('onRequest', async (request) => {
          const accessToken = request.routeOptions.config.accessToken === true && isWebSocketUpgrade(request.raw);
          if (!hasApiKey(expected, request.raw, accessToken)) throw new UnauthorizedError();
        });
      }
      if (cluster !== null) v1.addHook('onRequest', clusterRouting(cluster, deps));
      await v1.register(environmentRoutes);
      await v1.register(sessionRoutes);
      await v1.register(fileRoutes);
      await v1.register(executeRoutes);
      await v1.register(runCodeRoutes);
      await v1.register(contextRoutes);
      await v1.register(notebookRoutes);
      await v1.register(volumeRoutes);
      await v1.register(processRoutes);
      await v1.register(ptyRoutes);
      await v1.register(portRoutes);
    },
    { prefix: '/v1' },
  );
  // E2B's control plane (/sandboxes, /v2/sandboxes) and sandbox side, in E2B's shapes and auth.
  await app.register(e2bPlugin({ config, sessions: deps.sessions, logger: deps.logger, forward: cluster !== null ? clusterRouting(cluster, deps, e2bSessionIdOf) : undefined }));
  // MCP (src/protocols/mcp): the API key of /v1, and no browser page of another origin (DNS rebinding).
  await app.register(async (mcp) => {
    mcp.addHook('onRequest', async (request) => {
      if (!hasApiKey(expected, request.raw, false)) throw new UnauthorizedError();
      if (!originAllowed(request.headers, config.allowedOrigins)) throw new AppError(403, 'FORBIDDEN_ORIGIN', 'A request from a browser origin that is not allowed (ALLOWED_ORIGINS)');
    });
    // Several replicas: a tool call about another replica's session runs there (cluster-plugin.ts).
    if (cluster !== null) mcp.addHook('preHandler', mcpForwarding(cluster, deps));
    await mcp.register(mcpRoutes, { config, sessions: deps.sessions, sandbox: deps.sandbox, logger: deps.logger });
  });
  return app;
}
