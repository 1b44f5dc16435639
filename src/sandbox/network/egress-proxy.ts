// The egress proxy of an allowlist session: an HTTP/1.1 forward proxy on a unix socket (the
// session's netns helper pipes the sandbox's 127.0.0.1:3128 to it; the socket identifies the
// session, no header is trusted). Absolute-form `GET http://host/path` is forwarded without
// hop-by-hop headers, one request per upstream and per client connection (`Connection: close` both
// ways; the answer's head is parsed and rewritten here, its body relayed as bytes); `CONNECT
// host:port` becomes a raw tunnel.
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
import { endToEndHeaders, headerLines, isSafeRequestTarget, parseProxyTarget, parseResponseHead, rawRefusal, type ProxyTarget } from './egress-request.js';

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
/**
 * Upstream bytes are read into buffers this large (node's default is a new 64 KiB buffer per read):
 * fewer, larger reads and no allocation per read; at most READS_IN_FLIGHT of them per connection are
 * waiting to be written to the client (1 MiB per connection, as with 4 x 256 KiB before: 1 MiB
 * reads gave 0.05-0.17 more of the direct download rate in side-by-side runs here), and
 * SPARE_READ_BUFFERS free ones are kept for reuse.
 */
export const READ_BUFFER_BYTES = 1024 * 1024;
export const READS_IN_FLIGHT = 1;
export const SPARE_READ_BUFFERS = 16;
/** Stream buffering of the client sockets (request bodies and tunnel bytes going upstream). */
export const CLIENT_HIGH_WATER_MARK = 256 * 1024;

export interface EgressDecision {
  decision: 'allowed' | 'denied';
  host: string;
  port: number;
  reason: string | null;
}
/**
 * Passes a connected upstream socket to the session's network helper, which then moves the bytes
 * between it and the sandbox's connection itself (egress_relay.py); `sent` once the descriptor is
 * on its way (or could not be sent). 'tunnel': both ways; 'response': the upstream's bytes only.
 */
export type HandOver = (upstream: net.Socket, mode: 'tunnel' | 'response', sent: (err: Error | null) => void) => void;

export interface EgressProxy<P extends string | null = string | null> {
  /** Where it listens, or null when it only takes connections through accept(). */
  readonly socketPath: P;
  /** A connection from the session's helper: served like one on socketPath, and with handOver the relay after the decision moves to the helper. */
  accept(socket: net.Socket, handOver: HandOver | null): void;
  close(): Promise<void>;
}
export interface EgressProxyOptions<P extends string | null = string | null> {
  /** A unix socket to listen on (tests and the bench reach the proxy there), or null. */
  socketPath: P;
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

/** Free read buffers shared by all upstream connections (a buffer is reused only after its write completed). */
const spareReadBuffers: Buffer[] = [];
function takeReadBuffer(): Buffer {
  return spareReadBuffers.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
}

/**
 * What an upstream sends, read into reusable READ_BUFFER_BYTES buffers (net's `onread`) instead of a
 * fresh 64 KiB allocation per read, and handed to one consumer at a time. The consumer calls done()
 * once it no longer needs the chunk (the client write completed); reading stops while
 * READS_IN_FLIGHT chunks are outstanding, which is the backpressure toward a slow client.
 * Chunks that arrive before a consumer is set wait for it.
 */
class UpstreamBytes {
  socket: net.Socket | null = null;
  private consumer: ((chunk: Buffer, done: (err?: Error | null) => void) => void) | null = null;
  private waiting: Array<[Buffer, Buffer]> = [];
  private inFlight = 0;
  private stopped = false;
  private handedOver = false;
  readonly onread = { buffer: takeReadBuffer, callback: (n: number, buf: Buffer): boolean => this.received(n, buf) };

  consume(consumer: (chunk: Buffer, done: (err?: Error | null) => void) => void): void {
    this.consumer = consumer;
    for (const [chunk, buf] of this.waiting.splice(0)) this.hand(chunk, buf);
  }

  /** Reads no more, for good: the socket is being handed to the helper. What was read has gone to the consumer. */
  stop(): void {
    this.handedOver = true;
    this.socket?.pause(); // readStop on an onread socket
  }

  private received(n: number, buf: Buffer): boolean {
    if (this.handedOver) return false;
    this.inFlight += 1;
    if (this.consumer === null) this.waiting.push([buf.subarray(0, n), buf]);
    else this.hand(buf.subarray(0, n), buf);
    if (this.inFlight < READS_IN_FLIGHT) return true;
    this.stopped = true;
    return false;
  }

  private hand(chunk: Buffer, buf: Buffer): void {
    let released = false;
    this.consumer?.(chunk, (err) => {
      if (released) return;
      released = true;
      // After a failed write the buffer is left to the GC rather than reused.
      if (err == null && spareReadBuffers.length < SPARE_READ_BUFFERS) spareReadBuffers.push(buf);
      this.inFlight -= 1;
      if (this.stopped && !this.handedOver && this.inFlight < READS_IN_FLIGHT && this.socket !== null && !this.socket.destroyed) {
        this.stopped = false;
        this.socket.resume(); // restarts reading on an onread socket
      }
    });
  }
}

function connectOnce(ip: string, port: number, bytes: UpstreamBytes): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port, noDelay: true, onread: bytes.onread });
    bytes.socket = s;
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

/** The request body upstream: as received with a Content-Length, chunked again when it came chunked. */
function forwardBody(req: http.IncomingMessage, upstream: net.Socket, chunked: boolean): void {
  if (!chunked) return void req.pipe(upstream, { end: false });
  req.on('data', (d: Buffer) => {
    if (d.length === 0) return;
    upstream.write(`${d.length.toString(16)}\r\n`);
    upstream.write(d);
    if (!upstream.write('\r\n')) {
      req.pause();
      upstream.once('drain', () => req.resume());
    }
  });
  req.once('end', () => upstream.write('0\r\n\r\n'));
}

/** The response's Transfer-Encoding, several fields joined; null without one. */
function transferEncoding(raw: readonly string[]): string | null {
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]?.toLowerCase() === 'transfer-encoding') values.push(raw[i + 1] ?? '');
  return values.length === 0 ? null : values.join(', ');
}

export async function startEgressProxy<P extends string | null>(opts: EgressProxyOptions<P>): Promise<EgressProxy<P>> {
  const resolve = opts.resolve ?? defaultResolve;
  const clients = new Set<net.Socket>();
  const upstreams = new Set<net.Socket>();
  let closed = false;
  const handOvers = new WeakMap<net.Socket, HandOver>();

  const record = (kind: 'http' | 'connect', host: string, port: number, reason: string | null) => {
    const decision = reason === null ? 'allowed' : 'denied';
    opts.logger.info({ egress: decision, kind, host, port, reason }, 'egress'); // never the path or query
    opts.onDecision?.({ decision, host, port, reason });
  };

  /** Decide, resolve, check, connect: a socket to a checked address, or a Refusal. */
  async function open(kind: 'http' | 'connect', t: ProxyTarget): Promise<{ upstream: net.Socket; bytes: UpstreamBytes }> {
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
        const bytes = new UpstreamBytes();
        const s = await connectOnce(ip, t.port, bytes);
        if (closed) {
          s.destroy();
          break;
        }
        upstreams.add(s);
        s.once('close', () => upstreams.delete(s));
        s.setTimeout(IDLE_TIMEOUT_MS, () => s.destroy());
        s.resume(); // flowing, so 'end' is emitted; the bytes themselves go through `bytes`
        return { upstream: s, bytes };
      } catch (err) {
        lastError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      }
    }
    opts.logger.warn({ host, port: t.port, error: lastError }, 'egress connect failed');
    throw new Refusal(502, `could not connect to ${host}:${t.port}${lastError === '' ? '' : ` (${lastError})`}`);
  }

  /**
   * After the decision, the relay moves to the session's helper: reading the upstream stops (what
   * was read is already written to the client), the descriptor goes to the helper, which half-closes
   * its end once it has it. Until then what the client still sends (tunnel) goes upstream here; then
   * this process writes the last of it, ends the client and closes its own descriptor of the upstream
   * (no FIN: the helper's copy holds the connection, and the helper's life bounds it).
   */
  function handOff(client: net.Socket, upstream: net.Socket, bytes: UpstreamBytes, mode: 'tunnel' | 'response', handOver: HandOver, first: Buffer): void {
    bytes.stop();
    let writing = 0;
    let ended = false;
    const finish = () => {
      if (!ended || writing > 0) return;
      client.end();
      upstream.destroy();
    };
    const forward = (d: Buffer) => {
      if (d.length === 0) return;
      writing += 1;
      upstream.write(d, () => {
        writing -= 1;
        finish();
      });
    };
    forward(first);
    if (mode === 'tunnel') client.on('data', forward);
    client.once('end', () => {
      ended = true;
      finish();
    });
    client.resume();
    handOver(upstream, mode, (err) => {
      if (err === null) return;
      opts.logger.warn({ error: err.message }, 'egress hand-over failed');
      client.destroy();
      upstream.destroy();
    });
  }

  // requireHostHeader: false — the absolute URL names the host; the received Host is replaced anyway.
  const server = http.createServer({ highWaterMark: CLIENT_HIGH_WATER_MARK, maxHeaderSize: MAX_HEAD_BYTES, requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: 5_000, requireHostHeader: false });

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

  // One request per client connection: the request head and body are read by node:http (its
  // limits and framing), forwarded with `Connection: close`, and the upstream's answer is relayed as
  // bytes after its head is checked and rewritten here; the client connection closes after it.
  const busy = new WeakSet<net.Socket>();
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const client = req.socket;
    let headSent = false;
    const answer = (status: number, reason: string) => {
      if (headSent || res.headersSent || client.destroyed) return void client.destroy();
      headSent = true;
      const body = `${reason}\n`;
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
      res.end(body);
    };
    // A request pipelined behind the one in flight is not acted on: the connection closes after the
    // first answer (which says so), and the client sends it again on a new one.
    if (busy.has(client)) return;
    busy.add(client);
    const target = parseProxyTarget(req.method ?? '', req.url ?? '');
    if ('error' in target) return answer(target.status, target.error);
    if (!isSafeRequestTarget(target.path)) return answer(400, 'the URL has characters that must be percent-encoded');
    const chunked = req.headers['transfer-encoding'] !== undefined;
    // Expect is answered by node:http already (100 Continue); Content-Length means nothing beside chunked.
    const forwarded = headerLines(endToEndHeaders(req.rawHeaders, ['host', 'expect', ...(chunked ? ['content-length'] : [])]));
    if (forwarded === null) return answer(400, 'malformed request header');
    void open('http', target).then(
      ({ upstream, bytes }) => {
        if (client.destroyed) return void upstream.destroy();
        const h = normaliseHost(target.host) as { kind: 'name' | 'ip'; host: string };
        const hostHeader = `${h.host.includes(':') ? `[${h.host}]` : h.host}${target.port === 80 ? '' : `:${target.port}`}`;
        const failed = (why: string) => `upstream ${h.host}:${target.port} ${why}`;
        upstream.write(`${req.method} ${target.path} HTTP/1.1\r\nHost: ${hostHeader}\r\n${forwarded}${chunked ? 'Transfer-Encoding: chunked\r\n' : ''}Connection: close\r\n\r\n`);
        forwardBody(req, upstream, chunked);
        let ended = false;
        let handedOff = false;
        let pending: Buffer = Buffer.alloc(0);
        const relay = (chunk: Buffer, done: (err?: Error | null) => void) => void client.write(chunk, done);
        const readHead = (chunk: Buffer, done: () => void) => {
          pending = Buffer.concat([pending, chunk]); // a copy: the read buffer is reused after done()
          done();
          if (headSent) return;
          for (;;) {
            const head = parseResponseHead(pending, MAX_HEAD_BYTES);
            if (head === null) return;
            if ('error' in head) {
              upstream.destroy();
              return answer(502, failed(`failed: ${head.error}`));
            }
            if (head.status === 101) {
              upstream.destroy();
              return answer(502, failed('switched protocols, which the proxy does not relay'));
            }
            pending = pending.subarray(head.length);
            if (head.status < 200) continue; // interim answers (100, 103) are not relayed
            const te = transferEncoding(head.raw);
            const lines = headerLines(endToEndHeaders(head.raw, te === null ? [] : ['content-length']));
            if (lines === null) {
              upstream.destroy();
              return answer(502, failed('sent a malformed header'));
            }
            headSent = true;
            // The body is relayed in the upstream's own framing: a transfer coding is declared again for this hop.
            client.write(`HTTP/1.1 ${head.status} ${head.reason}\r\n${lines}${te === null ? '' : `Transfer-Encoding: ${te}\r\n`}Connection: close\r\n\r\n`);
            if (pending.length > 0) client.write(pending);
            pending = Buffer.alloc(0);
            bytes.consume(relay);
            // The request went out whole: the answer's body can flow helper-side (never a pipelined request).
            const handOver = handOvers.get(client);
            if (handOver !== undefined && req.readableEnded && upstream.writableLength === 0 && !client.readableEnded) {
              handedOff = true;
              handOff(client, upstream, bytes, 'response', handOver, Buffer.alloc(0));
            }
            return;
          }
        };
        bytes.consume(readHead);
        upstream.once('end', () => {
          ended = true;
          if (handedOff) return;
          if (!headSent) answer(502, failed('closed without answering'));
          else client.end();
        });
        upstream.once('close', () => {
          if (handedOff) return;
          if (!headSent) answer(502, failed('closed without answering'));
          else if (!ended) client.destroy();
        });
        upstream.on('error', (err: NodeJS.ErrnoException) => {
          if (handedOff) return void client.destroy();
          if (!headSent) answer(502, failed(`failed: ${err.code ?? err.message}`));
          else client.destroy();
        });
        client.once('close', () => upstream.destroy());
      },
      (err: unknown) => {
        if (err instanceof Refusal) answer(err.status, err.message);
        else client.destroy();
      },
    );
  });

  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    client.pause();
    client.on('error', () => client.destroy());
    const target = parseProxyTarget('CONNECT', req.url ?? '');
    if ('error' in target) return void client.end(rawRefusal(target.status, target.error));
    void open('connect', target).then(
      ({ upstream, bytes }) => {
        if (client.destroyed) return void upstream.destroy();
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.on('error', () => client.destroy());
        client.on('close', () => upstream.destroy());
        bytes.consume((chunk, done) => void client.write(chunk, done));
        const handOver = handOvers.get(client);
        if (handOver !== undefined && !client.readableEnded) return handOff(client, upstream, bytes, 'tunnel', handOver, head);
        if (head.length > 0) upstream.write(head);
        client.setTimeout(IDLE_TIMEOUT_MS, () => client.destroy());
        // The upstream's end (or idle close) ends the client after what is buffered; an error cuts it.
        upstream.on('close', () => client.end());
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

  if (opts.socketPath !== null) {
    await listenPrivately(server, opts.socketPath);
    if (opts.owner !== null) await fs.promises.chown(opts.socketPath, opts.owner.uid, opts.owner.gid);
  }
  const socketPath = opts.socketPath;

  return {
    socketPath,
    accept(socket, handOver) {
      if (handOver !== null) handOvers.set(socket, handOver);
      server.emit('connection', socket);
    },
    async close() {
      if (closed) return;
      closed = true;
      const done = new Promise<void>((r) => server.close(() => r()));
      for (const s of [...clients, ...upstreams]) s.destroy();
      await done;
      if (socketPath !== null) await fs.promises.rm(socketPath, { force: true });
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
