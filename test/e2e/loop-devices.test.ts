// Every loop device the service attaches (quota images of sessions, writable-root overlays on
// them, pool entries, one-shot workspaces and the places prepared for the next one-shot run) is
// detached again: at delete, expiry and SIGTERM, and after a SIGKILL at the next start and its
// stop. Read from the kernel (losetup), not from the service.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { loopBackingFiles, mountsUnder } from '../helpers/mounts.js';
import { resumeProcess, stopChildProcess, waitUntil, type HostProcess } from '../helpers/host-processes.js';
import { api, sleep, startServer, useTempDirs, type ExecResult, type JsonResponse, type ServerProcess } from '../helpers/server-process.js';

const tempDir = useTempDirs();

/** Loop devices backed by a file below `dir`, as paths relative to it ("(deleted)" kept). */
function loopsUnder(dir: string): string[] {
  return loopBackingFiles().filter((f) => f.startsWith(`${dir}/`)).map((f) => f.slice(dir.length + 1)).sort();
}

const sessionImage = (id: string) => `sessions/${id}/workspace.img`;

/**
 * Requests made one after another until one's mkfs.ext4 is caught and held stopped; then SIGTERM,
 * and the held mkfs let go a second after the stop has begun (long enough for a stop that does not
 * wait for it to be past its unmounts). Every request accepted before the stop is answered with
 * `status`, and the service exits 0.
 */
async function holdMkfsAcrossStop(server: ServerProcess, request: (i: number) => Promise<JsonResponse>, status: number): Promise<void> {
  const catching = stopChildProcess(server.pid, /^mkfs\.ext4 /, 30_000);
  const requests: Promise<JsonResponse>[] = [];
  let held: HostProcess | undefined;
  try {
    for (let i = 0; i < 200 && held === undefined; i++) {
      const made = request(i);
      requests.push(made);
      held = await Promise.race([catching, made.then(() => undefined)]);
    }
    held ??= await catching;
    const stopped = server.stop('SIGTERM');
    await waitUntil(() => server.jsonLogs().some((l) => l.msg === 'shutting down'), (seen) => seen, 10_000);
    await sleep(1000);
    resumeProcess(held);
    expect((await Promise.all(requests)).map((r) => r.status)).toEqual(requests.map(() => status));
    expect(await stopped).toEqual({ code: 0, signal: null });
  } finally {
    if (held) resumeProcess(held);
  }
}

async function run(baseUrl: string, id: string): Promise<void> {
  const r = await api<ExecResult>(baseUrl, 'POST', `/v1/sessions/${id}/execute`, { command: 'echo x > f' });
  expect(r.body).toMatchObject({ status: 'ok' });
}

describe('loop devices', () => {
  test('detached at delete, expiry and SIGTERM, with pool entries and one-shot places in use', async () => {
    const dir = fs.realpathSync(tempDir('bs-e2e-loops-'));
    const server = await startServer({
      workspaceDir: dir,
      env: { BUBBLE_SANDBOX_SESSION_IDLE_TIMEOUT_SECONDS: '4', BUBBLE_SANDBOX_SWEEP_INTERVAL_SECONDS: '0.5' },
    });
    const create = async (id: string, writableRoot = false) => {
      expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: id, writable_root: writableRoot })).status).toBe(201);
      await run(server.baseUrl, id);
    };
    await create('plain');
    await create('rooted', true); // its overlay is mounted at its first sandbox, on the same image
    expect(mountsUnder(path.join(dir, 'sessions', 'rooted')).filter((m) => m.fsType === 'overlay')).not.toEqual([]);
    for (let i = 0; i < 3; i++) {
      // Each run takes a pool entry or the prepared place, and a place is prepared after it.
      const r = await api<ExecResult>(server.baseUrl, 'POST', '/v1/execute', { command: 'echo x > f' });
      expect(r.body).toMatchObject({ status: 'ok' });
    }
    expect(loopsUnder(dir)).toEqual(expect.arrayContaining([sessionImage('plain'), sessionImage('rooted')]));
    expect(loopsUnder(dir).some((f) => f.startsWith('pool/'))).toBe(true);
    expect(loopsUnder(dir).some((f) => f.startsWith('oneshot/'))).toBe(true);

    expect((await api(server.baseUrl, 'DELETE', '/v1/sessions/plain')).status).toBe(204);
    expect((await api(server.baseUrl, 'DELETE', '/v1/sessions/rooted')).status).toBe(204);
    expect(loopsUnder(dir).filter((f) => f.startsWith('sessions/'))).toEqual([]);

    await create('idle', true);
    await create('idle-plain');
    // Expiry: the idle sweep removes both (4 s idle, swept every 0.5 s).
    const left = await waitUntil(() => loopsUnder(dir).filter((f) => f.startsWith('sessions/')), (l) => l.length === 0, 15_000, 100);
    expect(left).toEqual([]);
    expect((await api(server.baseUrl, 'GET', '/v1/sessions/idle')).status).toBe(404);

    await create('at-stop', true);
    expect(await server.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(loopsUnder(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
  }, 90_000);

  test('after a SIGKILL the next start detaches what no live session holds, and its stop leaves none', async () => {
    const dir = fs.realpathSync(tempDir('bs-e2e-loops-'));
    const first = await startServer({ workspaceDir: dir });
    for (const [id, writableRoot] of [['live', false], ['cut-rooted', true], ['cut-plain', false]] as const) {
      expect((await api(first.baseUrl, 'POST', '/v1/sessions', { session_id: id, writable_root: writableRoot })).status).toBe(201);
      await run(first.baseUrl, id);
    }
    expect(await first.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    // What a crash inside a delete with clear_data=false leaves (its record is deleted first,
    // the images unmounted after): the session dir, still mounted, without a record.
    for (const id of ['cut-rooted', 'cut-plain']) fs.rmSync(path.join(dir, 'sessions', id, 'meta.json'));
    expect(loopsUnder(dir)).toEqual(expect.arrayContaining([sessionImage('live'), sessionImage('cut-rooted'), sessionImage('cut-plain')]));

    const second = await startServer({ workspaceDir: dir });
    const sessions = loopsUnder(dir).filter((f) => f.startsWith('sessions/'));
    expect(sessions).toEqual([sessionImage('live')]);
    expect(mountsUnder(path.join(dir, 'sessions', 'cut-rooted'))).toEqual([]);
    expect(mountsUnder(path.join(dir, 'sessions', 'cut-plain'))).toEqual([]);
    // The kept workspaces are still there, and a create re-attaches one with its files.
    const again = await api(second.baseUrl, 'POST', '/v1/sessions', { session_id: 'cut-plain' });
    expect(again.status).toBe(201);
    const cat = await api<ExecResult>(second.baseUrl, 'POST', '/v1/sessions/cut-plain/execute', { command: 'cat f' });
    expect(cat.body).toMatchObject({ status: 'ok', stdout: 'x\n' });

    expect(await second.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(loopsUnder(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
  }, 90_000);

  test('a create still building its workspace when SIGTERM arrives: the stop waits for it and unmounts it too', async () => {
    const dir = fs.realpathSync(tempDir('bs-e2e-loops-'));
    // No pool: a create formats and mounts its image itself. Its mkfs runs a few ms, so creates
    // are made one after another until one's mkfs is caught and held stopped.
    const server = await startServer({ workspaceDir: dir, env: { BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '0' } });
    // Created, then unmounted as any live session at a stop.
    await holdMkfsAcrossStop(server, (i) => api(server.baseUrl, 'POST', '/v1/sessions', { session_id: `c${i}` }), 201);
    expect(loopsUnder(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
  }, 60_000);

  test('a one-shot run still building its workspace when SIGTERM arrives: its workspace is gone when the process exits', async () => {
    // As above, with POST /v1/execute: the run's workspace is removed after its answer.
    const dir = fs.realpathSync(tempDir('bs-e2e-loops-'));
    const server = await startServer({ workspaceDir: dir, env: { BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '0' } });
    // Accepted before the stop, each run is answered; the held one's workspace goes after its answer.
    await holdMkfsAcrossStop(server, () => api(server.baseUrl, 'POST', '/v1/execute', { command: 'echo x > f' }), 200);
    expect(loopsUnder(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
  }, 60_000);
});
