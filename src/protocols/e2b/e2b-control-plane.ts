// The E2B control plane (what E2B_API_URL points at): create, connect, kill, set timeout, get
// info and list, in both the older `/sandboxes` and the current `/v2/sandboxes` forms. A sandbox is
// a session: sandboxID = session_id, template = environment (`base` and `code-interpreter-v1`:
// E2B_DEFAULT_ENVIRONMENT). Errors are E2B's {code: <status>, message}. What E2B offers and this
// service cannot do (pause, resume, snapshots, fork, metrics, logs, network rules) is a 501.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { SessionInfo } from '../../sessions/session-manager.js';
import { SessionNotFoundError } from '../../errors.js';
import { E2bError, describeError, invalidArgument, notFound, unauthenticated } from './e2b-errors.js';
import { ENVD_VERSION, type E2bContext } from './e2b-context.js';

const DEFAULT_TEMPLATES = new Set(['base', 'code-interpreter-v1', 'code-interpreter']);
/** E2B's API bounds a timeout by an int32 of seconds. */
const TimeoutSchema = z.number().int().min(0).max(2 ** 31 - 1);
const StringMap = z.record(z.string().max(1024), z.string().max(64 * 1024));

const CreateBody = z.looseObject({
  templateID: z.string().min(1).max(256).optional(),
  timeout: TimeoutSchema.nullish(),
  metadata: StringMap.nullish(),
  envVars: StringMap.nullish(),
  allow_internet_access: z.boolean().nullish(),
  autoPause: z.boolean().nullish(),
  secure: z.boolean().nullish(),
  mcp: z.unknown().optional(),
  network: z.unknown().optional(),
  volumeMounts: z.unknown().optional(),
});
const TimeoutBody = z.looseObject({ timeout: TimeoutSchema.nullish() });
const IdParams = z.object({ id: z.string().min(1).max(256) });
const ListQuery = z.looseObject({
  state: z.union([z.string(), z.array(z.string())]).optional(),
  metadata: z.string().max(64 * 1024).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  nextToken: z.string().max(512).optional(),
});

function refuse(field: string, what: string): E2bError {
  return new E2bError(400, 'invalid_argument', `${field}: ${what} is not supported by this service (bubble-sandbox)`);
}

export function controlPlaneRoutes(ctx: E2bContext): FastifyPluginAsyncZod {
  const { sessions, sandboxes, auth, config } = ctx;
  const environmentOf = (template: string) => (DEFAULT_TEMPLATES.has(template) ? config.e2bDefaultEnvironment : template);

  const created = (session: SessionInfo) => ({
    sandboxID: session.session_id,
    templateID: sandboxes.stateOf(session.session_id, session.environment).templateId,
    clientID: 'bubble-sandbox',
    envdVersion: ENVD_VERSION,
    envdAccessToken: auth.accessToken(session.session_id) ?? null,
    trafficAccessToken: null,
    domain: null,
  });
  const info = (session: SessionInfo) => {
    const state = sandboxes.stateOf(session.session_id, session.environment);
    return {
      sandboxID: session.session_id, templateID: state.templateId, clientID: 'bubble-sandbox', alias: session.environment,
      startedAt: session.created_at, endAt: sandboxes.endAtOf(session).toISOString(), state: 'running',
      cpuCount: Math.max(1, Math.ceil(config.cpuCores)), memoryMB: Math.floor(config.memoryLimitBytes / (1024 * 1024)),
      diskSizeMB: Math.floor(config.workspaceQuotaBytes / (1024 * 1024)), envdVersion: ENVD_VERSION,
      metadata: state.metadata, volumeMounts: [],
    };
  };
  const live = async (id: string): Promise<SessionInfo> => {
    try {
      await sessions.touch(id);
    } catch (err) {
      if (err instanceof SessionNotFoundError) throw notFound(`sandbox ${id} not found`);
      throw err;
    }
    const session = sessions.list().find((s) => s.session_id === id);
    if (!session) throw notFound(`sandbox ${id} not found`);
    return session;
  };

  return async (app) => {
    app.addHook('onRequest', async (request) => {
      if (!auth.apiKeyOk(request.headers)) throw unauthenticated('Invalid API key: send the service\'s API key in X-API-KEY (E2B_API_KEY)');
    });
    app.setErrorHandler((err, request, reply) => {
      const e = describeError(err);
      if (e.internal) request.log.error({ err }, 'E2B control-plane request failed');
      void reply.code(e.status).send({ code: e.status, message: e.message });
    });

    const create = async (body: z.infer<typeof CreateBody>) => {
      if (body.autoPause === true) throw refuse('autoPause', 'pausing a sandbox');
      if (body.mcp !== undefined && body.mcp !== null) throw refuse('mcp', 'the MCP gateway');
      if (body.network !== undefined && body.network !== null) throw refuse('network', 'per-sandbox egress rules through E2B (use the /v1 network policy)');
      if (Array.isArray(body.volumeMounts) && body.volumeMounts.length > 0) throw refuse('volumeMounts', 'E2B volumes');
      const templateId = body.templateID ?? 'base';
      const network = body.allow_internet_access === true ? { mode: 'outbound' as const } : undefined;
      const { session } = await sessions.create({ environment: environmentOf(templateId), network });
      sandboxes.register(session.session_id, {
        templateId, metadata: body.metadata ?? {}, envVars: body.envVars ?? {}, timeoutSeconds: body.timeout ?? undefined,
      });
      ctx.logger.info({ audit: 'e2b.sandbox.created', session_id: session.session_id, template: templateId }, 'E2B sandbox created');
      return created(session);
    };
    for (const url of ['/sandboxes', '/v2/sandboxes']) {
      app.post(url, { schema: { body: CreateBody } }, async (request, reply) => reply.code(201).send(await create(request.body ?? {})));
    }
    for (const url of ['/sandboxes/:id/connect', '/v2/sandboxes/:id/connect']) {
      app.post(url, { schema: { params: IdParams, body: TimeoutBody.optional() } }, async (request, reply) => {
        const session = await live(request.params.id);
        const timeout = request.body?.timeout;
        if (timeout !== undefined && timeout !== null) sandboxes.setTimeout(session.session_id, timeout);
        return reply.code(200).send(created(session));
      });
    }
    app.delete('/sandboxes/:id', { schema: { params: IdParams } }, async (request, reply) => {
      try {
        await sessions.delete(request.params.id, true);
      } catch (err) {
        if (err instanceof SessionNotFoundError) throw notFound(`sandbox ${request.params.id} not found`);
        throw err;
      }
      sandboxes.forget(request.params.id);
      return reply.code(204).send();
    });
    app.post('/sandboxes/:id/timeout', { schema: { params: IdParams, body: TimeoutBody } }, async (request, reply) => {
      const session = await live(request.params.id);
      const timeout = request.body.timeout;
      if (timeout === undefined || timeout === null) throw invalidArgument('timeout: required (seconds)');
      sandboxes.setTimeout(session.session_id, timeout);
      return reply.code(204).send();
    });
    app.get('/sandboxes/:id', { schema: { params: IdParams } }, async (request) => info(await live(request.params.id)));

    const list = (query: z.infer<typeof ListQuery>) => {
      const states = query.state === undefined ? [] : (Array.isArray(query.state) ? query.state : query.state.split(','));
      if (states.length > 0 && !states.includes('running')) return { items: [], next: null };
      const wanted = query.metadata === undefined ? [] : [...new URLSearchParams(query.metadata)];
      const all = sessions.list().map(info).filter((s) => wanted.every(([k, v]) => s.metadata[k] === v));
      const start = query.nextToken === undefined ? 0 : all.findIndex((s) => s.sandboxID === Buffer.from(query.nextToken ?? '', 'base64url').toString()) + 1;
      const limit = query.limit ?? 100;
      const items = all.slice(start, start + limit);
      const last = items[items.length - 1];
      return { items, next: start + limit < all.length && last ? Buffer.from(last.sandboxID).toString('base64url') : null };
    };
    for (const url of ['/sandboxes', '/v2/sandboxes']) {
      app.get(url, { schema: { querystring: ListQuery } }, async (request, reply) => {
        const { items, next } = list(request.query);
        if (next !== null) void reply.header('x-next-token', next);
        return items;
      });
    }
    // The rest of E2B's sandbox API: a clear refusal, never a hang or a misleading success.
    for (const url of ['/sandboxes/:id/*', '/v2/sandboxes/:id/*']) {
      app.route({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], url, handler: async (request) => {
        const what = (request.url.split('?')[0] ?? '').split('/').slice(-1)[0] ?? '';
        throw new E2bError(501, 'unimplemented', `'${what.slice(0, 50)}' (pause, resume, snapshots, fork, metrics, logs, network) is not supported by this service (bubble-sandbox)`);
      } });
    }
  };
}
