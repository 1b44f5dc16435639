// Local servers and clients for the egress proxy tests (and bench/lib/phase-egress.ts): an HTTP
// server that echoes what it got, a TLS server with a certificate made at test time by openssl,
// requests through the proxy's unix socket, and a TCP relay so ordinary clients (curl, urllib)
// can use it as HTTP_PROXY. Everything listens on 127.0.0.x only; no name is ever resolved.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';

export interface Echo {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  raw: string[];
  /** The server's own address: which of several 127.0.0.x servers answered. */
  local: string;
  body: string;
}

export interface Local {
  port: number;
  hits: number;
  close(): Promise<void>;
}

function closeServer(s: net.Server): Promise<void> {
  return new Promise((r) => {
    if ('closeAllConnections' in s) (s as http.Server).closeAllConnections();
    s.close(() => r());
  });
}

function listen(s: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, host, () => resolve((s.address() as net.AddressInfo).port));
  });
}

/** GET /bytes/N answers N zero bytes, /redirect?u=URL a 302 to URL; anything else is a JSON Echo. */
export async function startEchoServer(host = '127.0.0.1', port = 0): Promise<Local> {
  const big = Buffer.alloc(1024 * 1024);
  const state = { hits: 0 };
  const srv = http.createServer((req, res) => {
    state.hits += 1;
    const bytes = /^\/bytes\/([0-9]+)$/.exec(req.url ?? '');
    if (bytes) {
      let left = Number(bytes[1]);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, big.length);
          left -= n;
          if (!res.write(n === big.length ? big : big.subarray(0, n))) return void res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    const redirect = /^\/redirect\?u=(.+)$/.exec(req.url ?? '');
    if (redirect) {
      res.writeHead(302, { location: decodeURIComponent(redirect[1] ?? '') });
      return void res.end();
    }
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const echo: Echo = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, raw: req.rawHeaders, local: req.socket.localAddress ?? '', body };
      res.writeHead(200, { 'content-type': 'application/json', connection: 'x-listed', 'x-listed': 'drop-me', 'x-upstream': 'kept' });
      res.end(JSON.stringify(echo));
    });
  });
  const p = await listen(srv, host, port);
  return { port: p, get hits() { return state.hits; }, close: () => closeServer(srv) };
}

export interface Cert { key: string; cert: string; dir: string }

/** A self-signed EC certificate for `name`, made by openssl now. */
export function makeCert(dir: string, name: string): Cert {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`], { stdio: 'pipe' });
  return { key: fs.readFileSync(key, 'utf8'), cert: fs.readFileSync(cert, 'utf8'), dir };
}

/** HTTPS on 127.0.0.1 answering "tls ok <path>". */
export async function startTlsServer(c: Cert): Promise<Local> {
  const state = { hits: 0 };
  const srv = http.createServer((req, res) => {
    state.hits += 1;
    res.end(`tls ok ${req.url ?? ''}`);
  });
  const tlsSrv = tls.createServer({ key: c.key, cert: c.cert }, (s) => srv.emit('connection', s));
  const p = await listen(tlsSrv, '127.0.0.1', 0);
  return { port: p, get hits() { return state.hits; }, close: async () => { srv.closeAllConnections(); await closeServer(tlsSrv); } };
}

export interface Answer { status: number; headers: http.IncomingHttpHeaders; body: string }

/** An absolute-form request through the proxy's unix socket (Node's client, as HTTP_PROXY users do). */
export function viaProxy(socketPath: string, url: string, headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ createConnection: () => net.connect(socketPath), method, path: url, headers, setHost: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Writes raw bytes to the proxy and reads until the server closes or `until` matches. */
export function rawExchange(socketPath: string, bytes: string, until?: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath, () => s.write(bytes));
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (until?.test(got)) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

/** `CONNECT target` on a fresh connection: the socket after the proxy's answer head, and that head. */
export function openTunnel(socketPath: string, target: string): Promise<{ socket: net.Socket; head: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath, () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
    let got = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.removeListener('data', onData);
      s.pause();
      const rest = got.subarray(end + 4);
      if (rest.length > 0) s.unshift(rest);
      resolve({ socket: s, head: got.subarray(0, end).toString('latin1') });
    };
    s.on('data', onData);
    s.on('error', reject);
  });
}

/** 127.0.0.1:<port> piped to the unix socket, so a TCP-only client can use the proxy. */
export async function startRelay(socketPath: string): Promise<Local> {
  const conns = new Set<net.Socket>();
  const srv = net.createServer((c) => {
    const u = net.connect(socketPath);
    conns.add(c).add(u);
    c.pipe(u).pipe(c);
    const end = () => {
      c.destroy();
      u.destroy();
      conns.delete(c);
      conns.delete(u);
    };
    c.on('error', end).on('close', end);
    u.on('error', end).on('close', end);
  });
  const p = await listen(srv, '127.0.0.1', 0);
  return { port: p, hits: 0, close: async () => { for (const s of conns) s.destroy(); await closeServer(srv); } };
}
