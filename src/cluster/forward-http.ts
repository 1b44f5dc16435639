// Forwarding one request to the replica that holds its session, as a byte pipe: the client's
// body streams to the peer as it arrives and the peer's answer streams back as it is written, so
// uploads, downloads, NDJSON execution streams and long polls are never held in memory whole;
// WebSocket upgrades (pty, ports/) become a TCP splice after the peer's 101.
//
// Written on node:http instead of a proxy library: what it must do is small (hop-by-hop headers,
// a connect timeout that does not cut idle streams, the cluster headers, a 503 when the peer is
// down) and the candidates either buffer or need their own server loop (http-proxy is
// unmaintained since 2020; @fastify/reply-from runs after body parsing, which is what this must
// avoid, and does not carry upgrades).
import http, { type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';

/**
 * Headers that describe one connection, not the message (RFC 9110 7.6.1). Host is kept: the owner
 * judges a WebSocket's Origin against the address the client asked, not its own.
 */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

export interface PeerTarget {
  /** Base URL of the peer, e.g. http://10.0.0.2:8000 */
  base: string;
  /** Keep-alive agent for plain requests (upgrades get a connection of their own). */
  agent: http.Agent;
  connectTimeoutMs: number;
}

export interface ForwardEvents {
  /** No answer came from the peer: must answer the client (503 NODE_UNAVAILABLE). */
  unavailable: (err: Error) => void;
  /** The peer's status, before its body flows. */
  status?: (status: number) => void;
}

function copyHeaders(headers: IncomingHttpHeaders, drop: ReadonlySet<string>): OutgoingHttpHeaders {
  const listed = new Set(String(headers.connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || drop.has(k) || (listed.has(k) && k !== 'upgrade')) continue;
    out[k] = v;
  }
  return out;
}

/** A request to the peer that fails with a timeout error if no connection is made in time; idle streams are not cut. */
function peerRequest(target: PeerTarget, method: string, path: string, headers: OutgoingHttpHeaders, agent: http.Agent | false): ClientRequest {
  const url = new URL(path, target.base);
  const client = url.protocol === 'https:' ? https : http;
  const req = client.request(url, { method, headers, agent });
  req.on('socket', (socket) => {
    if (!('connecting' in socket) || !socket.connecting) return;
    const timer = setTimeout(() => req.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), target.connectTimeoutMs);
    socket.once('connect', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
  });
  return req;
}

function forwardedFor(req: IncomingMessage): string {
  const prior = req.headers['x-forwarded-for'];
  const addr = req.socket.remoteAddress ?? '';
  return typeof prior === 'string' && prior !== '' ? `${prior}, ${addr}` : addr;
}

/**
 * Pipes req to the peer and the peer's answer to res. `onUnavailable` is called (and must answer)
 * when no answer came from the peer; once the answer has started, a failure ends res abruptly, as
 * the peer's own would. `onStatus` sees the peer's status before the body flows.
 */
export function forwardRequest(
  req: IncomingMessage, res: ServerResponse, target: PeerTarget, extraHeaders: Record<string, string>,
  on: ForwardEvents,
): void {
  // Expect: 100-continue was answered by this replica's own server already; the body just flows.
  const drop = new Set([...HOP_BY_HOP, 'expect', ...Object.keys(extraHeaders)]);
  const headers = { ...copyHeaders(req.headers, drop), 'x-forwarded-for': forwardedFor(req), ...extraHeaders };
  const upstream = peerRequest(target, req.method ?? 'GET', req.url ?? '/', headers, target.agent);
  let answered = false;
  upstream.on('response', (answer) => {
    answered = true;
    const status = answer.statusCode ?? 502;
    on.status?.(status);
    res.writeHead(status, copyHeaders(answer.headers, HOP_BY_HOP));
    answer.pipe(res);
    answer.on('error', () => res.destroy());
    answer.on('aborted', () => res.destroy());
  });
  upstream.on('error', (err) => {
    if (!answered && !res.headersSent) on.unavailable(err);
    else res.destroy();
  });
  // The client went away: so does the request to the peer (its execution stream is cancelled there).
  res.on('close', () => {
    if (!res.writableFinished) upstream.destroy();
  });
  req.on('error', () => upstream.destroy());
  req.pipe(upstream);
}

function headerLines(rawHeaders: string[], drop: ReadonlySet<string>): string {
  let out = '';
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    if (!drop.has(name.toLowerCase())) out += `${name}: ${rawHeaders[i + 1] ?? ''}\r\n`;
  }
  return out;
}

/** Most bytes of a refused upgrade's answer passed on (error bodies are small JSON). */
const MAX_REFUSAL_BYTES = 64 * 1024;

/**
 * Forwards a WebSocket (or any Upgrade) handshake: after the peer's 101 the two sockets are
 * spliced, each end closing the other. A refused upgrade's answer is passed on, then closed.
 */
export function forwardUpgrade(
  req: IncomingMessage, socket: Duplex, head: Buffer, target: PeerTarget, extraHeaders: Record<string, string>,
  on: { unavailable: (err: Error) => void },
): void {
  const drop = new Set(Object.keys(extraHeaders));
  const headers = { ...copyHeaders(req.headers, drop), connection: 'Upgrade', 'x-forwarded-for': forwardedFor(req), ...extraHeaders };
  const upstream = peerRequest(target, req.method ?? 'GET', req.url ?? '/', headers, false);
  let settled = false;
  const closeBoth = (other?: Duplex) => {
    socket.destroy();
    other?.destroy();
  };
  socket.on('error', () => upstream.destroy());
  upstream.on('upgrade', (answer, peerSocket, peerHead) => {
    settled = true;
    socket.write(`HTTP/1.1 ${answer.statusCode ?? 101} ${answer.statusMessage ?? 'Switching Protocols'}\r\n${headerLines(answer.rawHeaders, new Set())}\r\n`);
    if (peerHead.length > 0) socket.write(peerHead);
    if (head.length > 0) peerSocket.write(head);
    peerSocket.pipe(socket);
    socket.pipe(peerSocket);
    peerSocket.on('error', () => closeBoth(peerSocket));
    socket.on('error', () => closeBoth(peerSocket));
    peerSocket.on('close', () => closeBoth(peerSocket));
    socket.on('close', () => closeBoth(peerSocket));
  });
  upstream.on('response', (answer) => {
    settled = true;
    const chunks: Buffer[] = [];
    let size = 0;
    answer.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_REFUSAL_BYTES) chunks.push(c);
    });
    answer.on('end', () => {
      const body = Buffer.concat(chunks);
      const lines = headerLines(answer.rawHeaders, new Set(['connection', 'transfer-encoding', 'content-length', 'keep-alive']));
      if (socket.writable) socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\n${lines}content-length: ${body.length}\r\nconnection: close\r\n\r\n`), body]));
    });
    answer.on('error', () => socket.destroy());
  });
  upstream.on('error', (err) => {
    if (!settled) on.unavailable(err);
    else socket.destroy();
  });
  upstream.end();
}
