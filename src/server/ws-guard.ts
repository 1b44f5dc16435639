// Who may use the /v1 routes, by hand-callable checks: the onRequest hook of /v1 uses them, and so
// does the raw upgrade path of ports/ (src/server/upgrade.ts), where no Fastify hook runs.
//
// - The API key: `Authorization: Bearer <key>`; on a WebSocket upgrade of the pty and ports routes
//   also `?access_token=<key>` (browsers cannot set headers on a WebSocket). Compared as digests in
//   constant time.
// - The Origin of a WebSocket: a browser page on any site may open a WebSocket to 127.0.0.1, and
//   the browser sends its cookies-free but otherwise unrestricted request; so a request that carries
//   an Origin must come from the service's own host (Origin's host = Host) or from ALLOWED_ORIGINS.
//   Clients that are not browsers send no Origin and are not affected.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';

export function keyDigest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** True when the request is a WebSocket handshake. */
export function isWebSocketUpgrade(req: Pick<IncomingMessage, 'headers'>): boolean {
  return (req.headers.upgrade ?? '').toLowerCase() === 'websocket';
}

/** The `access_token` query parameter of a raw request URL, or null. */
export function accessTokenOf(url: string): string | null {
  const q = url.indexOf('?');
  if (q < 0) return null;
  try {
    return new URLSearchParams(url.slice(q + 1)).get('access_token');
  } catch {
    return null;
  }
}

/** The URL without its `access_token` query parameters (the rest byte for byte), so the key never travels on. */
export function withoutAccessToken(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const kept = url.slice(q + 1).split('&').filter((p) => p !== 'access_token' && !p.startsWith('access_token='));
  return kept.length > 0 ? `${url.slice(0, q)}?${kept.join('&')}` : url.slice(0, q);
}

/**
 * Whether the request carries the key (expected: its digest; null when no key is configured:
 * everything passes). `allowAccessToken`: the query parameter counts too.
 */
export function hasApiKey(expected: Buffer | null, req: { headers: IncomingHttpHeaders; url?: string | undefined }, allowAccessToken: boolean): boolean {
  if (expected === null) return true;
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  const given = m?.[1] ?? (allowAccessToken ? accessTokenOf(req.url ?? '') : null);
  return given !== null && given !== '' && timingSafeEqual(keyDigest(given), expected);
}

/** Whether a WebSocket handshake may go on, judged by its Origin header (see the file header). */
export function originAllowed(headers: IncomingHttpHeaders, allowed: readonly string[]): boolean {
  const origin = headers.origin;
  if (origin === undefined) return true;
  const lower = origin.toLowerCase();
  if (allowed.includes(lower)) return true;
  let host: string;
  try {
    const u = new URL(lower);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return false;
    host = u.host;
  } catch {
    return false; // "null" (sandboxed frames, file:) and anything else that is not an origin
  }
  return host !== '' && host === (headers.host ?? '').toLowerCase();
}
