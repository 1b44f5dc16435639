// Network policies at work, with the real sandbox through app.inject: one namespace per session
// shared by its executions and its interpreter (and by no other session), the allowlist's egress
// proxy following PATCH at once, the host's loopback out of reach in every mode, and nothing left
// behind (helper process, run dir) after delete, idle expiry, shutdown or a one-shot run.
// Traffic goes only to 127.0.0.1 (a server of this test, allowed by EGRESS_ALLOW_PRIVATE_CIDRS)
// and to the namespaces the service makes.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, useTestApp } from '../helpers/app.js';
import { sleep } from '../helpers/host-env.js';
import { hostProcessesMatching, waitUntil } from '../helpers/host-processes.js';
import { createSession, execute, expectError, fakeClock, type OneShotResultBody, type RunCodeResultBody } from '../helpers/http.js';

const t = useTestApp({ EGRESS_ALLOW_PRIVATE_CIDRS: '["127.0.0.1/32"]' });

let hostServer: http.Server;
let hostPort = 0;
beforeAll(async () => {
  hostServer = http.createServer((_req, res) => res.end('hello from the host'));
  await new Promise<void>((resolve) => hostServer.listen(0, '127.0.0.1', resolve));
  hostPort = (hostServer.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => hostServer.close(() => resolve()));
});

/** The run dir of a session's network (a hash of its id keeps unix socket paths short). */
const runDirOf = (workspaceDir: string, key: string) => path.join(workspaceDir, 'run', 'net', createHash('sha256').update(key).digest('hex').slice(0, 16));
const helpersOf = (runDir: string) => hostProcessesMatching(runDir);

async function runCode(id: string, code: string): Promise<RunCodeResultBody> {
  const res = await t.app.inject({ method: 'POST', url: `/v1/sessions/${id}/run_code`, payload: { code, timeout_seconds: 20 } });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<RunCodeResultBody>();
}

/** A script printing what a GET of `url` gives: the status and body, `refused`, or the error's name. */
function fetchScript(url: string, opts: { viaProxy?: boolean } = {}): string {
  return [
    'import os, urllib.request, urllib.error',
    // The session's own loopback is exempt from the proxy (NO_PROXY); the test's host server is on
    // the host's 127.0.0.1, which only the proxy (with the EGRESS_ALLOW_PRIVATE_CIDRS exemption) reaches.
    ...(opts.viaProxy ? ["os.environ.pop('NO_PROXY', None); os.environ.pop('no_proxy', None)"] : []),
    'try:',
    `    r = urllib.request.urlopen(${JSON.stringify(url)}, timeout=10)`,
    "    print(r.status, r.read().decode())",
    'except urllib.error.HTTPError as e:',
    "    print(e.code, e.read().decode()[:200].replace('\\n', ' '))",
    'except urllib.error.URLError as e:',
    "    print('refused' if isinstance(e.reason, ConnectionRefusedError) else type(e.reason).__name__)",
  ].join('\n');
}

/**
 * What fetchScript prints in session `id`. The script itself must have run to its end: a failure
 * shows the whole result (stderr's traceback, status, duration), which an assertion on stdout
 * alone would not (the flip's last fetch failed once at load 7 with its value unseen).
 */
async function fetchIn(id: string, url: string): Promise<string> {
  const r = await execute(t.app, id, { script: fetchScript(url, { viaProxy: true }) });
  expect(r.status, JSON.stringify(r)).toBe('ok');
  return r.stdout;
}

/** A script connecting straight to host:port (no proxy): `connected` or the error's name. */
function connectScript(host: string, port: number): string {
  return [
    'import socket',
    'try:',
    `    socket.create_connection((${JSON.stringify(host)}, ${port}), timeout=5).close()`,
    "    print('connected')",
    'except ConnectionRefusedError:',
    "    print('refused')",
    'except OSError as e:',
    "    print(type(e).__name__, e.errno)",
  ].join('\n');
}

const NETNS = "import os\nprint(os.readlink('/proc/self/ns/net'))";

describe('one namespace per session, in every mode', () => {
  it('a server the interpreter started is reached by an execution of the same session, refused in another; the host is not reached', async () => {
    await createSession(t.app, { session_id: 'ns-a' });
    await createSession(t.app, { session_id: 'ns-b' });
    const started = await runCode('ns-a', [
      'import threading, http.server',
      'class H(http.server.BaseHTTPRequestHandler):',
      '    def do_GET(self):',
      "        body = b'from session a'",
      '        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)',
      '    def log_message(self, *a): pass',
      "srv = http.server.ThreadingHTTPServer(('127.0.0.1', 8765), H)",
      'threading.Thread(target=srv.serve_forever, daemon=True).start()',
      "'serving'",
    ].join('\n'));
    expect(started.result).toBe("'serving'");
    expect((await execute(t.app, 'ns-a', { script: fetchScript('http://127.0.0.1:8765/') })).stdout).toBe('200 from session a\n');
    expect((await execute(t.app, 'ns-b', { script: fetchScript('http://127.0.0.1:8765/') })).stdout).toBe('refused\n');
    // The host's own loopback listener is out of reach: 127.0.0.1 is the namespace's own.
    expect((await execute(t.app, 'ns-a', { script: connectScript('127.0.0.1', hostPort) })).stdout).toBe('refused\n');
  });

  it('executions, the interpreter and a restarted interpreter share one namespace; another session has its own', async () => {
    await createSession(t.app, { session_id: 'ns-c' });
    await createSession(t.app, { session_id: 'ns-d', network: { mode: 'allowlist' } });
    const exec = (await execute(t.app, 'ns-c', { script: NETNS })).stdout.trim();
    expect(exec).toMatch(/^net:\[\d+\]$/);
    expect((await execute(t.app, 'ns-c', { script: NETNS })).stdout.trim()).toBe(exec);
    expect((await runCode('ns-c', NETNS)).stdout.trim()).toBe(exec);
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions/ns-c/kernel/restart' })).statusCode).toBe(204);
    expect((await runCode('ns-c', NETNS)).stdout.trim()).toBe(exec);
    const other = (await execute(t.app, 'ns-d', { script: NETNS })).stdout.trim();
    expect(other).toMatch(/^net:\[\d+\]$/);
    expect(other).not.toBe(exec);
  });
});

describe('allowlist', () => {
  it('reaches an allowed host through the proxy (urllib and curl), a session without the pattern gets 403, PATCH flips the next request', async () => {
    const target = `127.0.0.1:${hostPort}`;
    const url = `http://${target}/pkg`;
    await createSession(t.app, { session_id: 'al-open', network: { mode: 'allowlist', allow: [target] } });
    await createSession(t.app, { session_id: 'al-closed', network: { mode: 'allowlist' } });
    const before = await egressCounts();

    expect(await fetchIn('al-open', url)).toBe('200 hello from the host\n');
    const curl = await execute(t.app, 'al-open', { command: `env -u NO_PROXY -u no_proxy curl -sS -o /dev/null -w '%{http_code}' ${url}` });
    expect(curl.stdout, curl.stderr).toBe('200');
    // Proxy variables win over the request's own.
    const pinned = await execute(t.app, 'al-open', { command: 'echo $HTTP_PROXY', env: { HTTP_PROXY: 'http://10.9.9.9:1' } });
    expect(pinned.stdout).toBe('http://127.0.0.1:3128\n');
    // Straight to the host, without the proxy: nothing there.
    expect((await execute(t.app, 'al-open', { script: connectScript('127.0.0.1', hostPort) })).stdout).toBe('refused\n');

    expect(await fetchIn('al-closed', url)).toMatch(/^403 /);

    const denied = await t.app.inject({ method: 'PATCH', url: '/v1/sessions/al-open/network', payload: { deny: [target] } });
    expect(denied.statusCode, denied.body).toBe(200);
    expect(await fetchIn('al-open', url)).toMatch(/^403 /);
    const reopened = await t.app.inject({ method: 'PATCH', url: '/v1/sessions/al-open/network', payload: { deny: [] } });
    expect(reopened.statusCode, reopened.body).toBe(200);
    expect(await fetchIn('al-open', url)).toBe('200 hello from the host\n');

    const after = await egressCounts();
    expect(after.allowed - before.allowed).toBeGreaterThanOrEqual(3);
    expect(after.denied - before.denied).toBeGreaterThanOrEqual(2);
  });

  it('a one-shot execution gets a network of its own for the run, gone when the answer comes', async () => {
    const target = `127.0.0.1:${hostPort}`;
    const res = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { script: fetchScript(`http://${target}/one`, { viaProxy: true }), network: { mode: 'allowlist', allow: [target] } } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<OneShotResultBody>().stdout).toBe('200 hello from the host\n');
    const closed = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { script: fetchScript(`http://${target}/one`, { viaProxy: true }), network: { mode: 'allowlist' } } });
    expect(closed.json<OneShotResultBody>().stdout).toMatch(/^403 /);
    const sessionsWithNetworks = t.sessions.list().filter((s) => t.sessions.networks.has(s.session_id)).length;
    expect(t.sessions.networks.size).toBe(sessionsWithNetworks);
    expect(hostProcessesMatching(path.join(t.workspaceDir, 'run', 'net')).length).toBe(liveSessionNetworks());
  });
});

describe('a failed network', () => {
  it('a session whose helper died gets a new namespace at its next execution; the interpreter restarts in it and says so', async () => {
    const target = `127.0.0.1:${hostPort}`;
    await createSession(t.app, { session_id: 'heal', network: { mode: 'allowlist', allow: [target] } });
    expect((await runCode('heal', 'x = 1')).status).toBe('ok');
    const runDir = runDirOf(t.workspaceDir, 'heal');
    const [helper, ...more] = helpersOf(runDir);
    expect(helper).toBeDefined();
    expect(more).toEqual([]);
    if (!helper) return;
    process.kill(helper.pid, 'SIGKILL');
    await waitUntil(() => helpersOf(runDir).filter((p) => p.pid === helper.pid), (l) => l.length === 0, 5000);
    await sleep(500); // the service learns of the death when the helper's pipes close
    expect((await execute(t.app, 'heal', { script: fetchScript(`http://${target}/again`, { viaProxy: true }) })).stdout).toBe('200 hello from the host\n');
    expect(helpersOf(runDir).map((p) => p.pid)).not.toContain(helper.pid);
    expect(helpersOf(runDir)).toHaveLength(1);
    expect(await runCode('heal', "'x' in globals()")).toMatchObject({ status: 'ok', result: 'False', kernel_restarted: true });
    expect((await runCode('heal', NETNS)).stdout).toBe((await execute(t.app, 'heal', { script: NETNS })).stdout);
  });
});

describe('outbound', () => {
  it('the host\'s loopback stays out of reach', async (ctx) => {
    // slirp4netns and nftables are installed by CI: there the mode must be there, never skipped.
    if (!t.sessions.networks.available.modes.includes('outbound') && !process.env.CI) {
      expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { network: { mode: 'outbound' } } }), 422, 'NETWORK_MODE_UNAVAILABLE');
      ctx.skip();
      return;
    }
    await createSession(t.app, { session_id: 'ob-1', network: { mode: 'outbound' } });
    expect((await execute(t.app, 'ob-1', { script: connectScript('127.0.0.1', hostPort) })).stdout).toBe('refused\n');
    // slirp4netns's alias of the host loopback is disabled.
    expect((await execute(t.app, 'ob-1', { script: connectScript('10.0.2.2', hostPort) })).stdout).not.toBe('connected\n');
  });
});

describe('release', () => {
  it('delete (with and without its data) stops the helper and removes the run dir', async () => {
    for (const [id, clear] of [['rel-a', 'true'], ['rel-b', 'false']] as const) {
      await createSession(t.app, { session_id: id, network: { mode: 'allowlist', allow: ['pypi.org'] } });
      const ran = await execute(t.app, id, { command: 'true' });
      expect(ran.status, JSON.stringify(ran)).toBe('ok');
      const runDir = runDirOf(t.workspaceDir, id);
      expect(fs.existsSync(runDir)).toBe(true);
      expect(helpersOf(runDir).length).toBeGreaterThan(0);
      expect((await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}?clear_data=${clear}` })).statusCode).toBe(204);
      expect(helpersOf(runDir)).toEqual([]);
      expect(fs.existsSync(runDir)).toBe(false);
    }
  });

  it('idle expiry and shutdown close the networks they end', async () => {
    const clock = fakeClock();
    const app = await createTestApp({ SESSION_IDLE_TIMEOUT_SECONDS: '60', SWEEP_INTERVAL_SECONDS: '86400' }, { now: clock.now });
    let closed = false;
    try {
      await createSession(app.app, { session_id: 'idle', network: { mode: 'allowlist' } });
      await createSession(app.app, { session_id: 'busy' });
      expect((await execute(app.app, 'idle', { command: 'true' })).status).toBe('ok');
      clock.advance(40);
      expect((await execute(app.app, 'busy', { command: 'true' })).status).toBe('ok');
      const idleDir = runDirOf(app.workspaceDir, 'idle');
      const busyDir = runDirOf(app.workspaceDir, 'busy');
      expect(helpersOf(idleDir).length).toBeGreaterThan(0);
      // busy is in mode none: a namespace, but no helper until something connects to one of its ports.
      expect(app.sessions.networks.has('busy')).toBe(true);
      expect(helpersOf(busyDir)).toEqual([]);
      clock.advance(30);
      expect(await app.sessions.sweep()).toEqual(['idle']);
      expect(helpersOf(idleDir)).toEqual([]);
      expect(fs.existsSync(idleDir)).toBe(false);
      expect(app.sessions.networks.has('busy')).toBe(true);
      closed = true;
      await app.close(); // the app, then SessionManager.close
      expect(app.sessions.networks.has('busy')).toBe(false);
      expect(fs.existsSync(busyDir)).toBe(false);
    } finally {
      if (!closed) await app.close();
    }
  });
});

/** Sessions of this file's app that have a network with a helper now (mode none starts its helper only for ports/). */
function liveSessionNetworks(): number {
  return t.sessions.list().filter((s) => t.sessions.networks.has(s.session_id) && s.network.mode !== 'none').length;
}

async function egressCounts(): Promise<{ allowed: number; denied: number }> {
  const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
  const count = (d: string) => Number(new RegExp(`^bubble_sandbox_egress_requests_total\\{decision="${d}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return { allowed: count('allowed'), denied: count('denied') };
}
