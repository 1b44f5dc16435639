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

/** Header names are tokens (RFC 9110 §5.6.2); values have no CR, LF or NUL. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\r\n\0]/;

export interface ResponseHead {
  readonly status: number;
  readonly reason: string;
  /** name, value, name, value... as received. */
  readonly raw: string[];
  /** Bytes of the head including the blank line; the body starts there. */
  readonly length: number;
}

/**
 * An upstream's status line and headers from the start of `buf`: null while the blank line has not
 * arrived (the caller stops at `max` bytes), an error for anything that is not a plain HTTP/1.x head.
 * Strict: no obs-fold, no space before the colon, token names, a three-digit status.
 */
export function parseResponseHead(buf: Buffer, max: number): ResponseHead | { error: string } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return buf.length > max ? { error: `the upstream's response head is over ${max} bytes` } : null;
  if (end + 4 > max) return { error: `the upstream's response head is over ${max} bytes` };
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] ([1-9][0-9]{2})(?: ([^\r\n\0]*))?$/.exec(lines[0] ?? '');
  if (m === null) return { error: 'the upstream sent a malformed status line' };
  const raw: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!TOKEN.test(name) || BAD_VALUE.test(value)) return { error: 'the upstream sent a malformed header line' };
    raw.push(name, value);
  }
  return { status: Number(m[1]), reason: m[2] ?? '', raw, length: end + 4 };
}

/** name, value pairs as header lines; null when a name or value could split the head. */
export function headerLines(raw: readonly string[]): string | null {
  let out = '';
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    const value = raw[i + 1] ?? '';
    if (!TOKEN.test(name) || BAD_VALUE.test(value)) return null;
    out += `${name}: ${value}\r\n`;
  }
  return out;
}

/** The origin-form target sent upstream: visible ASCII only, so it cannot end the request line early. */
export function isSafeRequestTarget(path: string): boolean {
  return /^[\x21-\x7e]+$/.test(path);
}
