// The HTTP side of running as several replicas (src/cluster/ has the rest):
// - an onRequest hook of /v1, after the API-key check and before any body is read, that pipes a
//   request for another replica's session to it (or answers 503 NODE_UNAVAILABLE);
// - the same for WebSocket upgrades, before the pty and ports/ handlers see them;
// - POST /v1/sessions placed on the replica with the most free capacity, GET /v1/sessions merged;
// - /cluster/v1/*, the replica-to-replica routes (load, "do you hold this session?"), which like
//   every forwarded request need the cluster secret.
// None of it exists on a single replica (no peers): the service behaves as it always did.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { Cluster } from '../cluster/cluster.js';
import { hasClusterSecret, saysForwarded, secretDigest } from '../cluster/cluster-secret.js';
import { clusterNodes, isClustered, sessionIdOfUrl } from '../cluster/nodes.js';
import type { PeerAnswer } from '../cluster/peer-call.js';
import { AppError, ClusterUnauthorizedError, NodeUnavailableError, SessionNotFoundError, ShuttingDownError } from '../errors.js';
import type { SessionInfo } from '../sessions/session-manager.js';
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

/** The onRequest hook of /v1 that serves a forwarded request here and forwards one for another replica's session. */
export function clusterRouting(cluster: Cluster, deps: AppDeps) {
  const expected = secretDigest(deps.config.clusterSecret ?? '');
  const retryAfter = deps.config.nodeRetryAfterSeconds;
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (saysForwarded(request.headers)) {
      if (!hasClusterSecret(expected, request.headers)) throw new ClusterUnauthorizedError();
      request.clusterForwarded = true;
      return;
    }
    const id = (request.params as { id?: unknown } | undefined)?.id;
    if (typeof id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) return;
    const where = await cluster.locate(id);
    if (where.at === 'here') return;
    if (where.at === 'unreachable') throw new NodeUnavailableError(retryAfter);
    const node = where.node;
    request.log.debug({ session_id: id, node }, 'forwarding to the replica that holds the session');
    reply.hijack();
    cluster.forward(node, request.raw, reply.raw, {
      unavailable: (err) => {
        request.log.warn({ node, err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'replica unreachable');
        writeRawError(reply.raw, new NodeUnavailableError(retryAfter));
      },
      status: (status) => {
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
    if (where.at === 'unreachable') rawErrorResponse(socket, new NodeUnavailableError(retryAfter));
    else cluster.forwardUpgrade(where.node, req, socket, head, { unavailable: () => rawErrorResponse(socket, new NodeUnavailableError(retryAfter)) });
    return true;
  };
}

/** Headers of the client's request that a call to a peer on its behalf carries (the API key). */
function onBehalfOf(request: FastifyRequest): Record<string, string> {
  const auth = request.headers.authorization;
  return { ...(auth !== undefined ? { authorization: auth } : {}), 'x-request-id': String(request.id) };
}

/**
 * Where POST /v1/sessions goes: null to create here, else the peer's answer. A client-chosen id
 * that a replica already holds goes to that replica (the create is idempotent there).
 */
export async function createOnPeer(app: FastifyInstance, request: FastifyRequest, body: { session_id?: string | undefined }): Promise<PeerAnswer | null> {
  const { cluster } = app;
  if (cluster === null) return null;
  const { sessions } = app.deps;
  const id = body.session_id;
  const draining = app.deps.shuttingDown?.() === true;
  if (request.clusterForwarded) {
    // Placed here by a peer that saw this replica before its drain began: it takes no new session.
    if (draining && !(id !== undefined && sessions.has(id))) throw new ShuttingDownError();
    return null;
  }
  let node: string | null = null;
  if (id !== undefined) {
    const where = await cluster.locate(id);
    if (where.at === 'unreachable') throw new NodeUnavailableError(app.deps.config.nodeRetryAfterSeconds);
    if (where.at === 'peer') node = where.node;
    else if (sessions.has(id)) return null;
  }
  node ??= await cluster.place();
  if (node === null && draining) throw new ShuttingDownError();
  if (node === null || node === cluster.self) return null;
  try {
    const answer = await cluster.call(node, 'POST', '/v1/sessions', onBehalfOf(request), JSON.stringify(body), false);
    if (answer.status === 503 && !draining) return null; // it began draining since it said how loaded it is: here will do
    if (id !== undefined && answer.status < 300) cluster.remember(id, node);
    request.log.info({ node, status: answer.status }, 'session create placed on another replica');
    return answer;
  } catch (err) {
    request.log.warn({ node, err: { message: (err as Error).message } }, 'placed replica unreachable');
    if (draining) throw new NodeUnavailableError(app.deps.config.nodeRetryAfterSeconds);
    return null; // it went down since it said how loaded it is: here will do
  }
}

/** Sends a peer's answer on as it came. */
export function relayAnswer(reply: FastifyReply, answer: PeerAnswer): FastifyReply {
  const retry = answer.headers['retry-after'];
  if (typeof retry === 'string') void reply.header('retry-after', retry);
  return reply.code(answer.status).type('application/json; charset=utf-8').send(answer.text);
}

/** GET /v1/sessions over every replica: this one's sessions, each answering peer's, and which did not answer. */
export async function listAcrossReplicas(app: FastifyInstance, request: FastifyRequest): Promise<{ sessions: SessionInfo[]; unavailable_nodes?: string[] }> {
  const local = app.deps.sessions.list();
  const { cluster } = app;
  if (cluster === null || request.clusterForwarded) return { sessions: local };
  const unavailable: string[] = [];
  const lists = await Promise.all(cluster.peerIds.map(async (node) => {
    try {
      const answer = await cluster.call(node, 'GET', '/v1/sessions', onBehalfOf(request));
      if (answer.status !== 200) throw new Error(`status ${answer.status}`);
      return (JSON.parse(answer.text) as { sessions: SessionInfo[] }).sessions;
    } catch (err) {
      request.log.warn({ node, err: { message: (err as Error).message } }, 'replica did not list its sessions');
      unavailable.push(node);
      return [];
    }
  }));
  const sessions = [local, ...lists].flat().sort((a, b) => a.created_at.localeCompare(b.created_at) || a.session_id.localeCompare(b.session_id));
  return { sessions, unavailable_nodes: unavailable.sort() };
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
