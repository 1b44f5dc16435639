// A session's processes count against the session (api-contract.md, "Processes, terminals and
// ports"): they nest in one cgroup of the session whose memory and pids limits are one execution's
// (MEMORY_LIMIT_BYTES, PIDS_LIMIT), so two processes together get no more than one would. Real
// cgroups (v1 or v2, as root); another session's processes are not counted; the session's cgroup
// directories are gone once it is deleted.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { hostProcessesInCgroup, waitUntil } from '../helpers/host-processes.js';
import { createSession } from '../helpers/http.js';
import { getProcess, sessionUid, startProcess, waitForEnd, waitForOutput } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const LIMIT = 128 * MiB;
const PIDS = 64;
const ROOT = '/sys/fs/cgroup';
const IS_ROOT = process.getuid?.() === 0;

const t = useTestApp({ MEMORY_LIMIT_BYTES: String(LIMIT), PIDS_LIMIT: String(PIDS), MAX_PROCESSES_PER_SESSION: '3', PROCESS_MAX_SECONDS: '120' });

/** Allocates (and touches) 100 MiB, says so, holds it. */
const HOLD_100 = "import time; b = b'x' * (100 << 20); print('held', flush=True); time.sleep(1000)";
/** Forks children that sleep until fork fails, reports how many, holds them. */
const FORK_ALL = [
  'import os, time', 'n = 0', 'while n < 10000:', '    try:', '        pid = os.fork()', '    except OSError:', '        break',
  '    if pid == 0:', '        time.sleep(1000); os._exit(0)', '    n += 1', "print('forked', n, flush=True)", 'time.sleep(1000)',
].join('\n');
const FORK_ONE = "import os\npid = os.fork()\nif pid == 0: os._exit(0)\nos.waitpid(pid, 0); print('fork ok', flush=True)";

interface SessionGroup { /** One per hierarchy (v1) or one (v2). */ dirs: string[]; memDir: string; pidsDir: string }

/** The session cgroup of a running process sandbox of this session, from a host process's /proc/<pid>/cgroup. */
async function sessionGroupOf(id: string): Promise<SessionGroup> {
  const uid = await sessionUid(t.sessions, id);
  const [proc] = await waitUntil(() => hostProcessesInCgroup(`proc-${process.pid}-`).filter((p) => p.uid === uid), (l) => l.length > 0, 5000);
  expect(proc, 'a process of the session on the host').toBeDefined();
  const lines = fs.readFileSync(`/proc/${proc?.pid}/cgroup`, 'utf8').split('\n').filter((l) => l.includes(`/sess-${process.pid}-`));
  const out: SessionGroup = { dirs: [], memDir: '', pidsDir: '' };
  for (const line of lines) {
    const [, controllers = '', cgPath = ''] = line.split(':');
    // The session's cgroup is the parent of the process's own.
    const rel = path.dirname(cgPath);
    expect(path.basename(rel)).toMatch(new RegExp(`^sess-${process.pid}-\\d+$`));
    const dir = controllers === '' ? path.join(ROOT, rel) : path.join(ROOT, controllers, rel);
    if (!fs.existsSync(dir)) continue; // a v1 hierarchy mounted under another name
    out.dirs.push(dir);
    if (controllers === '' || controllers.split(',').includes('memory')) out.memDir = dir;
    if (controllers === '' || controllers.split(',').includes('pids')) out.pidsDir = dir;
  }
  expect(out.memDir, lines.join('\n')).not.toBe('');
  expect(out.pidsDir, lines.join('\n')).not.toBe('');
  return out;
}

const read = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : null);
const keyed = (text: string | null, key: string) => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(text ?? '')?.[1] ?? NaN);

describe.skipIf(!IS_ROOT)('a session\'s processes share the session\'s cgroup', () => {
  it('memory: two processes of 100 MiB each do not both fit in the session\'s 128 MiB; another session\'s is unaffected; the cgroup goes with the session', async () => {
    const other = await createSession(t.app);
    const lone = await startProcess(t.app, other.session_id, { argv: ['python3', '-c', HOLD_100] });
    expect((await waitForOutput(t.app, other.session_id, lone.pid, (o) => o.stdout === 'held\n' || o.stderr !== '')).stdout).toBe('held\n');

    const s = await createSession(t.app);
    const first = await startProcess(t.app, s.session_id, { argv: ['python3', '-c', HOLD_100] });
    expect((await waitForOutput(t.app, s.session_id, first.pid, (o) => o.stdout === 'held\n' || o.stderr !== '')).stdout).toBe('held\n');
    const group = await sessionGroupOf(s.session_id);
    const v1 = fs.existsSync(path.join(group.memDir, 'memory.limit_in_bytes'));
    expect(Number(read(path.join(group.memDir, v1 ? 'memory.limit_in_bytes' : 'memory.max')))).toBe(LIMIT);
    expect(read(path.join(group.pidsDir, 'pids.max'))).toBe(String(PIDS));

    const second = await startProcess(t.app, s.session_id, { argv: ['python3', '-c', HOLD_100] });
    // The OOM killer of the session's cgroup takes one of the two (the bigger: usually the first).
    const statesOf = async () => (await Promise.all([first.pid, second.pid].map((pid) => getProcess(t.app, s.session_id, pid)))).map((i) => i.status);
    const deadline = Date.now() + 20_000;
    let states = await statesOf();
    while (states.every((st) => st === 'running') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      states = await statesOf();
    }
    expect(states.filter((st) => st === 'running'), `states ${states.join(',')}`).toHaveLength(1);
    // The one killed was SIGKILLed (the OOM killer); the other goes on to hold its 100 MiB.
    const infos = await Promise.all([first.pid, second.pid].map((pid) => getProcess(t.app, s.session_id, pid)));
    const killed = infos.find((i) => i.status !== 'running');
    const survivor = infos.find((i) => i.status === 'running');
    expect(killed).toMatchObject({ status: 'killed', signal: 'SIGKILL' });
    expect((await waitForOutput(t.app, s.session_id, survivor?.pid ?? '', (o) => o.stdout === 'held\n')).stdout).toBe('held\n');
    // The session's cgroup reached its limit (v1 counts the OOM kill in the victim's own cgroup, gone by now; v2 here too).
    const peak = Number(read(path.join(group.memDir, v1 ? 'memory.max_usage_in_bytes' : 'memory.peak')) ?? NaN);
    const oomKills = v1 ? null : keyed(read(path.join(group.memDir, 'memory.events')), 'oom_kill');
    if (v1 || !Number.isNaN(peak)) {
      expect(peak).toBeLessThanOrEqual(LIMIT);
      expect(peak).toBeGreaterThan(LIMIT - 8 * MiB);
    }
    if (!v1) expect(oomKills).toBeGreaterThanOrEqual(1);
    const usage = Number(read(path.join(group.memDir, v1 ? 'memory.usage_in_bytes' : 'memory.current')));
    expect(usage).toBeLessThanOrEqual(LIMIT);
    console.info(`session memory cgroup: peak ${(peak / MiB).toFixed(1)} MiB, now ${(usage / MiB).toFixed(1)} MiB of ${LIMIT / MiB} MiB (oom_kill ${oomKills ?? 'n/a'}); killed: the ${killed?.pid === first.pid ? 'first' : 'second'}`);

    // The other session's process still holds its 100 MiB.
    expect((await getProcess(t.app, other.session_id, lone.pid)).status).toBe('running');

    const del = await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}` });
    expect(del.statusCode, del.body).toBe(204);
    expect(group.dirs.filter((d) => fs.existsSync(d))).toEqual([]);
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${other.session_id}` });
  });

  it('pids: a fork loop in one process starves the other process of the session, not another session\'s', async () => {
    const s = await createSession(t.app);
    const loop = await startProcess(t.app, s.session_id, { argv: ['python3', '-c', FORK_ALL] });
    const out = await waitForOutput(t.app, s.session_id, loop.pid, (o) => o.stdout.startsWith('forked') || o.stderr !== '', 30_000);
    const forked = Number(/^forked (\d+)/.exec(out.stdout)?.[1]);
    expect(forked, out.stderr).toBeGreaterThan(PIDS / 2);
    expect(forked).toBeLessThan(PIDS);
    const group = await sessionGroupOf(s.session_id);
    const current = Number(read(path.join(group.pidsDir, 'pids.current')));

    // Its sibling cannot fork at all (not even its sandbox's own processes).
    const starved = await startProcess(t.app, s.session_id, { argv: ['python3', '-c', FORK_ONE] });
    const end = await waitForEnd(t.app, s.session_id, starved.pid);
    expect(end.status).not.toBe('running');
    expect(end.exit_code).not.toBe(0);
    // Another session forks as usual.
    const other = await createSession(t.app);
    const fine = await startProcess(t.app, other.session_id, { argv: ['python3', '-c', FORK_ONE] });
    expect(await waitForEnd(t.app, other.session_id, fine.pid)).toMatchObject({ status: 'exited', exit_code: 0 });
    console.info(`session pids cgroup: the loop forked ${forked} children, pids.current=${current} of ${PIDS}; the sibling ended ${end.status} ${end.exit_code}`);

    const del = await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}` });
    expect(del.statusCode, del.body).toBe(204);
    expect(group.dirs.filter((d) => fs.existsSync(d))).toEqual([]);
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${other.session_id}` });
  });
});
