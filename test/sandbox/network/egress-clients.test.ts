// Ordinary clients use the egress proxy unchanged, as the sandbox's programs will (HTTP_PROXY /
// HTTPS_PROXY, --proxy): curl and Python's urllib, over a TCP relay to the proxy's unix socket
// (in a session the netns helper plays that relay). Targets are local; the proxy's injected
// resolver answers the test names, so neither client nor proxy asks a real resolver.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseCidrs } from '../../../src/sandbox/network/egress-policy.js';
import { startEgressProxy, type EgressProxy } from '../../../src/sandbox/network/egress-proxy.js';
import { makeCert, startEchoServer, startRelay, startTlsServer, type Cert, type Echo, type Local } from './egress-fixtures.js';

const run = promisify(execFile);
const FETCH_PY = path.join(import.meta.dirname, 'fixtures', 'egress-urllib-fetch.py');
let dir: string;
let cert: Cert;
let echo: Local;
let tlsServer: Local;
let relay: Local;
let proxy: EgressProxy<string>;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egress-clients-'));
  cert = makeCert(dir, 'allowed.test');
  echo = await startEchoServer();
  tlsServer = await startTlsServer(cert);
  proxy = await startEgressProxy({
    socketPath: path.join(dir, 'egress.sock'), owner: null, allowPrivate: parseCidrs(['127.0.0.1/32']),
    policy: () => ({ allow: [`allowed.test:${echo.port}`, `allowed.test:${tlsServer.port}`, `denied.test:${echo.port}`], deny: ['denied.test'] }),
    resolve: (host) => (host.endsWith('.test') ? Promise.resolve(['127.0.0.1']) : Promise.reject(new Error(`unexpected name ${host}`))),
    logger: { info: () => undefined, warn: () => undefined } as never,
  });
  relay = await startRelay(proxy.socketPath);
  const proxyUrl = `http://127.0.0.1:${relay.port}`;
  env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/_proxy$/i.test(k)));
  Object.assign(env, { HTTP_PROXY: proxyUrl, HTTPS_PROXY: proxyUrl, ALL_PROXY: proxyUrl, http_proxy: proxyUrl, https_proxy: proxyUrl });
});
afterAll(async () => {
  await relay.close();
  await proxy.close();
  await Promise.all([echo.close(), tlsServer.close()]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('curl', () => {
  test('plain HTTP in absolute form', async () => {
    const { stdout } = await run('curl', ['-sS', '--max-time', '10', `http://allowed.test:${echo.port}/curl?x=1`], { env });
    expect((JSON.parse(stdout) as Echo).url).toBe('/curl?x=1');
  });
  test('HTTPS through CONNECT, the certificate checked for the name', async () => {
    const { stdout } = await run('curl', ['-sS', '--max-time', '10', '--cacert', path.join(cert.dir, 'cert.pem'), `https://allowed.test:${tlsServer.port}/curl-tls`], { env });
    expect(stdout).toBe('tls ok /curl-tls');
  });
  test('a refused CONNECT shows the proxy\'s 403', async () => {
    const r = await run('curl', ['-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_connect}', `https://denied.test:${echo.port}/`], { env }).catch((e: { stdout: string; stderr: string }) => e);
    expect(r.stdout).toBe('403');
    expect(r.stderr).toMatch(/403/);
  });
});

describe('python3 urllib with HTTP_PROXY', () => {
  const fetch = async (url: string, cafile?: string) => {
    const { stdout } = await run('python3', ['-I', FETCH_PY, url, ...(cafile === undefined ? [] : [cafile])], { env });
    const [status = '', ...body] = stdout.trim().split(' ');
    return { status: Number(status), body: body.join(' ') };
  };
  test('gets the page', async () => {
    const r = await fetch(`http://allowed.test:${echo.port}/urllib`);
    expect(r.status).toBe(200);
    expect((JSON.parse(r.body) as Echo).url).toBe('/urllib');
  });
  test('HTTPS through CONNECT', async () => {
    expect(await fetch(`https://allowed.test:${tlsServer.port}/urllib-tls`, path.join(cert.dir, 'cert.pem'))).toEqual({ status: 200, body: 'tls ok /urllib-tls' });
  });
  test('a redirect is a new request, checked again: the denied hop is a 403', async () => {
    const to = encodeURIComponent(`http://denied.test:${echo.port}/`);
    expect(await fetch(`http://allowed.test:${echo.port}/redirect?u=${to}`)).toEqual({ status: 403, body: `denied.test:${echo.port} is denied by "denied.test"` });
  });
});
