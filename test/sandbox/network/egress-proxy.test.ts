// The egress proxy end to end against local servers on 127.0.0.x: names resolve through an
// injected resolver (nothing outside is ever asked), and loopback is reachable only where the
// test's allowPrivate says so, exactly as an operator's EGRESS_ALLOW_PRIVATE_CIDRS would.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { parseCidrs, type EgressPolicy } from '../../../src/sandbox/network/egress-policy.js';
import { MAX_CONNECTIONS_PER_PROXY, MAX_HEAD_BYTES, startEgressProxy, type EgressDecision, type EgressProxy } from '../../../src/sandbox/network/egress-proxy.js';
import { makeCert, openTunnel, rawExchange, startEchoServer, startTlsServer, viaProxy, type Cert, type Echo, type Local } from './egress-fixtures.js';

const NAMES: Record<string, string[]> = {
  'allowed.test': ['127.0.0.1'],
  'other.test': ['127.0.0.1'],
  'mixed.test': ['127.0.0.3', '127.0.0.1'], // 127.0.0.3 stands for a private address the operator did not open
  'only-refused.test': ['169.254.169.254', '::ffff:127.0.0.2', '10.0.0.1'],
};
const resolved: string[] = [];
async function resolve(host: string): Promise<string[]> {
  resolved.push(host);
  const a = NAMES[host];
  if (a === undefined) throw Object.assign(new Error(`no such test name ${host}`), { code: 'ENOTFOUND' });
  return a;
}

let dir: string;
let cert: Cert;
let echo: Local;
let decoy: Local; // same port on 127.0.0.3: must never be reached
let tlsServer: Local;
const proxies: Array<EgressProxy<string>> = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-proxy-'));
  cert = makeCert(dir, 'allowed.test');
  echo = await startEchoServer('127.0.0.1');
  decoy = await startEchoServer('127.0.0.3', echo.port);
  tlsServer = await startTlsServer(cert);
});
afterAll(async () => {
  await Promise.all([echo.close(), decoy.close(), tlsServer.close()]);
  fs.rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

interface Started { proxy: EgressProxy<string>; decisions: EgressDecision[]; logs: string[]; setPolicy(p: EgressPolicy): void }
let seq = 0;
async function start(policy: EgressPolicy, allowPrivate = ['127.0.0.1/32'], owner: { uid: number; gid: number } | null = null): Promise<Started> {
  let current = policy;
  const decisions: EgressDecision[] = [];
  const logs: string[] = [];
  const line = (o: object, m: string) => void logs.push(`${JSON.stringify(o)} ${m}`);
  const proxy = await startEgressProxy({
    socketPath: path.join(dir, `egress-${++seq}.sock`), owner, policy: () => current, allowPrivate: parseCidrs(allowPrivate),
    resolve, onDecision: (d) => decisions.push(d), logger: { info: line, warn: line } as never,
  });
  proxies.push(proxy);
  return { proxy, decisions, logs, setPolicy: (p) => (current = p) };
}
const allowEcho = (): EgressPolicy => ({ allow: [`allowed.test:${echo.port}`, `mixed.test:${echo.port}`, `allowed.test:${tlsServer.port}`], deny: [] });

describe('absolute-form HTTP', () => {
  test('a GET goes through, hop-by-hop headers removed, Host from the URL, the log names host and port only', async () => {
    const { proxy, decisions, logs } = await start(allowEcho());
    const r = await viaProxy(proxy.socketPath, `http://Allowed.Test:${echo.port}/hello/secret-path?token=s3cret`, {
      Host: 'wrong.example', 'Proxy-Authorization': 'Basic eDp5', 'Proxy-Connection': 'keep-alive', Connection: 'x-hop', 'X-Hop': '1', 'X-End': 'kept',
    });
    expect(r.status).toBe(200);
    const got = JSON.parse(r.body) as Echo;
    expect(got.url).toBe('/hello/secret-path?token=s3cret');
    expect(got.headers.host).toBe(`allowed.test:${echo.port}`);
    expect(got.headers['x-end']).toBe('kept');
    for (const h of ['proxy-authorization', 'proxy-connection', 'x-hop']) expect(got.headers[h], h).toBeUndefined();
    expect(r.headers['x-upstream']).toBe('kept'); // an ordinary header comes back…
    expect(r.headers['x-listed']).toBeUndefined(); // …one the upstream's Connection names does not
    expect(decisions).toEqual([{ decision: 'allowed', host: 'allowed.test', port: echo.port, reason: null }]);
    expect(logs.join('\n')).toContain('"host":"allowed.test"');
    expect(logs.join('\n')).not.toMatch(/secret-path|s3cret/);
  });

  test('request bodies go upstream, with a length or chunked', async () => {
    const { proxy } = await start(allowEcho());
    const sized = await viaProxy(proxy.socketPath, `http://allowed.test:${echo.port}/post`, { 'content-length': '5' }, 'POST', 'hello');
    expect(JSON.parse(sized.body)).toMatchObject({ method: 'POST', body: 'hello' });
    const chunked = await viaProxy(proxy.socketPath, `http://allowed.test:${echo.port}/put`, { 'transfer-encoding': 'chunked' }, 'PUT', 'x'.repeat(100_000));
    expect((JSON.parse(chunked.body) as Echo).body).toHaveLength(100_000);
  });

  test('a chunked answer after an interim 103 is relayed as bytes, its hop-by-hop headers dropped, the connection closed after it', async () => {
    const raw = net.createServer((s) => s.once('data', () => s.end(
      'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n'
      + 'HTTP/1.1 200 OK\r\nConnection: x-gone\r\nX-Gone: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\nX-Kept: yes\r\n\r\n'
      + '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n')));
    const port = await new Promise<number>((r) => raw.listen(0, '127.0.0.1', () => r((raw.address() as net.AddressInfo).port)));
    try {
      const { proxy } = await start({ allow: [`allowed.test:${port}`], deny: [] });
      const r = await viaProxy(proxy.socketPath, `http://allowed.test:${port}/chunks`);
      expect(r.status).toBe(200);
      expect(r.body).toBe('hello world');
      expect(r.headers['x-kept']).toBe('yes');
      for (const h of ['x-gone', 'keep-alive', 'content-length']) expect(r.headers[h], h).toBeUndefined();
      expect(r.headers.connection).toBe('close');
      const answer = await rawExchange(proxy.socketPath, `GET http://allowed.test:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
      expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(answer).not.toContain('103');
    } finally {
      await new Promise((r) => raw.close(r));
    }
  });

  test('a malformed answer from upstream is a 502', async () => {
    const raw = net.createServer((s) => s.once('data', () => s.end('HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\nbody')));
    const port = await new Promise<number>((r) => raw.listen(0, '127.0.0.1', () => r((raw.address() as net.AddressInfo).port)));
    try {
      const { proxy } = await start({ allow: [`allowed.test:${port}`], deny: [] });
      const r = await viaProxy(proxy.socketPath, `http://allowed.test:${port}/`);
      expect(r.status).toBe(502);
      expect(r.body).toMatch(/malformed header line/);
    } finally {
      await new Promise((r) => raw.close(r));
    }
  });

  test('a name resolving to loopback is refused without allowPrivate, 403 with a one-line reason', async () => {
    const { proxy, decisions } = await start(allowEcho(), []);
    const hits = echo.hits;
    const r = await viaProxy(proxy.socketPath, `http://allowed.test:${echo.port}/`);
    expect(r.status).toBe(403);
    expect(r.headers['content-type']).toMatch(/^text\/plain/);
    expect(r.body).toBe('127.0.0.1 is refused (loopback address)\n');
    expect(echo.hits).toBe(hits);
    expect(decisions).toEqual([{ decision: 'denied', host: 'allowed.test', port: echo.port, reason: '127.0.0.1 is refused (loopback address)' }]);
  });

  test('of several addresses only one that passes the checks is connected to', async () => {
    const { proxy } = await start(allowEcho(), ['127.0.0.1/32']);
    const decoyHits = decoy.hits;
    for (let i = 0; i < 3; i++) {
      const r = await viaProxy(proxy.socketPath, `http://mixed.test:${echo.port}/`);
      expect(r.status).toBe(200);
      expect((JSON.parse(r.body) as Echo).local).toBe('127.0.0.1');
    }
    expect(decoy.hits).toBe(decoyHits);
    const only = await start({ allow: [`only-refused.test:${echo.port}`], deny: [] }, ['127.0.0.1/32']);
    const r = await viaProxy(only.proxy.socketPath, `http://only-refused.test:${echo.port}/`);
    expect(r.status).toBe(403);
    expect(r.body).toMatch(/169\.254\.169\.254 is refused \(cloud metadata address\)/);
  });

  test('deny wins over allow, and a policy change applies to the very next request', async () => {
    const s = await start({ allow: [`*.test:${echo.port}`, `allowed.test:${echo.port}`], deny: ['allowed.test'] });
    const denied = await viaProxy(s.proxy.socketPath, `http://allowed.test:${echo.port}/`);
    expect(denied.status).toBe(403);
    expect(denied.body).toBe(`allowed.test:${echo.port} is denied by "allowed.test"\n`);
    expect((await viaProxy(s.proxy.socketPath, `http://other.test:${echo.port}/`)).status).toBe(200);
    s.setPolicy({ allow: [`allowed.test:${echo.port}`], deny: [] });
    expect((await viaProxy(s.proxy.socketPath, `http://allowed.test:${echo.port}/`)).status).toBe(200);
    expect((await viaProxy(s.proxy.socketPath, `http://other.test:${echo.port}/`)).status).toBe(403);
    expect(s.decisions.map((d) => d.decision)).toEqual(['denied', 'allowed', 'allowed', 'denied']);
  });

  test('numeric IPv4 forms and mapped IPv6 are refused even when a pattern allows the address', async () => {
    const { proxy } = await start({ allow: [`127.0.0.1:${echo.port}`, `[::ffff:127.0.0.1]:${echo.port}`, `0.0.0.0:${echo.port}`, `[::]:${echo.port}`], deny: [] }, []);
    for (const host of ['2130706433', '0177.0.0.1', '0x7f.1', '127.1', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '0.0.0.0', '[::]', '127.0.0.1', '[fe80::1%25lo]']) {
      const r = await viaProxy(proxy.socketPath, `http://${host}:${echo.port}/`);
      expect(r.status, host).toBe(403);
      expect(r.body, host).toMatch(/refused|matches no allow/);
    }
    expect(resolved.filter((h) => /^[0-9]|^\[|^0x/.test(h))).toEqual([]); // none of these was ever handed to a resolver
  });

  test.each([
    ['GET /path HTTP/1.1\r\nHost: allowed.test\r\n\r\n', 400, 'not a proxy request'],
    ['GET https://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n', 400, 'only http: URLs'],
    ['GET ftp://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n', 400, 'only http: URLs'],
    ['GET http://user:pw@allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n', 400, 'user info'],
    [`GET http://allowed.test/${'a'.repeat(MAX_HEAD_BYTES)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431, 'over 16384 bytes'],
    [`GET http://allowed.test/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`, 431, 'over 16384 bytes'],
    ['GARBAGE\r\n\r\n', 400, 'malformed'],
  ])('%j → %i', async (raw, status, why) => {
    const { proxy } = await start(allowEcho());
    const answer = await rawExchange(proxy.socketPath, raw);
    expect(answer.startsWith(`HTTP/1.1 ${status} `)).toBe(true);
    expect(answer).toContain(why);
  });
});

describe('CONNECT', () => {
  test('tunnels a TLS handshake and request to an allowed name', async () => {
    const { proxy, decisions } = await start(allowEcho());
    const { socket, head } = await openTunnel(proxy.socketPath, `allowed.test:${tlsServer.port}`);
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    const t = tls.connect({ socket, servername: 'allowed.test', ca: cert.cert });
    await new Promise<void>((r, j) => t.once('secureConnect', r).once('error', j));
    expect(t.authorized).toBe(true);
    t.write('GET /through-tunnel HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n');
    let body = '';
    for await (const chunk of t) body += (chunk as Buffer).toString();
    expect(body).toMatch(/tls ok \/through-tunnel$/);
    expect(decisions).toEqual([{ decision: 'allowed', host: 'allowed.test', port: tlsServer.port, reason: null }]);
  });

  test.each([
    ['a port the pattern does not allow', () => `allowed.test:${echo.port + 1 === tlsServer.port ? echo.port + 2 : echo.port + 1}`, 403, 'is not allowed for allowed.test'],
    ['no port', () => 'allowed.test', 400, 'CONNECT needs host:port'],
    ['an IP literal on loopback', () => `127.0.0.2:${echo.port}`, 403, 'loopback'],
    ['the cloud metadata address', () => '169.254.169.254:80', 403, 'cloud metadata'],
    ['fd00:ec2::254', () => '[fd00:ec2::254]:80', 403, 'cloud metadata'],
    ['a mapped loopback', () => `[::ffff:127.0.0.2]:${echo.port}`, 403, 'IPv4-mapped 127.0.0.2: loopback'],
    ['a decimal IPv4', () => `2130706434:${echo.port}`, 403, 'decimal, octal or hex'],
    ['an octal IPv4', () => `0177.0.0.2:${echo.port}`, 403, 'decimal, octal or hex'],
    ['a zone id', () => `[fe80::1%lo]:${echo.port}`, 403, 'zone id'],
    ['a name that does not resolve', () => `nowhere.test:${echo.port}`, 502, 'could not resolve nowhere.test: ENOTFOUND'],
  ])('refuses %s', async (_what, target, status, why) => {
    const allow = [`allowed.test:${tlsServer.port}`, '169.254.169.254:80', '[fd00:ec2::254]:80', `127.0.0.2:${echo.port}`, `[::ffff:127.0.0.2]:${echo.port}`, `nowhere.test:${echo.port}`, `[fe80::1]:${echo.port}`];
    const { proxy, decisions } = await start({ allow, deny: [] });
    const t = target();
    const answer = await rawExchange(proxy.socketPath, `CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\n\r\n`);
    expect(answer).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(answer).toContain('Content-Type: text/plain');
    expect(answer.split('\r\n\r\n')[1]).toContain(why);
    expect(answer.split('\r\n\r\n')[1]?.trimEnd()).not.toContain('\n');
    if (status === 403) expect(decisions.map((d) => d.decision)).toEqual(['denied']);
  });

  test('close() ends a live tunnel, stops listening and removes the socket file', async () => {
    const { proxy } = await start(allowEcho());
    const { socket, head } = await openTunnel(proxy.socketPath, `allowed.test:${echo.port}`);
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    socket.resume();
    const ended = new Promise<void>((r) => socket.once('close', () => r()));
    await proxy.close();
    await ended;
    expect(fs.existsSync(proxy.socketPath)).toBe(false);
    await expect(new Promise((r, j) => net.connect(proxy.socketPath).once('connect', r).once('error', j))).rejects.toThrow(/ENOENT/);
  });
});

describe('the listener', () => {
  test('is a 0600 socket owned by the session uid', async () => {
    const { proxy } = await start(allowEcho(), ['127.0.0.1/32'], { uid: 54321, gid: 54322 });
    const st = fs.lstatSync(proxy.socketPath);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect([st.uid, st.gid]).toEqual([54321, 54322]);
  });

  test(`holds at most ${MAX_CONNECTIONS_PER_PROXY} connections; the next one gets 503`, async () => {
    const { proxy } = await start(allowEcho());
    const held: net.Socket[] = [];
    for (let i = 0; i < MAX_CONNECTIONS_PER_PROXY; i++) {
      held.push(await new Promise<net.Socket>((r, j) => { const s = net.connect(proxy.socketPath, () => r(s)).once('error', j); }));
    }
    await new Promise((r) => setTimeout(r, 50));
    const answer = await rawExchange(proxy.socketPath, `GET http://allowed.test:${echo.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    held.pop()?.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const ok = await viaProxy(proxy.socketPath, `http://allowed.test:${echo.port}/`);
    expect(ok.status).toBe(200);
    for (const s of held) s.destroy();
  });
});
