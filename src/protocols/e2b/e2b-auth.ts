// Who may use the E2B routes. The control plane takes the service's API key in `X-API-KEY` (what
// the SDKs send from E2B_API_KEY). The sandbox side takes `X-Access-Token`: the `envdAccessToken`
// the create and connect answers hand out, an HMAC of the session id under the API key. It opens
// one session only, says nothing about the key, and needs no storage (it survives a restart);
// deleting the session is what revokes it. With no API key set, neither is checked (as on /v1).
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

export interface E2bAuth {
  /** Whether a control-plane request may pass. */
  apiKeyOk(headers: IncomingHttpHeaders): boolean;
  /** The token of a session's sandbox side; undefined when no API key is set (nothing to present). */
  accessToken(sessionId: string): string | undefined;
  /** Whether a sandbox-side request carries its session's token. */
  accessTokenOk(sessionId: string, headers: IncomingHttpHeaders): boolean;
}

function header(headers: IncomingHttpHeaders, name: string): string | null {
  const v = headers[name];
  return typeof v === 'string' && v !== '' ? v : null;
}

function same(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

export function createE2bAuth(apiKey: string | undefined): E2bAuth {
  if (apiKey === undefined) return { apiKeyOk: () => true, accessToken: () => undefined, accessTokenOk: () => true };
  const token = (sessionId: string) => createHmac('sha256', apiKey).update(`e2b-envd-access-token\0${sessionId}`).digest('hex');
  return {
    apiKeyOk: (headers) => {
      const given = header(headers, 'x-api-key');
      return given !== null && same(given, apiKey);
    },
    accessToken: token,
    accessTokenOk: (sessionId, headers) => {
      const given = header(headers, 'x-access-token');
      return given !== null && same(given, token(sessionId));
    },
  };
}
