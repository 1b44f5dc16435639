// Warm (pre-started) sandboxes through the real sandbox (bwrap, cgroups): a claimed warm sandbox
// answers like a cold one, nothing of one execution reaches the next, limits and timeouts hold,
// and the pool's bounds (count, memory budget, memory pressure) are kept.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Environment } from '../../src/sandbox/environments.js';
import type { Sandbox } from '../../src/sandbox/sandbox.js';
import type { Program, RunRequest, RunResult } from '../../src/sandbox/types.js';
import { WarmPool, type WarmDiscardReason, type WarmTarget } from '../../src/sandbox/warm/warm-pool.js';
import { createWarmFixture, type WarmFixture } from '../helpers/warm-fixture.js';
import { hostProcessesMatching, stillRunning, waitUntil } from '../helpers/host-processes.js';
import { createSandboxFixture } from '../helpers/sandbox.js';

let fixture: WarmFixture;
let sandbox: Sandbox;
let pandas: Environment;
let workDir: string;
let claims: ('hit' | 'miss')[];
let discarded: WarmDiscardReason[];

beforeAll(async () => {
  fixture = await createWarmFixture('bs-warm-');
  ({ sandbox, pandas, workDir, claims, discarded } = fixture);
});
afterAll(async () => {
  await fixture.close();
});

/** A target of its own. */
const newTarget = (environment: Environment | null, slot: number): WarmTarget => fixture.newTarget(environment, slot);
const pool = (): WarmPool => fixture.pool();

/** Pre-start for `owner` and wait until it is idle. */
async function prestarted(owner: string, target: WarmTarget): Promise<void> {
  pool().prestart(owner, target);
  await waitUntil(() => pool().counts(), (c) => c.starting === 0, 30_000);
  expect(pool().owners()).toContain(owner);
}

/** One run, with whether it claimed a warm sandbox. */
async function run(target: WarmTarget, program: Program, extra: Partial<RunRequest> = {}): Promise<RunResult & { claim: 'hit' | 'miss' | undefined }> {
  const n = claims.length;
  const r = await sandbox.runner.run({ ...target, program, timeoutMs: 20_000, maxOutputChars: 100_000, ...extra });
  return { ...r, claim: claims[n] };
}

const py = (source: string): Program => ({ kind: 'script', source });

describe('a warm hit answers like a cold run', () => {
  test('script, command and argv', async () => {
    const t = newTarget(null, 11);
    await prestarted('a', t);
    const script = await run(t, py('import sys\nprint("x", __name__, __file__, sys.argv)\n'));
    expect(script).toMatchObject({ claim: 'hit', status: 'ok', stdout: "x __main__ /sandbox/main.py ['/sandbox/main.py']\n", stderr: '' });
    await prestarted('a', t);
    const cmd = await run(t, { kind: 'command', command: 'echo $((6*7)); exit 3' });
    expect(cmd).toMatchObject({ claim: 'hit', status: 'error', exit_code: 3, stdout: '42\n' });
    await prestarted('a', t);
    const argv = await run(t, { kind: 'argv', argv: ['echo', '$HOME', '*'] }, { env: { EXTRA: '1' } });
    expect(argv).toMatchObject({ claim: 'hit', status: 'ok', stdout: '$HOME *\n' });
    await prestarted('a', t);
    const missing = await run(t, { kind: 'argv', argv: ['no-such-program'] });
    const cold = await run(t, { kind: 'argv', argv: ['no-such-program'] });
    expect(missing.claim).toBe('hit');
    expect(cold.claim).toBe('miss');
    expect({ exit: missing.exit_code, stderr: missing.stderr }).toEqual({ exit: cold.exit_code, stderr: cold.stderr });
  });

  test('an uncaught exception is reported as in a cold run (type, line, traceback)', async () => {
    const t = newTarget(null, 12);
    const source = 'def f(d):\n    return d["k"]\n\nf({})\n';
    const cold = await run(t, py(source));
    await prestarted('b', t);
    const warm = await run(t, py(source));
    expect(warm.claim).toBe('hit');
    expect(cold.claim).toBe('miss');
    expect(warm.error).toEqual(cold.error);
    expect(warm.stderr).toBe(cold.stderr);
    expect(warm.exit_code).toBe(1);
  });

  test('a file uploaded between the pre-start and the claim is seen, and imports as a module', async () => {
    const t = newTarget(null, 13);
    await prestarted('c', t);
    fs.writeFileSync(path.join(t.workspaceDir, 'helper_mod.py'), 'VALUE = 41 + 1\n');
    fs.writeFileSync(path.join(t.workspaceDir, 'data.txt'), 'uploaded\n');
    const r = await run(t, py('import helper_mod\nprint(helper_mod.VALUE, open("data.txt").read().strip())\n'));
    expect(r).toMatchObject({ claim: 'hit', stdout: '42 uploaded\n' });
  });

  test('request variables reach a warm command; a script in a preloading environment with variables runs cold', async () => {
    const t = newTarget(pandas, 14);
    await prestarted('d', t);
    const cmd = await run(t, { kind: 'command', command: 'echo "$GREETING"' }, { env: { GREETING: 'hello' } });
    expect(cmd).toMatchObject({ claim: 'hit', stdout: 'hello\n' });
    await prestarted('d', t);
    const script = await run(t, py('import os\nprint(os.environ["GREETING"])\n'), { env: { GREETING: 'hi' } });
    expect(script).toMatchObject({ claim: 'miss', stdout: 'hi\n' });
    expect(discarded).toContain('env');
  }, 60_000);
});

describe('freshness: nothing of one execution reaches the next', () => {
  test('a module global, a file in /tmp and a background process', async () => {
    const t = newTarget(null, 15);
    await prestarted('e', t);
    const probe = [
      'import sys, os',
      'print(hasattr(sys, "warm_marker"), os.path.exists("/tmp/left-behind"))',
      'print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))',
      'print(os.getpid())',
    ];
    const first = await run(t, py([
      'import sys, subprocess, os',
      'sys.warm_marker = 1',
      'open("/tmp/left-behind", "w").write("x")',
      'subprocess.Popen(["sleep", "4242"], start_new_session=True)',
      ...probe,
    ].join('\n')));
    // The probe sees the state where it was made: it would see it in the next execution too.
    expect(first.claim).toBe('hit');
    const [setFlags, setPids] = first.stdout.trim().split('\n');
    expect(setFlags).toBe('True True');
    expect((JSON.parse(setPids ?? '[]') as number[]).length).toBeGreaterThan(2);
    await prestarted('e', t);
    const second = await run(t, py(probe.join('\n')));
    expect(second.claim).toBe('hit');
    const [flags, pids, me] = second.stdout.trim().split('\n');
    expect(flags).toBe('False False');
    // Only bwrap's init (1) and the program itself: the sleeper died with the first PID namespace.
    expect(pids).toBe(`[1, ${me}]`);
    expect(hostProcessesMatching('sleep 4242')).toEqual([]);
  });

  test('a preloaded module behaves as a fresh import: a mutation of pandas is gone in the next execution', async () => {
    const t = newTarget(pandas, 16);
    await prestarted('f', t);
    const first = await run(t, py('import pandas\npandas.warm_marker = 1\npandas.DataFrame.warm_attr = 2\nprint(pandas.DataFrame({"a": [1, 2]})["a"].sum())\n'));
    expect(first).toMatchObject({ claim: 'hit', status: 'ok', stdout: '3\n' });
    await prestarted('f', t);
    const second = await run(t, py('import pandas, sys\nprint(hasattr(pandas, "warm_marker"), hasattr(pandas.DataFrame, "warm_attr"), "pandas" in sys.modules)\n'));
    expect(second).toMatchObject({ claim: 'hit', stdout: 'False False True\n' });
  }, 60_000);

  test('a workspace pandas.py shadows the preloaded pandas, as in a cold run', async () => {
    const t = newTarget(pandas, 17);
    await prestarted('g', t);
    fs.writeFileSync(path.join(t.workspaceDir, 'pandas.py'), 'WHO = "the workspace"\n');
    const source = 'import pandas\nprint(pandas.WHO)\n';
    const warmTry = await run(t, py(source));
    const cold = await run(t, py(source));
    expect(warmTry.stdout).toBe('the workspace\n');
    expect(warmTry.stdout).toBe(cold.stdout);
    expect(discarded).toContain('shadowed');
  }, 60_000);

  test('a workspace module named like one the launcher itself imports (json.py) wins as in a cold run; data files do not count', async () => {
    const t = newTarget(null, 23);
    fs.writeFileSync(path.join(t.workspaceDir, 'json.txt'), 'not a module\n');
    await prestarted('m', t);
    const plain = await run(t, py('import json\nprint(json.dumps([1]))\n'));
    expect(plain).toMatchObject({ claim: 'hit', stdout: '[1]\n' });
    fs.writeFileSync(path.join(t.workspaceDir, 'json.py'), 'def dumps(x):\n    return "mine"\n');
    await prestarted('m', t);
    const n = discarded.length;
    const shadowed = await run(t, py('import json\nprint(json.dumps([1]))\n'));
    expect(shadowed).toMatchObject({ claim: 'miss', stdout: 'mine\n' });
    expect(discarded.slice(n)).toContain('shadowed');
  });
  test('an extension module named like one the launcher imported, with the sandbox interpreter\'s own ending, shadows it: the run goes cold', async () => {
    const t = newTarget(null, 25);
    // The ending the launcher reports, e.g. .cpython-311-x86_64-linux-gnu.so (not among the defaults).
    const ending = execFileSync('/usr/bin/python3', ['-I', '-c', 'import _imp; print(_imp.extension_suffixes()[0])'], { encoding: 'utf8' }).trim();
    expect(ending).toMatch(/^\.cpython-/);
    fs.writeFileSync(path.join(t.workspaceDir, `json${ending}`), 'not an ELF file\n');
    await prestarted('s', t);
    const n = discarded.length;
    const r = await run(t, py('print("ran")\n'));
    expect(r.claim).toBe('miss');
    expect(discarded.slice(n)).toContain('shadowed');
  }, 60_000);
});

describe('limits hold on a warm sandbox', () => {
  test('the timeout kills the whole tree', async () => {
    const t = newTarget(null, 18);
    await prestarted('h', t);
    const r = await run(t, py('import subprocess, time\nsubprocess.Popen(["sleep", "4343"])\nprint("started", flush=True)\ntime.sleep(60)\n'), { timeoutMs: 1500 });
    expect(r).toMatchObject({ claim: 'hit', status: 'timeout', timed_out: true, stdout: 'started\n' });
    expect(r.duration_ms).toBeLessThan(10_000);
    await waitUntil(() => hostProcessesMatching('sleep 4343'), (p) => p.length === 0, 5000);
    expect(hostProcessesMatching('sleep 4343')).toEqual([]);
  });

  test('the memory limit ends a warm execution as oom', async () => {
    expect(sandbox.cgroupMode).not.toBe('none');
    const t = { ...newTarget(null, 19), limits: { ...sandbox.defaultLimits, memoryBytes: 64 * 1024 * 1024 } };
    await prestarted('i', t);
    const r = await run(t, py('x = bytearray(256 * 1024 * 1024)\nprint(len(x))\n'));
    expect(r).toMatchObject({ claim: 'hit', status: 'oom' });
  });

  test('resource figures are of the same kind warm and cold', async () => {
    const t = newTarget(null, 20);
    const source = 'x = bytearray(48 * 1024 * 1024)\nsum(range(2_000_000))\nprint("done")\n';
    const cold = await run(t, py(source));
    await prestarted('j', t);
    const warm = await run(t, py(source));
    expect(cold.claim).toBe('miss');
    expect(warm.claim).toBe('hit');
    for (const r of [cold, warm]) {
      expect(r.resources.memory_peak_bytes).toBeGreaterThan(48 * 1024 * 1024);
      expect(r.resources.cpu_ms).toBeGreaterThan(0);
    }
    // Both count the whole sandbox from the interpreter's start: within a factor of each other.
    const ratio = (warm.resources.memory_peak_bytes ?? 0) / (cold.resources.memory_peak_bytes ?? 1);
    expect(ratio).toBeGreaterThan(0.7);
    expect(ratio).toBeLessThan(1.4);
  });
});

describe('the pool', () => {
  test('a changed target misses and the old warm sandbox is replaced', async () => {
    const t = newTarget(null, 21);
    await prestarted('k', t);
    const n = discarded.length;
    const other = { ...t, limits: { ...t.limits, pids: t.limits.pids - 1 } };
    const r = await run(other, py('print(1)'));
    expect(r.claim).toBe('miss');
    pool().prestart('k', other);
    expect(discarded.slice(n)).toContain('replaced');
    await pool().dropOwner('k');
  });

  test('dropping an owner ends its sandbox: no process, no /sandbox directory', async () => {
    const t = newTarget(null, 22);
    await prestarted('l', t);
    const dirs = () => fs.readdirSync(path.join(workDir, 'warm'));
    expect(dirs().length).toBeGreaterThan(0);
    const launchers = hostProcessesMatching('/sandbox/warm-launch.py').filter((p) => p.uid === (t.identity?.uid ?? process.getuid?.()));
    expect(launchers.length).toBeGreaterThan(0); // bwrap, its init, the launcher
    await pool().dropOwner('l');
    await pool().settled();
    expect(pool().owners()).not.toContain('l');
    // Only the pool's own launcher directory stays (until it closes).
    const launcherDir = pool().launcherFiles().dir;
    expect(launcherDir).not.toBeNull();
    expect(dirs()).toEqual([path.basename(launcherDir ?? '')]);
    expect(stillRunning(launchers)).toEqual([]);
  });

  test('launcher files are read-only hard links to one copy per pool, with a .pyc of each loaded module made for the sandbox\'s interpreter', async () => {
    for (const owner of pool().owners()) await pool().dropOwner(owner); // room for this one whatever ran before
    const t = newTarget(null, 24);
    await prestarted('p', t);
    await waitUntil(() => pool().launcherFiles().precompiled.length, (n) => n === 3, 30_000);
    await pool().dropOwner('p');
    await prestarted('p', t); // started with the compiled files in place
    const { dir: launchers } = pool().launcherFiles();
    const files = ['warm-launch.py', 'warm-body.py', 'launch.py', 'fork-body.py', 'warm-body.pyc', 'launch.pyc', 'fork-body.pyc'];
    for (const f of files) expect(fs.statSync(path.join(launchers ?? '', f)).mode & 0o777).toBe(0o444);
    const sandboxDirs = fs.readdirSync(path.join(workDir, 'warm')).map((d) => path.join(workDir, 'warm', d)).filter((d) => d !== launchers);
    expect(sandboxDirs.length).toBeGreaterThan(0);
    for (const d of sandboxDirs) {
      for (const f of files) expect(fs.statSync(path.join(d, f)).ino).toBe(fs.statSync(path.join(launchers ?? '', f)).ino);
    }
    const check = [
      'import importlib.util, os',
      "for name in ('warm-body.pyc', 'launch.pyc'):",
      "    with open('/sandbox/' + name, 'rb') as f:",
      '        print(name, f.read(4) == importlib.util.MAGIC_NUMBER, os.access(\'/sandbox/\' + name, os.W_OK))',
    ].join('\n');
    const r = await run(t, py(check));
    expect(r).toMatchObject({ claim: 'hit', stdout: 'warm-body.pyc True False\nlaunch.pyc True False\n', exit_code: 0 });
  }, 60_000);

  test('a .pyc made for another interpreter is passed over: the launcher compiles the source as before', async () => {
    for (const owner of pool().owners()) await pool().dropOwner(owner);
    const t = newTarget(null, 26);
    await prestarted('q', t);
    const { dir: launchers, precompiled } = pool().launcherFiles();
    expect(precompiled).toEqual(['warm-body.pyc', 'launch.pyc', 'fork-body.pyc']);
    // What a root filesystem with another Python version finds: a magic number that is not its own.
    const originals = precompiled.map((n) => ({ file: path.join(launchers ?? '', n), data: fs.readFileSync(path.join(launchers ?? '', n)) }));
    for (const { file, data } of originals) {
      const other = Buffer.from(data);
      other.writeUInt16LE(data.readUInt16LE(0) ^ 0x5555, 0);
      fs.writeFileSync(file, other); // root: the read-only mode does not stop it
    }
    try {
      await pool().dropOwner('q');
      await prestarted('q', t);
      const r = await run(t, py('import sys\nprint("ran", sys.argv[0])\nraise ValueError("boom")\n'));
      expect(r).toMatchObject({ claim: 'hit', stdout: 'ran /sandbox/main.py\n' });
      expect(r.error).toMatchObject({ type: 'ValueError', line: 3 });
    } finally {
      // The pool's own files again, for whatever runs next.
      for (const { file, data } of originals) fs.writeFileSync(file, data);
    }
  }, 60_000);

  test('leftover /sandbox directories of a process that is gone are removed; a live one\'s stay', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-warm-left-'));
    try {
      fs.mkdirSync(path.join(dir, '999999999-1'));
      fs.mkdirSync(path.join(dir, `${process.ppid}-1`));
      WarmPool.clearLeftovers(dir);
      expect(fs.readdirSync(dir)).toEqual([`${process.ppid}-1`]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bounds: count, memory budget, memory pressure', () => {
  const bounded = (warm: { max?: number; memoryBudgetBytes?: number; minAvailableBytes?: number; idleMs?: number }, mem: { available: number }) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-warm-pool-'));
    fs.chmodSync(dir, 0o711);
    const f = createSandboxFixture({
      warm: { dir, max: 4, idleMs: 60_000, memoryBudgetBytes: 1024 ** 3, minAvailableBytes: 0, cpuSeconds: 60, readMemAvailable: () => mem.available, ...warm },
    });
    const reasons: WarmDiscardReason[] = [];
    const p = f.runner.warm;
    if (!p) throw new Error('no pool');
    p.observe({ onDiscarded: (r) => reasons.push(r) });
    return {
      p, reasons, workspace: f.workspace,
      close: async () => {
        await p.close();
        f.dispose();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  };
  const idle = async (p: WarmPool, n: number) => waitUntil(() => p.counts(), (c) => c.starting === 0 && c.idle === n, 30_000);
  const target = (workspace: string): WarmTarget => ({
    environment: null, workspaceDir: workspace, volumes: [], limits: sandbox.defaultLimits, identity: process.getuid?.() === 0 ? { uid: 201000, gid: 201000 } : null,
  });

  test('memory pressure discards idle warm sandboxes and starts none', async () => {
    const mem = { available: 8 * 1024 ** 3 };
    const b = bounded({ minAvailableBytes: 1024 ** 3 }, mem);
    try {
      b.p.prestart('x', target(b.workspace));
      b.p.prestart('y', target(b.workspace));
      await idle(b.p, 2);
      expect(b.p.counts().memoryBytes).toBeGreaterThan(0);
      mem.available = 100 * 1024 * 1024;
      await b.p.check();
      expect(b.p.counts().idle).toBe(0);
      expect(b.reasons.filter((r) => r === 'memory_pressure')).toHaveLength(2);
      b.p.prestart('z', target(b.workspace));
      expect(b.p.counts()).toMatchObject({ idle: 0, starting: 0 });
    } finally {
      await b.close();
    }
  });

  test('pre-starts in quick succession read the available memory once; the periodic check reads it afresh', async () => {
    let reads = 0;
    const mem = {
      get available() {
        reads++;
        return 8 * 1024 ** 3;
      },
    };
    const b = bounded({ minAvailableBytes: 1024 ** 3 }, mem);
    try {
      b.p.prestart('x', target(b.workspace));
      b.p.prestart('y', target(b.workspace));
      b.p.prestart('z', target(b.workspace));
      expect(b.p.counts().starting).toBe(3);
      expect(reads).toBe(1);
      await b.p.check();
      expect(reads).toBe(2);
    } finally {
      await b.close();
    }
  });

  test('the memory budget and the count are kept: the least recently built go first', async () => {
    const mem = { available: 8 * 1024 ** 3 };
    const one = bounded({}, mem);
    let each: number;
    try {
      one.p.prestart('x', target(one.workspace));
      await idle(one.p, 1);
      each = one.p.counts().memoryBytes;
    } finally {
      await one.close();
    }
    expect(each).toBeGreaterThan(0);
    const b = bounded({ memoryBudgetBytes: Math.round(each * 2.5), max: 3 }, mem);
    try {
      for (const owner of ['p', 'q', 'r']) {
        b.p.prestart(owner, target(b.workspace));
        await idle(b.p, Math.min(2, ['p', 'q', 'r'].indexOf(owner) + 1));
      }
      expect(b.p.counts().idle).toBe(2);
      expect(b.p.counts().memoryBytes).toBeLessThanOrEqual(Math.round(each * 2.5));
      expect(b.p.owners().sort()).toEqual(['q', 'r']);
      expect(b.reasons).toContain('budget');
    } finally {
      await b.close();
    }
    const c = bounded({ max: 1 }, mem);
    try {
      c.p.prestart('s', target(c.workspace));
      await idle(c.p, 1);
      c.p.prestart('t', target(c.workspace));
      await idle(c.p, 1);
      expect(c.p.owners()).toEqual(['t']);
      expect(c.reasons).toEqual(['max']);
    } finally {
      await c.close();
    }
  });

  test('an idle warm sandbox past the idle time is discarded', async () => {
    const b = bounded({ idleMs: 200 }, { available: 8 * 1024 ** 3 });
    try {
      b.p.prestart('x', target(b.workspace));
      await idle(b.p, 1);
      await new Promise((r) => setTimeout(r, 400));
      await b.p.check();
      expect(b.p.counts().idle).toBe(0);
      expect(b.reasons).toEqual(['idle']);
    } finally {
      await b.close();
    }
  });
});
