// The HTTP side of running as several replicas (src/cluster/ has the rest):
// - an onRequest hook of /v1, after the API-key check and before any body is read, that pipes a
//   request for another replica's session to it (or answers 503 NODE_UNAVAILABLE);
// - the same for WebSocket upgrades, before the pty and ports/ handlers see them, for the E2B
//   routes (the session in the E2b-Sandbox-Id header or the control plane's :id), and for MCP tool
//   calls that name another replica's session (mcpForwarding);
// - (cluster-sessions.ts: POST /v1/sessions placed on the replica with the most free capacity,
//   GET /v1/sessions merged;)
// - /cluster/v1/*, the replica-to-replica routes (load, "do you hold this session?"), which like
//   every forwarded request need the cluster secret.
// None of it exists on a single replica (no peers): the service behaves as it always did.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { Cluster } from '../cluster/cluster.js';
import { hasClusterSecret, saysForwarded, secretDigest } from '../cluster/cluster-secret.js';
import { clusterNodes, isClustered, sessionIdOfUrl } from '../cluster/nodes.js';
import type { PeerAnswer } from '../cluster/peer-call.js';
import { AppError, ClusterUnauthorizedError, NodeUnavailableError, SessionNotFoundError } from '../errors.js';
import type { AppDeps } from './app.js';
import { errorBody } from './error-body.js';
import { rawErrorResponse } from './upgrade.js';
import { hasApiKey } from './ws-guard.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The other replicas; null on a single replica. */
    cluster: Cluster | null;
  }
  interface FastifyRequest {
    /** True when another replica forwarded this request (with the right secret): it is served here, never forwarded again. */
    clusterForwarded: boolean;
  }
}

/** The cluster of this replica, or null without peers. */
export function createCluster(deps: AppDeps): Cluster | null {
  const { config, sessions } = deps;
  const nodes = clusterNodes(config);
  if (!isClustered(nodes) || config.clusterSecret === undefined) return null;
  return new Cluster({
    nodes, secret: config.clusterSecret, timeoutMs: config.peerTimeoutSeconds * 1000, logger: deps.logger,
    isLocal: (id) => sessions.has(id),
    localLoad: () => ({
      node_id: config.nodeId, sessions: sessions.count, max_sessions: config.maxSessions,
      running: sessions.limiter.active, queued: sessions.limiter.queued, max_running: config.maxConcurrentExecutions,
      draining: deps.shuttingDown?.() === true || sessions.isClosing,
    }),
  });
}

function writeRawError(res: ServerResponse, err: AppError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(err.statusCode, { ...err.headers, 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(errorBody(err.statusCode, err.code, err.message)));
}

/** The session a /v1 request names: its `:id` route parameter. */
function sessionIdParam(request: FastifyRequest): unknown {
  return (request.params as { id?: unknown } | undefined)?.id;
}

/**
 * The onRequest hook of /v1 (and of the E2B routes, whose sandbox side names the session in a
 * header) that serves a forwarded request here and forwards one for another replica's session.
 */
export function clusterRouting(cluster: Cluster, deps: AppDeps, sessionIdOf: (request: FastifyRequest) => unknown = sessionIdParam) {
  const expected = secretDigest(deps.config.clusterSecret ?? '');
  const retryAfter = deps.config.nodeRetryAfterSeconds;
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (saysForwarded(request.headers)) {
      if (!hasClusterSecret(expected, request.headers)) throw new ClusterUnauthorizedError();
      request.clusterForwarded = true;
      return;
    }
    const id = sessionIdOf(request);
    if (typeof id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) return;
    const where = await cluster.locate(id);
    if (where.at === 'here') return;
    if (where.at === 'unreachable') throw new NodeUnavailableError(retryAfter);
    const node = where.node;
    const counted = (outcome: 'answered' | 'unavailable') => deps.metrics.forwardedRequests.inc({ node, outcome });
    request.log.debug({ session_id: id, node }, 'forwarding to the replica that holds the session');
    reply.hijack();
    // The owner routes the URL the client sent (a rewriteUrl, E2B's, may have changed the raw one).
    request.raw.url = request.originalUrl;
    cluster.forward(node, request.raw, reply.raw, {
      unavailable: (err) => {
        counted('unavailable');
        request.log.warn({ node, err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'replica unreachable');
        writeRawError(reply.raw, new NodeUnavailableError(retryAfter));
      },
      status: (status) => {
        counted('answered');
        request.log.info({ session_id: id, node, statusCode: status }, 'request forwarded');
        if (status === 404 || (request.method === 'DELETE' && status < 300)) cluster.forget(id);
      },
    }, { 'x-request-id': String(request.id) });
  };
}

/** The raw-upgrade counterpart of clusterRouting: true when it took the socket. */
export function clusterUpgrades(cluster: Cluster, deps: AppDeps, expectedKey: Buffer | null) {
  const expected = secretDigest(deps.config.clusterSecret ?? '');
  const retryAfter = deps.config.nodeRetryAfterSeconds;
  return async (req: IncomingMessage, socket: Duplex, head: Buffer): Promise<boolean> => {
    if (saysForwarded(req.headers)) {
      if (hasClusterSecret(expected, req.headers)) return false;
      rawErrorResponse(socket, new ClusterUnauthorizedError());
      return true;
    }
    const id = sessionIdOfUrl(req.url ?? '');
    // Without the API key it is refused here, by the local handlers, before any hop.
    if (id === null || !hasApiKey(expectedKey, req, true)) return false;
    const where = await cluster.locate(id);
    if (where.at === 'here') return false;
    if (where.at === 'unreachable') {
      rawErrorResponse(socket, new NodeUnavailableError(retryAfter));
      return true;
    }
    const node = where.node;
    let unavailable = false;
    cluster.forwardUpgrade(node, req, socket, head, {
      unavailable: () => {
        unavailable = true;
        deps.metrics.forwardedRequests.inc({ node, outcome: 'unavailable' });
        rawErrorResponse(socket, new NodeUnavailableError(retryAfter));
      },
    });
    socket.once('close', () => {
      if (!unavailable) deps.metrics.forwardedRequests.inc({ node, outcome: 'answered' });
    });
    return true;
  };
}

/** /cluster/v1: what placement and owner look-ups ask of a replica; the cluster secret only. */
export function replicaRoutes(cluster: Cluster, deps: AppDeps): FastifyPluginAsyncZod {
  const expected = secretDigest(deps.config.clusterSecret ?? '');
  return async (app) => {
    app.addHook('onRequest', async (request) => {
      if (!hasClusterSecret(expected, request.headers)) throw new ClusterUnauthorizedError();
    });
    app.get('/load', { schema: { hide: true } }, () => ({ ...cluster.localLoadNow() }));
    app.get('/sessions/:id', { schema: { hide: true, params: z.strictObject({ id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/) }) } }, (request) => {
      if (!deps.sessions.has(request.params.id)) throw new SessionNotFoundError(request.params.id);
      return { session_id: request.params.id, node_id: cluster.self };
    });
  };
}

/** The session a single MCP `tools/call` names in its arguments, or null (other methods, batches, no session). */
function mcpSessionIdOf(body: unknown): string | null {
  let message: unknown;
  try {
    message = typeof body === 'string' ? JSON.parse(body) : null;
  } catch {
    return null; // the MCP route answers its own parse error
  }
  if (typeof message !== 'object' || message === null || Array.isArray(message)) return null;
  const m = message as { method?: unknown; params?: { arguments?: { session_id?: unknown } } };
  const id = m.method === 'tools/call' ? m.params?.arguments?.session_id : undefined;
  return typeof id === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : null;
}

const MCP_HEADERS = ['authorization', 'accept', 'mcp-protocol-version', 'mcp-session-id'];

/**
 * A preHandler of POST /mcp (its body already read, as text): a tool call about another
 * replica's session runs on that replica. The MCP route is stateless, so the whole POST can go
 * there; its answer (one JSON-RPC result, as JSON or one server-sent event) is read whole and
 * relayed. The owner checks the API key again; a client that goes away does not end the
 * forwarded call (it runs to its timeout there).
 */
export function mcpForwarding(cluster: Cluster, deps: AppDeps) {
  const retryAfter = deps.config.nodeRetryAfterSeconds;
  const unavailable = (reply: FastifyReply) => reply.code(503).header('retry-after', String(retryAfter)).send({
    jsonrpc: '2.0', id: null,
    error: { code: -32000, message: 'NODE_UNAVAILABLE: The replica that holds this session cannot be reached; retry later', data: { statusCode: 503, code: 'NODE_UNAVAILABLE' } },
  });
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (request.method !== 'POST' || saysForwarded(request.headers)) return;
    const id = mcpSessionIdOf(request.body);
    if (id === null) return;
    const where = await cluster.locate(id);
    if (where.at === 'here') return;
    if (where.at === 'unreachable') return void (await unavailable(reply));
    const headers: Record<string, string> = { 'x-request-id': String(request.id) };
    for (const name of MCP_HEADERS) {
      const v = request.headers[name];
      if (typeof v === 'string') headers[name] = v;
    }
    let answer: PeerAnswer;
    try {
      answer = await cluster.call(where.node, 'POST', '/mcp', headers, request.body as string, false);
    } catch (err) {
      request.log.warn({ node: where.node, err: { message: (err as Error).message } }, 'replica unreachable');
      return void (await unavailable(reply));
    }
    request.log.info({ session_id: id, node: where.node, statusCode: answer.status }, 'MCP call forwarded');
    const type = answer.headers['content-type'];
    await reply.code(answer.status).header('content-type', typeof type === 'string' ? type : 'application/json').send(answer.text);
  };
}
