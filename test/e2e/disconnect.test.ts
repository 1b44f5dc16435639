// A client that goes away mid-execution must not leave its sandbox running on the host.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { waitForNoProcess, waitForSleep } from '../helpers/host-processes.js';
import { api, sleep, startServer, useWorkspaceDir, type ExecResult, type ServerProcess } from '../helpers/server-process.js';

const workspaceDir = useWorkspaceDir('bs-e2e-disconnect-', 'all');
let server: ServerProcess;

beforeAll(async () => {
  server = await startServer({ workspaceDir: workspaceDir.path });
});

async function abortWhenRunning(route: string, body: unknown, marker: string): Promise<unknown> {
  const ac = new AbortController();
  const pending = fetch(`${server.baseUrl}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: ac.signal,
  }).then(() => null, (err: unknown) => err);
  await waitForSleep(marker);
  ac.abort();
  return pending;
}

describe('client disconnect', () => {
  test('aborting a session execution kills its sandbox within 2 s; the session stays usable', async () => {
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'gone-client' })).status).toBe(201);
    const marker = '30.456';
    const err = await abortWhenRunning('/v1/sessions/gone-client/execute', { command: `sleep ${marker}`, timeout_seconds: 60 }, marker);
    expect((err as Error | null)?.name).toBe('AbortError');

    expect(await waitForNoProcess(`sleep ${marker}`, 2000)).toEqual([]);

    // The session's queue is free again: the next execution runs at once.
    const started = Date.now();
    const next = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/gone-client/execute', { command: 'echo next' });
    expect(next.body).toMatchObject({ status: 'ok', stdout: 'next\n' });
    expect(Date.now() - started).toBeLessThan(10_000);

    // The service saw the execution end as killed, not as a timeout.
    let finished: Record<string, unknown> | undefined;
    for (let i = 0; i < 40 && !finished; i++) {
      finished = server.jsonLogs().find((l) => l.msg === 'execution finished' && l.session_id === 'gone-client' && l.status !== 'ok');
      if (!finished) await sleep(50);
    }
    expect(finished?.status).toBe('killed');
    expect((await api(server.baseUrl, 'GET', '/healthz')).status).toBe(200);
  }, 60_000);

  test('aborting a one-shot execution kills its sandbox and removes its workspace', async () => {
    // The run leaves a file of its own in its workspace, so its workspace can be told from the
    // one prepared (with a warm sandbox) for the next one-shot run, which rightly stays.
    const marker = '30.654';
    const file = 'abort-30654.mark';
    const oneshot = path.join(workspaceDir.path, 'oneshot');
    const holding = () => execFileSync('find', [oneshot, '-maxdepth', '4', '-name', file], { encoding: 'utf8' }).split('\n').filter(Boolean);
    const ac = new AbortController();
    const pending = fetch(`${server.baseUrl}/v1/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command: `touch ${file}; sleep ${marker}`, timeout_seconds: 60 }),
      signal: ac.signal,
    }).then(() => null, (e: unknown) => e);
    await waitForSleep(marker);
    expect(holding().length).toBe(1); // the run's workspace, as seen from the host
    ac.abort();
    const err = await pending;
    expect((err as Error | null)?.name).toBe('AbortError');
    expect(await waitForNoProcess(`sleep ${marker}`, 2000)).toEqual([]);

    let left = holding();
    for (let i = 0; i < 40 && left.length > 0; i++) {
      await sleep(50);
      left = holding();
    }
    expect(left).toEqual([]);
  }, 60_000);
});
