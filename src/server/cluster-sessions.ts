// POST /v1/sessions and GET /v1/sessions when the service runs as several replicas: a new session
// is placed on the replica with the most free capacity (a client-chosen id that a replica already
// holds goes to that one), and the listing merges every replica's. On a single replica, or for a
// request another replica forwarded, both are this replica's own (see cluster-plugin.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { PeerAnswer } from '../cluster/peer-call.js';
import { NodeUnavailableError, ShuttingDownError } from '../errors.js';
import type { SessionInfo } from '../sessions/session-manager.js';

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
