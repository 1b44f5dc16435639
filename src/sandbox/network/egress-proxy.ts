// The egress proxy of an allowlist session: an HTTP/1.1 forward proxy on a unix socket (the
// session's netns helper pipes the sandbox's 127.0.0.1:3128 to it; the socket identifies the
// session, no header is trusted). Absolute-form `GET http://host/path` is forwarded without
// hop-by-hop headers, one request per upstream connection; `CONNECT host:port` becomes a raw tunnel.
//
// Written by hand with node:http/node:net and no proxy library, because this is the boundary:
// for every request the policy is read at that moment (a PATCH applies to the next connection),
// the name is decided on (egress-policy.ts), resolved once, every address the checks refuse is
// dropped, and the proxy connects to an address it checked — never to the name, so nothing
// resolves it again between the check and the connect (no DNS-rebinding window).
import dns from 'node:dns';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import type { Logger } from 'pino';
import { decide, normaliseHost, refusedAddressReason, type Cidr, type EgressPolicy } from './egress-policy.js';
import { endToEndHeaders, parseProxyTarget, rawRefusal, type ProxyTarget } from './egress-request.js';

/** Request line plus headers, in bytes; more is 431. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Client connections one proxy holds at once; one more is answered 503 and closed. */
export const MAX_CONNECTIONS_PER_PROXY = 256;
/** A tunnel or forwarded request with no byte either way for this long is closed. */
export const IDLE_TIMEOUT_MS = 60_000;
/** Per address tried; then the next address that passed the checks. */
export const CONNECT_TIMEOUT_MS = 10_000;
export const RESOLVE_TIMEOUT_MS = 10_000;
/** A name's addresses tried at most (after refused ones are dropped). */
export const MAX_ADDRESSES_TRIED = 8;

export interface EgressDecision {
  decision: 'allowed' | 'denied';
  host: string;
  port: number;
  reason: string | null;
}
export interface EgressProxy {
  readonly socketPath: string;
  close(): Promise<void>;
}
export interface EgressProxyOptions {
  socketPath: string;
  owner: { uid: number; gid: number } | null;
  policy: () => EgressPolicy;
  allowPrivate: readonly Cidr[];
  resolve?: (host: string) => Promise<string[]>;
  onDecision?: (d: EgressDecision) => void;
  logger: Pick<Logger, 'info' | 'warn'>;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    reason: string,
  ) {
    super(reason);
  }
}

async function defaultResolve(host: string): Promise<string[]> {
  return (await dns.promises.lookup(host, { all: true, verbatim: true })).map((a) => a.address);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} timed out`)), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function connectOnce(ip: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port, noDelay: true });
    const fail = (err: Error) => {
      s.destroy();
      reject(err);
    };
    s.setTimeout(CONNECT_TIMEOUT_MS, () => fail(new Error('connect timed out')));
    s.once('error', fail);
    s.once('connect', () => {
      s.removeListener('error', fail);
      s.setTimeout(0);
      resolve(s);
    });
  });
}

export async function startEgressProxy(opts: EgressProxyOptions): Promise<EgressProxy> {
  const resolve = opts.resolve ?? defaultResolve;
  const clients = new Set<net.Socket>();
  const upstreams = new Set<net.Socket>();
  let closed = false;

  const record = (kind: 'http' | 'connect', host: string, port: number, reason: string | null) => {
    const decision = reason === null ? 'allowed' : 'denied';
    opts.logger.info({ egress: decision, kind, host, port, reason }, 'egress'); // never the path or query
    opts.onDecision?.({ decision, host, port, reason });
  };

  /** Decide, resolve, check, connect: a socket to a checked address, or a Refusal. */
  async function open(kind: 'http' | 'connect', t: ProxyTarget): Promise<net.Socket> {
    const verdict = decide(opts.policy(), t.host, t.port);
    const h = normaliseHost(t.host);
    const host = 'error' in h ? t.host : h.host;
    const refuse = (status: number, reason: string) => {
      record(kind, host, t.port, reason);
      return new Refusal(status, reason);
    };
    if (!verdict.allowed || 'error' in h) throw refuse(403, verdict.reason);
    let addresses: string[];
    try {
      addresses = h.kind === 'ip' ? [h.host] : await withTimeout(resolve(h.host), RESOLVE_TIMEOUT_MS, `resolving ${h.host}`);
    } catch (err) {
      throw refuse(502, `could not resolve ${h.host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const refused: string[] = [];
    const passing = [...new Set(addresses)].filter((a) => {
      const why = refusedAddressReason(a, opts.allowPrivate);
      if (why !== null) refused.push(why);
      return why === null;
    });
    if (passing.length === 0) throw refuse(403, refused[0] ?? `${h.host} resolves to no address`);
    record(kind, host, t.port, null);
    let lastError = '';
    for (const ip of passing.slice(0, MAX_ADDRESSES_TRIED)) {
      if (closed) break;
      try {
        const s = await connectOnce(ip, t.port);
        if (closed) {
          s.destroy();
          break;
        }
        upstreams.add(s);
        s.once('close', () => upstreams.delete(s));
        s.setTimeout(IDLE_TIMEOUT_MS, () => s.destroy());
        return s;
      } catch (err) {
        lastError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      }
    }
    opts.logger.warn({ host, port: t.port, error: lastError }, 'egress connect failed');
    throw new Refusal(502, `could not connect to ${host}:${t.port}${lastError === '' ? '' : ` (${lastError})`}`);
  }

  // requireHostHeader: false — the absolute URL names the host; the received Host is replaced anyway.
  const server = http.createServer({ maxHeaderSize: MAX_HEAD_BYTES, requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: 5_000, requireHostHeader: false });

  server.on('connection', (s: net.Socket) => {
    if (closed || clients.size >= MAX_CONNECTIONS_PER_PROXY) {
      s.end(rawRefusal(503, `the egress proxy holds ${MAX_CONNECTIONS_PER_PROXY} connections already`));
      return;
    }
    clients.add(s);
    s.once('close', () => clients.delete(s));
  });

  server.on('clientError', (err: NodeJS.ErrnoException, s: net.Socket) => {
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const reason = status === 431 ? `request line and headers over ${MAX_HEAD_BYTES} bytes` : status === 408 ? 'request headers took too long' : 'malformed HTTP request';
    if (s.writable) s.end(rawRefusal(status, reason));
    else s.destroy();
  });

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const answer = (status: number, reason: string) => {
      const body = `${reason}\n`;
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
      res.end(body);
    };
    const target = parseProxyTarget(req.method ?? '', req.url ?? '');
    if ('error' in target) return answer(target.status, target.error);
    void open('http', target).then(
      (socket) => {
        const h = normaliseHost(target.host) as { kind: 'name' | 'ip'; host: string };
        const hostHeader = `${h.host.includes(':') ? `[${h.host}]` : h.host}${target.port === 80 ? '' : `:${target.port}`}`;
        const upstream = http.request({
          createConnection: () => socket, method: req.method, path: target.path, setHost: false,
          headers: ['Host', hostHeader, ...endToEndHeaders(req.rawHeaders, ['host'])],
        });
        upstream.on('response', (up) => {
          res.writeHead(up.statusCode ?? 502, up.statusMessage, endToEndHeaders(up.rawHeaders));
          up.pipe(res);
          up.on('error', () => res.destroy());
        });
        upstream.on('error', (err) => {
          if (!res.headersSent) answer(502, `upstream ${h.host}:${target.port} failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
          else res.destroy();
        });
        res.on('close', () => socket.destroy());
        req.pipe(upstream);
      },
      (err: unknown) => {
        if (err instanceof Refusal) answer(err.status, err.message);
        else res.destroy();
      },
    );
  });

  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    client.pause();
    client.on('error', () => client.destroy());
    const target = parseProxyTarget('CONNECT', req.url ?? '');
    if ('error' in target) return void client.end(rawRefusal(target.status, target.error));
    void open('connect', target).then(
      (upstream) => {
        if (client.destroyed) return void upstream.destroy();
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length > 0) upstream.write(head);
        client.setTimeout(IDLE_TIMEOUT_MS, () => client.destroy());
        // The upstream's end (or idle close) ends the client after what is buffered; an error cuts it.
        upstream.on('error', () => client.destroy());
        upstream.on('close', () => client.end());
        client.on('close', () => upstream.destroy());
        upstream.pipe(client);
        client.pipe(upstream);
      },
      (err: unknown) => {
        if (err instanceof Refusal && client.writable) client.end(rawRefusal(err.status, err.message));
        else client.destroy();
      },
    );
  });

  server.on('upgrade', (_req: http.IncomingMessage, s: net.Socket) => {
    s.end(rawRefusal(400, 'Upgrade through the proxy in absolute form is not supported; use CONNECT'));
  });

  await listenPrivately(server, opts.socketPath);
  if (opts.owner !== null) await fs.promises.chown(opts.socketPath, opts.owner.uid, opts.owner.gid);

  return {
    socketPath: opts.socketPath,
    async close() {
      if (closed) return;
      closed = true;
      const done = new Promise<void>((r) => server.close(() => r()));
      for (const s of [...clients, ...upstreams]) s.destroy();
      await done;
      await fs.promises.rm(opts.socketPath, { force: true });
    },
  };
}

/** Listens on socketPath with mode 0600 from the start (umask around the synchronous bind, then chmod). */
async function listenPrivately(server: http.Server, socketPath: string): Promise<void> {
  await fs.promises.rm(socketPath, { force: true });
  let previous: number | null = null;
  try {
    previous = process.umask(0o177);
  } catch {
    previous = null; // worker threads cannot change the umask; the chmod below still applies
  }
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.removeListener('error', reject);
        resolve();
      });
      if (previous !== null) process.umask(previous); // bind() has happened synchronously in listen()
      previous = null;
    });
  } finally {
    if (previous !== null) process.umask(previous);
  }
  await fs.promises.chmod(socketPath, 0o600);
}
