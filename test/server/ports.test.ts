// ports/{port}/{path} through a listening app and real sandboxes: servers run as session processes
// (python's http.server, and test/server/fixtures/port-server.py for bodies and WebSockets) and are
// reached only through the proxy, with the API key, the Origin rule and session isolation.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bwrapUsable, IS_ROOT } from '../helpers/sandbox.js';
import { AUTH, KEY, listeningApp, openWs, PORT_SERVER, startProcess, until, type Listening } from '../helpers/ws.js';

const HTTP_SERVER_PORT = 18080;
const FIXTURE_PORT = 18081;

interface Answer { status: number; headers: http.IncomingHttpHeaders; body: Buffer }

function request(base: string, method: string, url: string, opts: { headers?: http.OutgoingHttpHeaders; body?: Buffer | Buffer[] } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${url}`, { method, headers: { ...AUTH, ...opts.headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    // Several writes without a Content-Length: sent chunked, as a stream.
    for (const b of Array.isArray(opts.body) ? opts.body : opts.body ? [opts.body] : []) req.write(b);
    req.end();
  });
}

describe.skipIf(!IS_ROOT || !bwrapUsable())('ports/ reverse proxy', () => {
  let t: Listening;

  beforeAll(async () => {
    t = await listeningApp({ ALLOWED_ORIGINS: '["https://allowed.example"]' });
    for (const id of ['pa', 'pb']) {
      const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: AUTH, payload: { session_id: id } });
      expect(res.statusCode, res.body).toBe(201);
    }
    await t.app.inject({ method: 'POST', url: '/v1/sessions/pa/execute', headers: AUTH, payload: { command: 'echo "hello from http.server" > hello.txt' } });
    await startProcess(t, 'pa', { argv: ['/usr/bin/python3', '-m', 'http.server', String(HTTP_SERVER_PORT), '--bind', '127.0.0.1'] });
    await startProcess(t, 'pa', { argv: ['/usr/bin/python3', '-c', PORT_SERVER, String(FIXTURE_PORT)] });
    for (const port of [HTTP_SERVER_PORT, FIXTURE_PORT]) {
      const end = Date.now() + 15_000;
      while ((await request(t.base, 'GET', `/v1/sessions/pa/ports/${port}/`)).status === 502 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    }
  }, 60_000);

  afterAll(async () => {
    await t.close();
  });

  it('a python -m http.server process answers GET through ports/, and a later execute in the session reaches it', async () => {
    const res = await request(t.base, 'GET', `/v1/sessions/pa/ports/${HTTP_SERVER_PORT}/hello.txt`);
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('hello from http.server\n');
    const listing = await request(t.base, 'GET', `/v1/sessions/pa/ports/${HTTP_SERVER_PORT}`);
    expect(listing.status).toBe(200);
    expect(listing.body.toString()).toContain('hello.txt');
    const exec = await t.app.inject({ method: 'POST', url: '/v1/sessions/pa/execute', headers: AUTH, payload: { command: `curl -s http://127.0.0.1:${HTTP_SERVER_PORT}/hello.txt || python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:${HTTP_SERVER_PORT}/hello.txt').read().decode(), end='')"` } });
    expect(exec.json<{ stdout: string }>().stdout).toBe('hello from http.server\n');
  });

  it('forwards the path and query as sent, and neither Authorization nor hop-by-hop headers', async () => {
    const res = await request(t.base, 'GET', `/v1/sessions/pa/ports/${FIXTURE_PORT}/a/b%20c?x=1&y=%2F&access_token=${KEY}`, { headers: { 'x-test': 'kept', connection: 'keep-alive, x-test' } });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toEqual({ path: '/a/b%20c?x=1&y=%2F', authorization: null, x_test: null });
    const plain = await request(t.base, 'GET', `/v1/sessions/pa/ports/${FIXTURE_PORT}/q?z=2`, { headers: { 'x-test': 'kept' } });
    expect(JSON.parse(plain.body.toString())).toEqual({ path: '/q?z=2', authorization: null, x_test: 'kept' });
  });

  it('streams request bodies both ways: a 5 MB chunked POST and a 20 MB download arrive whole', async () => {
    const parts = Array.from({ length: 80 }, () => randomBytes(64 * 1024));
    const res = await request(t.base, 'POST', `/v1/sessions/pa/ports/${FIXTURE_PORT}/upload`, { headers: { 'content-type': 'application/x-unknown' }, body: parts });
    expect(res.status, res.body.toString()).toBe(200);
    expect(JSON.parse(res.body.toString())).toEqual({ length: 80 * 64 * 1024, sha256: createHash('sha256').update(Buffer.concat(parts)).digest('hex') });
    const sized = await request(t.base, 'PUT', `/v1/sessions/pa/ports/${FIXTURE_PORT}/x`, { headers: { 'content-type': 'application/json', 'content-length': '2' }, body: Buffer.from('{}') });
    expect(sized.status).toBe(501); // http.server has no do_PUT: its own answer, not the service's
    const big = await request(t.base, 'GET', `/v1/sessions/pa/ports/${FIXTURE_PORT}/big?n=20000000`);
    expect(big.status).toBe(200);
    expect(big.body.length).toBe(20_000_000);
  });

  it('502 PORT_NOT_LISTENING when nothing listens; 400 for a port outside 1-65535; 401 without the key', async () => {
    const none = await request(t.base, 'GET', '/v1/sessions/pa/ports/18099/');
    expect(none.status).toBe(502);
    expect(JSON.parse(none.body.toString())).toMatchObject({ statusCode: 502, code: 'PORT_NOT_LISTENING' });
    for (const port of ['0', '70000', 'abc']) {
      const bad = await request(t.base, 'GET', `/v1/sessions/pa/ports/${port}/`);
      expect(bad.status, port).toBe(400);
    }
    expect((await request(t.base, 'GET', `/v1/sessions/pa/ports/${FIXTURE_PORT}/`, { headers: { authorization: 'Bearer wrong-key-0123456789' } })).status).toBe(401);
    // On plain HTTP the key comes only in the header.
    expect((await request(t.base, 'GET', `/v1/sessions/pa/ports/${FIXTURE_PORT}/?access_token=${KEY}`, { headers: { authorization: '' } })).status).toBe(401);
    expect((await request(t.base, 'GET', `/v1/sessions/nope/ports/${FIXTURE_PORT}/`)).status).toBe(404);
  });

  it('a port of session A is not reachable through session B', async () => {
    const res = await request(t.base, 'GET', `/v1/sessions/pb/ports/${HTTP_SERVER_PORT}/hello.txt`);
    expect(res.status).toBe(502);
  });

  it('WebSocket upgrades pass through to the program: its handshake, frames both ways, the path without access_token', async () => {
    const messages: string[] = [];
    const ws = await openWs(`${t.wsBase}/v1/sessions/pa/ports/${FIXTURE_PORT}/chat?room=1&access_token=${KEY}`, {}, (d, isBinary) => messages.push(isBinary ? `bin:${d.length}` : d.toString()));
    await until('the path message', () => messages.length >= 1);
    expect(messages[0]).toBe('/chat?room=1');
    ws.send('hello through the proxy');
    ws.send(Buffer.alloc(100_000, 7));
    await until('echoes', () => messages.length >= 3);
    expect(messages.slice(1)).toEqual(['hello through the proxy', 'bin:100000']);
    ws.close();

    const viaHeader = await openWs(`${t.wsBase}/v1/sessions/pa/ports/${FIXTURE_PORT}/h`, { headers: AUTH });
    viaHeader.close();
  });

  it('a WebSocket upgrade is refused with a wrong key, a foreign Origin, a bad port, nothing listening or session B', async () => {
    const url = (s: string, port: number | string, q = `?access_token=${KEY}`) => `${t.wsBase}/v1/sessions/${s}/ports/${port}/${q}`;
    await expect(openWs(url('pa', FIXTURE_PORT, ''))).rejects.toThrow('status 401');
    await expect(openWs(url('pa', FIXTURE_PORT, '?access_token=wrong-key-0123456789'))).rejects.toThrow('status 401');
    await expect(openWs(url('pa', FIXTURE_PORT), { headers: { origin: 'https://evil.example' } })).rejects.toThrow('status 403');
    await expect(openWs(url('pa', FIXTURE_PORT), { headers: { origin: 'null' } })).rejects.toThrow('status 403');
    (await openWs(url('pa', FIXTURE_PORT), { headers: { origin: 'https://allowed.example' } })).close();
    (await openWs(url('pa', FIXTURE_PORT), { origin: t.base })).close();
    await expect(openWs(url('pa', 70000))).rejects.toThrow('status 400');
    await expect(openWs(url('pa', 18099))).rejects.toThrow('status 502');
    await expect(openWs(url('pb', FIXTURE_PORT))).rejects.toThrow('status 502');
    await expect(openWs(url('nope', FIXTURE_PORT))).rejects.toThrow('status 404');
  });
});
