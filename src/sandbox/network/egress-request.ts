// What the egress proxy reads from a request line and headers, as pure functions: the target of
// an absolute-form request (`GET http://host:port/path`) or a CONNECT (`host:port`), hop-by-hop
// header removal (RFC 9110 §7.6.1), and the raw one-line refusals.
//
// Hand-written rather than `new URL()`: WHATWG URL parsing rewrites hosts (`http://0177.0.0.1/`
// becomes 127.0.0.1, `%`-escapes are decoded) and accepts schemes and forms a proxy must refuse.
// Here the authority is split exactly as sent and handed, unchanged, to the policy (which
// normalises and refuses numeric forms) — the host the policy decides on is the host connected to.

export interface ProxyTarget {
  /** The host exactly as the request named it (IPv6 still in brackets). */
  readonly host: string;
  readonly port: number;
  /** Origin-form path and query for the upstream request ('/' when the URL had none); '' for CONNECT. */
  readonly path: string;
}
export interface TargetError {
  readonly status: 400;
  readonly error: string;
}

/** `host[:port]` or `[v6][:port]`; without a port, defaultPort (null: a port is required). */
export function parseAuthority(text: string, defaultPort: number | null): { host: string; port: number } | TargetError {
  const bad = (error: string): TargetError => ({ status: 400, error });
  let host = text;
  let port: string | null = null;
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    if (end < 0) return bad('an IPv6 literal has no closing "]"');
    host = text.slice(0, end + 1);
    const rest = text.slice(end + 1);
    if (rest !== '' && !rest.startsWith(':')) return bad('unexpected text after "]"');
    if (rest !== '') port = rest.slice(1);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon !== text.indexOf(':')) return bad('an IPv6 literal must be in brackets');
    if (colon >= 0) [host, port] = [text.slice(0, colon), text.slice(colon + 1)];
  }
  if (host === '' || host === '[]') return bad('the target has no host');
  if (port === null) return defaultPort === null ? bad('CONNECT needs host:port') : { host, port: defaultPort };
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return bad(`bad port ${JSON.stringify(port)}`);
  return { host, port: Number(port) };
}

/** The target of a proxy request: absolute-form http: for ordinary methods, authority-form for CONNECT. */
export function parseProxyTarget(method: string, url: string): ProxyTarget | TargetError {
  const bad = (error: string): TargetError => ({ status: 400, error });
  if (method === 'CONNECT') {
    const a = parseAuthority(url, null);
    return 'error' in a ? a : { ...a, path: '' };
  }
  if (url.startsWith('/') || url === '*') return bad('not a proxy request: send an absolute URL (GET http://host/path) or CONNECT host:port');
  const m = /^http:\/\/([^/?#]*)([/?][^#]*)?$/i.exec(url);
  if (m === null) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(url) && !/^http:/i.test(url)) return bad('only http: URLs are proxied in absolute form; HTTPS goes through CONNECT');
    return bad('malformed absolute URL');
  }
  const authority = m[1] ?? '';
  if (authority.includes('@')) return bad('user info in the URL is refused');
  const a = parseAuthority(authority, 80);
  if ('error' in a) return a;
  const rest = m[2] ?? '';
  return { ...a, path: rest.startsWith('/') ? rest : `/${rest}` };
}

/** Headers that concern one connection only; never forwarded, either way. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** rawHeaders (name, value, name, value...) without hop-by-hop headers, those named in Connection, and `drop`. */
export function endToEndHeaders(raw: readonly string[], drop: readonly string[] = []): string[] {
  const skip = new Set([...HOP_BY_HOP, ...drop]);
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]?.toLowerCase() !== 'connection') continue;
    for (const token of (raw[i + 1] ?? '').split(',')) skip.add(token.trim().toLowerCase());
  }
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    if (!skip.has(name.toLowerCase())) out.push(name, raw[i + 1] ?? '');
  }
  return out;
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 403: 'Forbidden', 408: 'Request Timeout', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 503: 'Service Unavailable',
};

/** A complete HTTP/1.1 answer with a text/plain one-line reason; the connection closes after it. */
export function rawRefusal(status: number, reason: string): string {
  const body = `${reason.replace(/[\r\n]+/g, ' ')}\n`;
  return `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}
