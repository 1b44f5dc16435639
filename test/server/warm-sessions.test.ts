// Warm sandboxes of sessions through the HTTP routes: the next execution of a session claims the
// sandbox built after the previous one (counted in /metrics), a change of the session's
// configuration and its delete end it, and nothing of it is left afterwards.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createTestApp, useTestApp } from '../helpers/app.js';
import { descendantsOf, readHostProcess, stillRunning, waitUntil, type HostProcess } from '../helpers/host-processes.js';
import { createSession, execute } from '../helpers/http.js';
import { warmOwner } from '../../src/sessions/session-manager.js';

const t = useTestApp({ EXECUTION_TIMEOUT_SECONDS: '20', WARM_MIN_AVAILABLE_BYTES: '0' });

async function metric(name: string, labels: string): Promise<number> {
  const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

const hits = () => metric('bubble_sandbox_warm_claims_total', 'result="hit"');

/** Waits until the session's warm sandbox is built and idle. */
async function warmFor(id: string): Promise<void> {
  const warm = t.sandbox.runner.warm;
  if (!warm) throw new Error('warm sandboxes are off');
  await waitUntil(() => ({ owners: warm.owners(), counts: warm.counts() }), (s) => s.owners.includes(warmOwner(id)) && s.counts.starting === 0, 30_000);
  expect(warm.owners()).toContain(warmOwner(id));
}

/**
 * The memory cgroup a host process is in (cgroup v1: the memory hierarchy; v2: the unified one).
 * Execution cgroups are recycled (cgroup-pool.ts), so a warm sandbox's cgroup may outlive it,
 * empty: what must not be left is a process in it.
 */
function memoryCgroupOf(pid: number): string | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return null;
  }
  const lines = text.split('\n').filter(Boolean).map((l) => l.split(':'));
  const v1 = lines.find(([, controllers]) => controllers?.split(',').includes('memory'));
  if (v1) return path.join('/sys/fs/cgroup/memory', v1.slice(2).join(':'));
  const v2 = lines.find(([id, controllers]) => id === '0' && controllers === '');
  return v2 ? path.join('/sys/fs/cgroup', v2.slice(2).join(':')) : null;
}

/** Processes still in a cgroup directory ([] when the directory is gone). */
function processesIn(dir: string): number[] {
  try {
    return fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

describe('warm sandboxes of a session', () => {
  it('the next execution claims the sandbox built after the previous one', async () => {
    await createSession(t.app, { session_id: 'w1' });
    const first = await execute(t.app, 'w1', { script: 'print("one")' });
    expect(first).toMatchObject({ status: 'ok', stdout: 'one\n' });
    await warmFor('w1');
    const before = await hits();
    const second = await execute(t.app, 'w1', { script: 'import os\nprint("two", os.getcwd())' });
    expect(second).toMatchObject({ status: 'ok', stdout: 'two /workspace\n', files: { created: [] } });
    expect(await hits()).toBe(before + 1);
    await warmFor('w1');
    const third = await execute(t.app, 'w1', { command: 'echo three > out.txt; cat out.txt' });
    expect(third).toMatchObject({ status: 'ok', stdout: 'three\n', files: { created: ['out.txt'] } });
    expect(await hits()).toBe(before + 2);
    expect(await metric('bubble_sandbox_warm_sandboxes', 'state="idle"')).toBeGreaterThanOrEqual(0);
  });

  it('other limits miss and replace the warm sandbox', async () => {
    await createSession(t.app, { session_id: 'w2' });
    await execute(t.app, 'w2', { script: 'print(1)' });
    await warmFor('w2');
    const before = await hits();
    const replacedBefore = await metric('bubble_sandbox_warm_discarded_total', 'reason="replaced"');
    const r = await execute(t.app, 'w2', { script: 'print(2)', limits: { pids: 50 } });
    expect(r).toMatchObject({ status: 'ok', stdout: '2\n' });
    expect(await hits()).toBe(before);
    // The replacement is built after the answer.
    for (let i = 0; i < 100 && (await metric('bubble_sandbox_warm_discarded_total', 'reason="replaced"')) === replacedBefore; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await metric('bubble_sandbox_warm_discarded_total', 'reason="replaced"')).toBe(replacedBefore + 1);
  });

  it('a change of the network policy drops the warm sandbox', async () => {
    expect(t.sessions.networks.available.unavailable.allowlist).toBeUndefined();
    await createSession(t.app, { session_id: 'w3', network: { mode: 'allowlist', allow: ['example.com'] } });
    await execute(t.app, 'w3', { script: 'print(1)' });
    await warmFor('w3');
    const patched = await t.app.inject({ method: 'PATCH', url: '/v1/sessions/w3/network', payload: { allow: ['example.org'] } });
    expect(patched.statusCode).toBe(200);
    expect(t.sandbox.runner.warm?.owners()).not.toContain(warmOwner('w3'));
    const before = await hits();
    await execute(t.app, 'w3', { script: 'print(2)' });
    expect(await hits()).toBe(before);
  }, 60_000);

  it('delete ends the warm sandbox: no process, no cgroup left', async () => {
    await createSession(t.app, { session_id: 'w4' });
    await execute(t.app, 'w4', { script: 'print(1)' });
    await warmFor('w4');
    // This service's own: another service on the host (the quick start's, running beside npm test) has warm sandboxes too.
    // A session's warm sandbox is a fork server (WARM_FORK_SERVER=on): the server and the processes
    // of the execution it forked ahead (forks: the same command line), each in a cgroup.
    const launchers = descendantsOf(process.pid).filter((p) => p.command.includes('/sandbox/warm-launch.py --fork-server'));
    expect(launchers.length).toBeGreaterThan(0);
    const cgroups = launchers.map((p) => memoryCgroupOf(p.pid));
    // The launchers run in execution cgroups of this service, not in the service's own.
    const own = memoryCgroupOf(process.pid);
    for (const dir of cgroups) {
      expect(dir).not.toBeNull();
      expect(dir).not.toBe(own);
      expect(processesIn(dir as string).length).toBeGreaterThan(0);
    }
    const others = new Set(t.sandbox.runner.warm?.owners().filter((o) => o !== warmOwner('w4')));
    for (const id of ['w1', 'w2', 'w3']) if (others.has(warmOwner(id))) await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}` });
    const res = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/w4' });
    expect(res.statusCode).toBe(204);
    expect(t.sandbox.runner.warm?.owners()).toEqual([]);
    await t.sandbox.runner.warm?.settled();
    expect(stillRunning(launchers)).toEqual([]);
    for (const dir of cgroups) expect(processesIn(dir as string)).toEqual([]);
  });
});

describe('warm sandboxes of one-shot executions', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const oneShot = async (payload: Record<string, unknown>) => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/execute', payload });
    expect(res.statusCode, res.body).toBe(200);
    return res.json<{ status: string; stdout: string; files: { created: string[]; outputs: { path: string; content_base64: string }[] } }>();
  };

  it('the next one-shot run of an environment takes the prepared workspace and claims its warm sandbox', async () => {
    await oneShot({ script: 'print(1)' });
    await waitUntil(() => t.sessions.oneShotWarm.preparedEnvironments(), (e) => e.includes('bare'), 10_000);
    const owner = t.sandbox.runner.warm?.owners().find((o) => o.startsWith('oneshot:'));
    expect(owner).toBeDefined();
    await waitUntil(() => t.sandbox.runner.warm?.counts().starting, (n) => n === 0, 30_000);
    const before = await hits();
    const r = await oneShot({ files: [{ path: 'in.txt', content_base64: b64('input') }], script: 'open("out.txt", "w").write(open("in.txt").read().upper())\nprint("done")' });
    expect(r).toMatchObject({ status: 'ok', stdout: 'done\n', files: { created: ['out.txt'] } });
    expect(r.files.outputs).toEqual([expect.objectContaining({ path: 'out.txt', content_base64: b64('INPUT') })]);
    expect(await hits()).toBe(before + 1);
    // The one it used is gone; a new one is prepared for the next run.
    expect(t.sandbox.runner.warm?.owners()).not.toContain(owner);
  });
});

describe('expiry and shutdown end warm sandboxes', () => {
  it('an expired session\'s warm sandbox goes with it; shutdown ends the rest', async () => {
    let now = Date.now();
    const app = await createTestApp({ WARM_MIN_AVAILABLE_BYTES: '0', SESSION_IDLE_TIMEOUT_SECONDS: '60' }, { now: () => now });
    let closed = false;
    try {
      const warm = app.sandbox.runner.warm;
      if (!warm) throw new Error('warm sandboxes are off');
      const ready = async (id: string) => {
        await waitUntil(() => ({ owners: warm.owners(), counts: warm.counts() }), (s) => s.owners.includes(warmOwner(id)) && s.counts.starting === 0, 30_000);
        expect(warm.owners()).toContain(warmOwner(id));
      };
      await createSession(app.app, { session_id: 'old' });
      await execute(app.app, 'old', { script: 'print(1)' });
      await ready('old');
      now += 120_000;
      await createSession(app.app, { session_id: 'new' });
      await execute(app.app, 'new', { script: 'print(1)' });
      await ready('new');
      const processes = () => warm.pids().map((p) => ({ ...p, proc: readHostProcess(p.pid) }));
      const before = processes();
      expect(before.map((p) => p.owner).sort()).toEqual([warmOwner('new'), warmOwner('old')]);
      expect(before.every((p) => p.proc !== null)).toBe(true);
      const old = before.filter((p) => p.owner === warmOwner('old')).map((p) => p.proc as HostProcess);
      const rest = before.filter((p) => p.owner !== warmOwner('old')).map((p) => p.proc as HostProcess);
      expect(await app.sessions.sweep()).toEqual(['old']);
      expect(stillRunning(old)).toEqual([]);
      expect(warm.owners()).toEqual([warmOwner('new')]);
      closed = true;
      await app.close();
      expect(warm.owners()).toEqual([]);
      expect(stillRunning(rest)).toEqual([]);
    } finally {
      if (!closed) await app.close();
    }
  });
});
