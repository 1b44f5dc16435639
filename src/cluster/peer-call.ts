// A small request to a peer whose answer is read whole: placement loads, owner look-ups, the
// listing of a peer's sessions, a create placed on a peer. All are small JSON by construction.
import http from 'node:http';
import https from 'node:https';
import type { PeerTarget } from './forward-http.js';

export interface PeerAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** Most bytes of such an answer (a listing of MAX_SESSIONS sessions is far smaller). */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/** Rejects when the peer cannot be reached, or (with totalMs) does not answer in time. */
export function callPeer(target: PeerTarget, method: string, path: string, headers: Record<string, string>, body: string | undefined, totalMs: number | null): Promise<PeerAnswer> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, target.base);
    const client = url.protocol === 'https:' ? https : http;
    const withBody = body === undefined ? headers : { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    const req = client.request(url, { method, headers: withBody, agent: target.agent });
    const timer = setTimeout(() => req.destroy(Object.assign(new Error('peer timeout'), { code: 'ETIMEDOUT' })), totalMs ?? target.connectTimeoutMs);
    req.on('socket', (socket) => {
      if (totalMs !== null) return;
      // Without a total deadline, only the connection is timed.
      if (!socket.connecting) clearTimeout(timer);
      else socket.once('connect', () => clearTimeout(timer));
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_ANSWER_BYTES) req.destroy(new Error('peer answer too large'));
        else chunks.push(c);
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 502, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    req.end(body);
  });
}
