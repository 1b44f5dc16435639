// The spawn helper (build/bubble-sandbox-spawner, src/sandbox/spawner.ts) through real bwrap: the
// sandbox it starts sees the same descriptors as one the service forks itself, a planted link
// fails closed, exit codes and signals come back, kill reaches the sandbox, and the spawner's
// death or shutdown leaves nothing running.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { spawnSandbox, type SandboxSpec, type SpawnDeps, type SpawnedSandbox } from '../../src/sandbox/spawn.js';
import { createSpawner, spawnerPathFor } from '../../src/sandbox/spawner.js';
import { isRunning, waitUntil } from '../helpers/host-processes.js';
import { createSandboxFixture, DEFAULT_LIMITS, EXEC_HELPER_PATH, IS_ROOT, TEST_UID } from '../helpers/sandbox.js';

const fx = createSandboxFixture();
const spawner = createSpawner(spawnerPathFor(EXEC_HELPER_PATH));
const viaSpawner: SpawnDeps = { ...fx.runner.spawnDeps, spawner };
const viaNode: SpawnDeps = { ...fx.runner.spawnDeps, spawner: null };
let n = 0;

afterAll(async () => {
  await spawner.close();
  fx.dispose();
});

function spec(command: SandboxSpec['command'], more: Partial<SandboxSpec> = {}): SandboxSpec {
  return {
    environment: null, workspaceDir: fx.workspace, volumes: [], command, env: {},
    limits: DEFAULT_LIMITS, identity: IS_ROOT ? { uid: TEST_UID, gid: TEST_UID } : null, cpuSeconds: 30, cgroupName: `spawner-test-${process.pid}-${n++}`,
    ...more,
  };
}

async function output(sb: SpawnedSandbox): Promise<{ stdout: string; stderr: string; code: number | null; signal: NodeJS.Signals | null }> {
  let stdout = '';
  let stderr = '';
  sb.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  sb.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const { code, signal } = await sb.exited;
  await sb.dispose();
  return { stdout, stderr, code, signal };
}

/** Polls until `cond` holds (the project's waitUntil, for a plain condition). */
const until = (cond: () => boolean, ms = 5_000) => waitUntil(cond, (ok) => ok, ms, 20);

// Each open descriptor inside with what it is; the script and stdin arrive through their descriptors.
const FDS = String.raw`import json, os, stat, sys
fds = {}
for f in os.listdir('/proc/self/fd'):
    try: fds[f] = stat.S_IFMT(os.fstat(int(f)).st_mode)
    except OSError: pass
print(json.dumps({'fds': fds, 'stdin': sys.stdin.read(), 'ws': os.listdir('/workspace')}))`;

describe('the spawn helper', () => {
  test('the sandbox gets stdio and the extra pipe as sockets at the same numbers as a service fork, and nothing else', async () => {
    fs.writeFileSync(path.join(fx.workspace, 'seen.txt'), 'x');
    const run = async (deps: SpawnDeps) => {
      const sb = await spawnSandbox(deps, spec(['/usr/bin/python3', '-I', '/sandbox/fds.py'], { sandboxFiles: { 'fds.py': FDS }, extraPipes: 1 }));
      sb.stdin.end('from stdin');
      const extraFd = sb.extra[0]?.fd;
      const r = await output(sb);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      return { extraFd, ...(JSON.parse(r.stdout) as { fds: Record<string, number>; stdin: string; ws: string[] }) };
    };
    const mine = await run(viaSpawner);
    const node = await run(viaNode);
    expect(mine.stdin).toBe('from stdin');
    expect(mine.ws).toContain('seen.txt'); // the workspace descriptor reached bwrap
    expect(mine.extraFd).toBe(node.extraFd);
    // listdir's own descriptor is gone by the time fstat runs; what is left is what was inherited.
    expect(Object.keys(mine.fds).sort()).toEqual(['0', '1', '2', String(mine.extraFd)].sort());
    expect(Object.keys(mine.fds).sort()).toEqual(Object.keys(node.fds).sort());
    for (const fd of Object.values(mine.fds)) expect(fd).toBe(fs.constants.S_IFSOCK);
  });

  test("the service's ends are non-blocking (a full stdin must not freeze the event loop), the sandbox's stay blocking", async () => {
    const O_NONBLOCK = 0o4000;
    const flagsOf = (fd: number | string) => parseInt(/^flags:\s+([0-7]+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? 'NaN', 8);
    const sb = await spawnSandbox(viaSpawner, spec(([ctl]) => ['/usr/bin/python3', '-I', '-c', "import re, sys\nfor fd in (0, 1, 2, int(sys.argv[1])):\n    print(int(re.search(r'flags:\\s+([0-7]+)', open(f'/proc/self/fdinfo/{fd}').read()).group(1), 8) & 0o4000)", String(ctl)], { extraPipes: 1 }));
    const mine = [sb.stdin, sb.stdout, sb.stderr, ...sb.extra.map((e) => e.stream)].map((s) => (s as unknown as { _handle: { fd: number } })._handle.fd);
    for (const fd of mine) expect(flagsOf(fd) & O_NONBLOCK, `service end ${fd}`).toBe(O_NONBLOCK);
    sb.stdin.end();
    const r = await output(sb);
    expect(r.stdout.trim().split('\n')).toEqual(['0', '0', '0', '0']);
  });

  test('a workspace replaced by a symlink fails closed and nothing starts', async () => {
    const target = path.dirname(fx.workspace);
    const link = path.join(target, 'planted');
    fs.symlinkSync(fx.workspace, link);
    try {
      await expect(spawnSandbox(viaSpawner, spec(['/bin/true'], { workspaceDir: link }))).rejects.toThrow(/ELOOP|ENOTDIR/);
      // A directory that is really there still works through the same spawner.
      const r = await output(await spawnSandbox(viaSpawner, spec(['/bin/true'])));
      expect(r.code).toBe(0);
    } finally {
      fs.unlinkSync(link);
    }
  });

  test('exit codes and signals are reported', async () => {
    expect((await output(await spawnSandbox(viaSpawner, spec(['/bin/sh', '-c', 'exit 7'])))).code).toBe(7);
    const sb = await spawnSandbox(viaSpawner, spec(['/bin/sleep', '60']));
    setTimeout(() => sb.kill(), 100);
    const r = await output(sb);
    expect(r).toMatchObject({ code: null, signal: 'SIGKILL' });
  });

  test('kill reaches the sandbox: bwrap and the program are gone', async () => {
    const sb = await spawnSandbox(viaSpawner, spec(['/bin/sh', '-c', 'echo ready; exec sleep 60']));
    await new Promise<void>((resolve) => sb.stdout.once('data', () => resolve()));
    const pid = sb.child.pid ?? 0;
    expect(isRunning(pid)).toBe(true);
    sb.kill();
    const r = await sb.exited;
    expect(r.signal).toBe('SIGKILL');
    expect(isRunning(pid)).toBe(false);
    await sb.dispose();
  });

  test('a sandbox killed the instant it was spawned leaves no process behind, even without a cgroup to empty', async () => {
    // bwrap asks for its sandbox init's death with it only once that child runs: killed in the
    // instant after its clone, bwrap left the init running under the host's init (found through
    // warm.test.ts hanging on close). The spawner now kills the children first and reaps strays.
    const marker = `spawner-race-${process.pid}`;
    const left = () => fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
      try {
        return fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(marker);
      } catch {
        return false;
      }
    });
    for (let i = 0; i < 30; i++) {
      const sb = await spawnSandbox(viaSpawner, spec(['/bin/sh', '-c', 'sleep 60', marker]));
      // Vary the instant of the kill over the sandbox's start: at once, or after 0-7 ms.
      if (i % 8 !== 0) await new Promise((r) => setTimeout(r, i % 8));
      sb.kill();
      const r = await Promise.race([sb.exited, new Promise<'stuck'>((resolve) => setTimeout(() => resolve('stuck'), 5_000))]);
      expect(r, `round ${i}: the sandbox's sockets stayed open`).not.toBe('stuck');
      await sb.dispose();
    }
    await until(() => left().length === 0, 5_000).catch(() => undefined);
    expect(left()).toEqual([]);
  });

  test("the spawner's death ends its sandboxes, is reported, and the next spawn starts a new spawner", async () => {
    const own = createSpawner(spawnerPathFor(EXEC_HELPER_PATH));
    try {
      const sb = await spawnSandbox({ ...viaSpawner, spawner: own }, spec(['/bin/sh', '-c', 'echo ready; exec sleep 60']));
      await new Promise<void>((resolve) => sb.stdout.once('data', () => resolve()));
      const first = own.pid ?? 0;
      const bwrap = sb.child.pid ?? 0;
      process.kill(first, 'SIGKILL');
      const r = await sb.exited;
      expect(r).toEqual({ code: null, signal: 'SIGKILL' });
      await until(() => !isRunning(bwrap)); // --die-with-parent
      const again = await output(await spawnSandbox({ ...viaSpawner, spawner: own }, spec(['/bin/sh', '-c', 'echo again'])));
      expect(again.stdout).toBe('again\n');
      expect(own.pid).not.toBe(first);
    } finally {
      await own.close();
    }
  });

  test('shutdown ends the spawner and every sandbox it runs; spawning afterwards fails', async () => {
    const own = createSpawner(spawnerPathFor(EXEC_HELPER_PATH));
    const sb = await spawnSandbox({ ...viaSpawner, spawner: own }, spec(['/bin/sh', '-c', 'echo ready; exec sleep 60']));
    await new Promise<void>((resolve) => sb.stdout.once('data', () => resolve()));
    const helper = own.pid ?? 0;
    const bwrap = sb.child.pid ?? 0;
    await own.close();
    expect(isRunning(helper)).toBe(false);
    expect((await sb.exited).signal).toBe('SIGKILL');
    await until(() => !isRunning(bwrap));
    await sb.dispose();
    await expect(spawnSandbox({ ...viaSpawner, spawner: own }, spec(['/bin/true']))).rejects.toThrow(/closed/);
  });
});

describe('the spawn helper and the service', () => {
  test('it dies with the process that started it', async () => {
    const { spawn } = await import('node:child_process');
    const script = `const c = require('node:child_process').spawn(${JSON.stringify(spawnerPathFor(EXEC_HELPER_PATH))}, [], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] }); c.unref(); c.channel.unref(); console.log(c.pid); setInterval(() => {}, 1000);`;
    const service = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const helper = await new Promise<number>((resolve) => service.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
    await until(() => isRunning(helper));
    service.kill('SIGKILL');
    await until(() => !isRunning(helper));
  });
});
