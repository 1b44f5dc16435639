// Graceful shutdown of the real process: running executions may finish until the grace deadline,
// then are killed; the process exits 0 and leaves no sandbox behind. startServer sets no drain
// (SHUTDOWN_DRAIN_SECONDS=0) unless a test names one: the drain has tests of its own below.
import fs from 'node:fs';
import net from 'node:net';
import { describe, expect, test } from 'vitest';
import { waitForNoProcess, waitForSleep } from '../helpers/host-processes.js';
import { api, sleep, startServer, useWorkspaceDir, type ExecResult } from '../helpers/server-process.js';

const GRACE_SECONDS = 2;
const workspaceDir = useWorkspaceDir('bs-e2e-shutdown-');

describe('graceful shutdown', () => {
  test('SIGTERM kills an execution that outlives the grace period, answers it, exits 0', async () => {
    const server = await startServer({ workspaceDir: workspaceDir.path, env: { BUBBLE_SANDBOX_SHUTDOWN_GRACE_SECONDS: String(GRACE_SECONDS) } });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'long' })).status).toBe(201);

    const marker = '30.123';
    const pending = api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/long/execute', { command: `sleep ${marker}`, timeout_seconds: 60 })
      .then((r) => ({ ok: true as const, res: r }), (err: unknown) => ({ ok: false as const, err }));
    await waitForSleep(marker);

    const sent = Date.now();
    const exited = server.stop('SIGTERM');
    const outcome = await pending;
    const answeredAfter = Date.now() - sent;
    const exit = await exited;
    const exitedAfter = Date.now() - sent;

    // Observed behaviour: the in-flight request gets a normal 200 answer with status "killed"
    // once the grace period is over (the connection is not just dropped).
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect(outcome.res.status).toBe(200);
    expect(outcome.res.body).toMatchObject({ status: 'killed', exit_code: null, signal: 'SIGKILL', timed_out: false });
    // It ran until the grace deadline, not less.
    expect(answeredAfter).toBeGreaterThanOrEqual(GRACE_SECONDS * 1000 - 100);

    expect(exit).toEqual({ code: 0, signal: null });
    expect(await waitForNoProcess(`sleep ${marker}`, 2000)).toEqual([]);
    const msgs = server.jsonLogs().map((l) => l.msg);
    expect(msgs).toContain('shutting down');
    expect(msgs).toContain('stopped');
    // The client keeps its connection alive (as fetch, requests.Session and httpx do); the
    // service must not wait for that idle connection to time out before it exits.
    expect(exitedAfter).toBeLessThan((GRACE_SECONDS + 5) * 1000);
  }, 60_000);

  test('an execution that finishes within the grace period gets its normal result', async () => {
    const server = await startServer({ workspaceDir: workspaceDir.path, env: { BUBBLE_SANDBOX_SHUTDOWN_GRACE_SECONDS: String(GRACE_SECONDS) } });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'short' })).status).toBe(201);

    const marker = '1.217';
    const pending = api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/short/execute', { command: `sleep ${marker}; echo done` });
    await waitForSleep(marker);
    const exited = server.stop('SIGTERM');

    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'ok', exit_code: 0, signal: null, stdout: 'done\n' });
    expect(await exited).toEqual({ code: 0, signal: null });
  }, 60_000);

  test('new work is refused once shutdown has begun', async () => {
    const server = await startServer({ workspaceDir: workspaceDir.path, env: { BUBBLE_SANDBOX_SHUTDOWN_GRACE_SECONDS: String(GRACE_SECONDS) } });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'busy' })).status).toBe(201);
    const marker = '30.789';
    const pending = api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/busy/execute', { command: `sleep ${marker}` }).catch(() => null);
    await waitForSleep(marker);
    const exited = server.stop('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    // Either the listener is closed already (connection refused) or the service answers 503.
    const late = await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'late' }).then((r) => r.status, () => 'refused');
    expect([503, 'refused']).toContain(late);
    await pending;
    expect((await exited).code).toBe(0);
  }, 60_000);

  test('SIGINT exits 0', async () => {
    const server = await startServer({ workspaceDir: workspaceDir.path });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'int' })).status).toBe(201);
    expect(await server.stop('SIGINT')).toEqual({ code: 0, signal: null });
    expect(server.jsonLogs().some((l) => l.msg === 'shutting down' && l.signal === 'SIGINT')).toBe(true);
    // The session was flushed to disk and is still there.
    expect(fs.existsSync(`${workspaceDir.path}/sessions/int/meta.json`)).toBe(true);
  }, 60_000);
});

describe('a signal to the whole process group', () => {
  test('SIGTERM to the group (a supervisor, a terminal) is a clean stop: exit 0, no error-level log line', async () => {
    const server = await startServer({ workspaceDir: workspaceDir.path, processGroup: true });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'grp' })).status).toBe(201);
    expect((await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/grp/execute', { command: 'echo x > f.txt' })).body.files.created).toEqual(['f.txt']);
    expect(await server.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    const logs = server.jsonLogs();
    expect(logs.map((l) => l.msg)).toContain('stopped');
    // pino levels: 50 error, 60 fatal.
    expect(logs.filter((l) => typeof l.level === 'number' && l.level >= 50)).toEqual([]);
  }, 60_000);
});

/** Whether a TCP connection to the port is accepted (true) or refused (false). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' ? resolve(false) : reject(err)));
  });
}

describe('the drain before the listener closes (SHUTDOWN_DRAIN_SECONDS)', () => {
  test('SIGTERM: /readyz is 503 at once while the listener keeps serving new work for the drain, then closes; running work finishes; exit 0', async () => {
    const DRAIN_MS = 2000;
    const server = await startServer({ workspaceDir: workspaceDir.path, env: { BUBBLE_SANDBOX_SHUTDOWN_DRAIN_SECONDS: String(DRAIN_MS / 1000), BUBBLE_SANDBOX_SHUTDOWN_GRACE_SECONDS: '10' } });
    expect((await api(server.baseUrl, 'GET', '/readyz')).status).toBe(200);
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'early' })).status).toBe(201);
    // Runs past the drain, within the grace: it must get its normal result.
    const marker = '4.321';
    const running = api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/early/execute', { command: `sleep ${marker}; echo finished` });
    await waitForSleep(marker);

    const sent = Date.now();
    const exited = server.stop('SIGTERM');
    await sleep(300);
    const ready = await api<{ status: string; reason: string; checks: { shutting_down: boolean } }>(server.baseUrl, 'GET', '/readyz');
    expect({ status: ready.status, body: ready.body.status, reason: ready.body.reason, shutting_down: ready.body.checks.shutting_down })
      .toEqual({ status: 503, body: 'unavailable', reason: 'the service is shutting down', shutting_down: true });
    expect((await api(server.baseUrl, 'GET', '/healthz')).status).toBe(200);
    // What a load balancer still sends before it has seen the 503 is served, not refused.
    const created = await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'during-drain' });
    expect(created.status).toBe(201);
    expect(created.headers.get('connection')).toBe('close'); // keep-alive clients move on
    const late = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/during-drain/execute', { command: 'echo served' });
    expect(late.body).toMatchObject({ status: 'ok', stdout: 'served\n' });
    await sleep(Math.max(0, sent + DRAIN_MS - 500 - Date.now()));
    expect(await accepts(server.port)).toBe(true);
    expect(Date.now() - sent).toBeLessThan(DRAIN_MS);

    // After the drain the port refuses, while the execution still runs to its end.
    await sleep(Math.max(0, sent + DRAIN_MS + 700 - Date.now()));
    expect(await accepts(server.port)).toBe(false);
    const res = await running;
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'ok', stdout: 'finished\n' });
    expect(await exited).toEqual({ code: 0, signal: null });
    const msgs = server.jsonLogs().map((l) => l.msg);
    expect(msgs).toEqual(expect.arrayContaining(['shutting down', 'drain over: closing the listener', 'stopped']));
  }, 60_000);

  test('a second signal ends the drain at once; SIGINT (a terminal\'s Ctrl-C) has none', async () => {
    const env = { BUBBLE_SANDBOX_SHUTDOWN_DRAIN_SECONDS: '60' };
    const first = await startServer({ workspaceDir: workspaceDir.path, env });
    const sent = Date.now();
    const exited = first.stop('SIGTERM');
    await sleep(300);
    expect((await api(first.baseUrl, 'GET', '/readyz')).status).toBe(503);
    expect(await first.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    await exited;
    expect(Date.now() - sent).toBeLessThan(10_000);

    const second = await startServer({ workspaceDir: workspaceDir.path, env });
    const started = Date.now();
    expect(await second.stop('SIGINT')).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 60_000);
});
