// Fork servers (warm/fork-server.ts, fork-body.py) through the real sandbox (bwrap, cgroups): a
// session's warm sandbox stays and forks each execution. Proves that a forked execution answers as
// a cold run does, that nothing of one execution reaches the next, that every process of an
// execution is in a cgroup of its own (limits, timeout, figures hold), that executions run at once
// side by side, that a discarded or killed server leaves nothing behind and costs only the speed-up,
// and that a program cannot reach the server or its own init.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { Environment } from '../../src/sandbox/environments.js';
import { warmPoolSettings, type Sandbox } from '../../src/sandbox/sandbox.js';
import type { Program, RunRequest, RunResult } from '../../src/sandbox/types.js';
import { WarmPool, type WarmDiscardReason, type WarmTarget } from '../../src/sandbox/warm/warm-pool.js';
import { createWarmFixture, type WarmFixture } from '../helpers/warm-fixture.js';
import { ENVIRONMENTS_DIR } from '../helpers/host-env.js';
import { descendantsOf, hostProcessesMatching, readHostProcess, stillRunning, waitForSleep, waitUntil, type HostProcess } from '../helpers/host-processes.js';

let fixture: WarmFixture;
let sandbox: Sandbox;
let pandas: Environment;
let workDir: string;
let claims: ('hit' | 'miss')[];
let discarded: WarmDiscardReason[];

beforeAll(async () => {
  fixture = await createWarmFixture('bs-fork-', { BUBBLE_SANDBOX_WARM_FORK_SERVER: 'on' });
  ({ sandbox, pandas, workDir, claims, discarded } = fixture);
  expect(sandbox.cgroupMode).not.toBe('none');
});
afterAll(async () => {
  await fixture.close();
});

/** A target of its own: identity slots 40-60 are this file's. */
const newTarget = (environment: Environment | null, slot: number): WarmTarget => fixture.newTarget(environment, slot);
const pool = (): WarmPool => fixture.pool();

/** Starts `owner`'s fork server (as a session does) and waits until it is idle; its bwrap's host pid. */
async function forkServer(owner: string, target: WarmTarget): Promise<number> {
  pool().prestart(owner, target, { reuse: true });
  await waitUntil(() => pool().counts(), (c) => c.starting === 0, 60_000);
  expect(pool().owners()).toContain(owner);
  const pid = pool().pids().find((p) => p.owner === owner)?.pid;
  if (pid === undefined) throw new Error(`no warm sandbox for ${owner}`);
  return pid;
}

/**
 * The server's Python process on the host: the one running warm-launch.py --fork-server below bwrap whose parent
 * does not (everything it forks has the same command line: forked, never exec'ed; bwrap's own
 * command line names the script too, as an argument).
 */
function serverProcess(bwrapPid: number): HostProcess {
  const below = descendantsOf(bwrapPid).filter((p) => p.argv[1] === '/sandbox/warm-launch.py' && p.argv[2] === '--fork-server');
  const pids = new Set(below.map((p) => p.pid));
  const server = below.filter((p) => !pids.has(p.ppid));
  if (server.length !== 1) throw new Error(`expected one fork server below ${bwrapPid}, found ${JSON.stringify(server)}`);
  return server[0] as HostProcess;
}

/** /proc/<pid>/cgroup as hierarchy -> path (cgroup v1: one line per hierarchy), null when gone. */
function cgroupsOf(pid: number): Map<string, string> | null {
  try {
    const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
    return new Map(lines.map((l) => {
      const [, controllers, p] = /^\d+:([^:]*):(.*)$/.exec(l) ?? [];
      return [controllers ?? '', p ?? ''];
    }));
  } catch {
    return null;
  }
}

/** The host directory of a cgroup v1 hierarchy's cgroup (memory -> /sys/fs/cgroup/memory/...). */
function cgroupDir(hierarchy: string, cgPath: string): string {
  return path.join('/sys/fs/cgroup', hierarchy.replace(/^name=/, ''), cgPath);
}

/** The hierarchies the service places sandboxes in (the server's cgroup there is not the root). */
function managed(server: Map<string, string>): string[] {
  return [...server].filter(([h, p]) => ['memory', 'pids', 'cpu'].some((c) => h.split(',').includes(c)) && p !== '/').map(([h]) => h);
}

/** One run, with whether it claimed a warm sandbox (a fork server's execution: 'hit'). */
async function run(target: WarmTarget, program: Program, extra: Partial<RunRequest> = {}): Promise<RunResult & { claim: 'hit' | 'miss' | undefined }> {
  const n = claims.length;
  const r = await sandbox.runner.run({ ...target, program, timeoutMs: 20_000, maxOutputChars: 100_000, ...extra });
  return { ...r, claim: claims[n] };
}

const py = (source: string): Program => ({ kind: 'script', source });
/** What a program finds around it, printed line by line: compared between a cold run and a forked one. */
const ENVIRONMENT_PROBE = [
  'import os, resource, signal, socket',
  'print("ids", os.getuid(), os.getgid(), os.getgroups(), os.getpid(), os.getppid())',
  'print("cwd", os.getcwd(), "umask", oct(os.umask(0o22)), "host", socket.gethostname())',
  'for n in ("CPU", "FSIZE", "NOFILE", "NPROC", "AS", "CORE", "STACK"):',
  '    print("rlimit", n, resource.getrlimit(getattr(resource, "RLIMIT_" + n)))',
  'status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())',
  'for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):',
  '    print("status", k, status.get(k, "").strip())',
  'print("dev", sorted(os.listdir("/dev")), sorted(os.listdir("/dev/pts")))',
  'st = os.statvfs("/tmp")',
  'print("tmp", st.f_blocks * st.f_frsize, sorted(os.listdir("/tmp")), oct(os.stat("/tmp").st_mode), os.stat("/tmp").st_uid)',
  // A command has no /sandbox cold and an empty one forked: the same to it.
  'entries = sorted(os.listdir("/sandbox")) if os.path.isdir("/sandbox") else []',
  'print("sandbox", entries, entries and os.access("/sandbox", os.W_OK))',
  'print("fds", len(os.listdir("/proc/self/fd")))',
  'print("signals", [int(signal.getsignal(s)) if isinstance(signal.getsignal(s), int) else "handler" for s in (signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD, signal.SIGXFSZ, signal.SIGTERM)])',
  'print("env", sorted(os.environ))',
  // The mount each path resolves to (the last one there), its type and options; a forked
  // execution's are mounted over the server's, which it cannot reach.
  'top = {}',
  'for l in open("/proc/self/mounts"):',
  '    f = l.split()',
  '    top[f[1]] = f[2] + " " + f[3]',
  'for m in sorted(top):',
  '    if not m.startswith("/sandbox/") and (m != "/sandbox" or entries):',
  '        print("mount", m, top[m])',
].join('\n');
/** What a run answers, without what differs between any two runs (duration, resources) and the claim. */
const answer = (r: RunResult) => ({ status: r.status, exit_code: r.exit_code, signal: r.signal, stdout: r.stdout, stderr: r.stderr, error: r.error });

describe('a forked execution answers as a cold run does', () => {
  test('script, command and argv: output, exit code, exit 7, a signal, an exception, variables, sys.argv and __file__', async () => {
    const t = newTarget(null, 40);
    const programs: [Program, Partial<RunRequest>][] = [
      [py('import sys\nprint("x", __name__, __file__, sys.argv)\nprint("to stderr", file=sys.stderr)\n'), {}],
      [py('import sys\nprint("bye")\nsys.exit(7)\n'), {}],
      [py('def f(d):\n    return d["k"]\n\nf({})\n'), {}],
      [py('import os\nprint(os.environ["GREETING"])\n'), { env: { GREETING: 'hi script' } }],
      [{ kind: 'command', command: 'echo $((6*7)); echo oops >&2; exit 7' }, {}],
      [{ kind: 'command', command: 'echo before; kill -9 $$; echo after' }, {}],
      [{ kind: 'command', command: 'echo "$GREETING"' }, { env: { GREETING: 'hello command' } }],
      [{ kind: 'argv', argv: ['sh', '-c', 'echo "$0" "$1" "$GREETING"', '$HOME', '*'] }, { env: { GREETING: 'hello argv' } }],
      [{ kind: 'argv', argv: ['no-such-program'] }, {}],
      [{ kind: 'command', command: 'cat; echo; wc -c' }, { stdin: 'from stdin\n' }],
      [py('import sys\nsys.stdout.write("y" * 300_000)\n'), { maxOutputChars: 100_000 }],
      // What the program is given besides its program: identity, limits, capabilities, /dev, /tmp, descriptors.
      [py(ENVIRONMENT_PROBE), {}],
      [{ kind: 'argv', argv: ['python3', '-c', ENVIRONMENT_PROBE] }, {}],
      // How a script ends: threads joined, atexit, exit with a message, os._exit, KeyboardInterrupt, stdin.
      [py('import atexit, sys, threading, time\natexit.register(lambda: print("atexit"))\nthreading.Thread(target=lambda: (time.sleep(0.2), print("thread"))).start()\nprint("main")\nsys.exit("a message")\n'), {}],
      [py('import os\nprint("x", end="")\nos._exit(5)\n'), {}],
      [py('print(input())\nraise KeyboardInterrupt\n'), { stdin: 'typed\n' }],
      [py('import signal, os\nprint("term", flush=True)\nos.kill(os.getpid(), signal.SIGTERM)\n'), {}],
      // Standard streams by path, as shell scripts use them, and what kind of file they are (sockets on both paths: Node's pipes).
      [{ kind: 'command', command: 'echo out > /dev/stdout; echo err > /dev/stderr; cat /dev/stdin; stat -L -c %F /dev/stdin /dev/stdout /dev/stderr' }, { stdin: 'in\n' }],
      // The session: led by pid 1 (the namespace's init), the program in it, not leading it.
      [py('import os\nprint(os.getsid(0), os.getpgrp(), os.getpid())\n'), {}],
    ];
    const cold: RunResult[] = [];
    for (const [program, extra] of programs) {
      const r = await run(t, program, extra);
      expect(r.claim).toBe('miss');
      cold.push(r);
    }
    await forkServer('a', t);
    const warm: RunResult[] = [];
    for (const [program, extra] of programs) {
      const r = await run(t, program, extra);
      expect(r.claim).toBe('hit');
      warm.push(r);
    }
    expect(warm.map(answer)).toEqual(cold.map(answer));
    // What each of them is (both paths alike, as just compared).
    const [script, exit7, exception, scriptEnv, command, killed, commandEnv, argv, , stdin, large, probeScript, probeArgv, ending, osExit, interrupted, terminated] = warm as [
      RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult, RunResult];
    expect(script).toMatchObject({ status: 'ok', exit_code: 0, stdout: "x __main__ /sandbox/main.py ['/sandbox/main.py']\n", stderr: 'to stderr\n' });
    expect(exit7).toMatchObject({ status: 'error', exit_code: 7, stdout: 'bye\n' });
    expect(exception).toMatchObject({ status: 'error', exit_code: 1 });
    // The line where it was raised, in the script's own function; the traceback through the call on line 4.
    expect(exception.error).toMatchObject({ type: 'KeyError', line: 2, message: "'k'" });
    expect(exception.stderr).toMatch(/^Traceback \(most recent call last\):\n {2}File "\/sandbox\/main\.py", line 4, in <module>\n[\s\S]*line 2, in f\n[\s\S]*KeyError: 'k'\n$/);
    expect(scriptEnv).toMatchObject({ status: 'ok', stdout: 'hi script\n' });
    expect(command).toMatchObject({ status: 'error', exit_code: 7, stdout: '42\n', stderr: 'oops\n' });
    expect(killed).toMatchObject({ status: 'killed', exit_code: null, signal: 'SIGKILL', stdout: 'before\n' });
    expect(commandEnv).toMatchObject({ status: 'ok', stdout: 'hello command\n' });
    expect(argv).toMatchObject({ status: 'ok', stdout: '$HOME * hello argv\n' });
    expect(stdin).toMatchObject({ status: 'ok', stdout: 'from stdin\n\n0\n' });
    expect(large).toMatchObject({ status: 'ok', truncated: true });
    expect(large.stdout).toMatch(/^y{1000}/);
    expect(large.stdout.length).toBeLessThan(110_000);
    for (const probe of [probeScript, probeArgv]) {
      expect(probe).toMatchObject({ status: 'ok', stderr: '' });
      const lines = probe.stdout.split('\n');
      for (const l of ['status CapEff 0000000000000000', 'status CapPrm 0000000000000000', 'status CapBnd 0000000000000000', 'status NoNewPrivs 1', 'status Seccomp 2', 'ids 1000 1000 [] 2 1']) {
        expect(lines).toContain(l);
      }
      expect(lines).toContainEqual(expect.stringMatching(/^mount \/proc proc rw,nosuid,nodev,noexec/));
      expect(lines).toContainEqual(expect.stringMatching(/^mount \/tmp tmpfs rw,nosuid,nodev,.*size=65536k/));
    }
    expect(ending).toMatchObject({ status: 'error', exit_code: 1, stdout: 'main\nthread\natexit\n', stderr: 'a message\n' });
    expect(osExit).toMatchObject({ status: 'error', exit_code: 5, stdout: 'x' });
    expect(interrupted).toMatchObject({ stdout: 'typed\n' });
    expect(interrupted.stderr).toMatch(/KeyboardInterrupt\n$/);
    expect(terminated).toMatchObject({ status: 'killed', signal: 'SIGTERM', stdout: 'term\n' });
    expect(probeScript.stdout).toMatch(/^sandbox \['launch\.py', 'main\.py'\] False$/m);
    await pool().dropOwner('a');
  }, 120_000);

  test('in a preloading environment a script that imports the preloads finds the interpreter as in a cold run', async () => {
    const t = newTarget(pandas, 52);
    // Imported first: before that, a preloaded interpreter differs as the preload says (the modules
    // are there, with the warning filters numpy and matplotlib add at import).
    const source = [
      'import matplotlib, numpy, pandas',
      'import faulthandler, json, locale, os, signal, sys, warnings',
      'print(json.dumps(sorted(os.environ.items())))',
      'print(json.dumps(sys.path), sys.argv, __name__, __file__, sys.flags, sys.getrecursionlimit(), faulthandler.is_enabled())',
      'print(sys.stdout.encoding, sys.stdout.errors, sys.stdout.line_buffering, sys.stderr.errors, locale.getpreferredencoding(False), sys.getfilesystemencoding())',
      'print([os.get_blocking(fd) for fd in (0, 1, 2)], [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD, signal.SIGTERM)])',
      'print(len(warnings.filters), sys.excepthook is sys.__excepthook__, sys.displayhook is sys.__displayhook__, os.getcwd())',
      'print(pandas.__version__, numpy.__version__, pandas.DataFrame({"a": [1, 2]}).to_json(), matplotlib.get_backend())',
      // The server has threads of numpy's BLAS when it forks (3 threads seen here): its work still runs here.
      'm = numpy.arange(250_000, dtype=float).reshape(500, 500) % 7 + numpy.eye(500) * 1000',
      'print(round(float(numpy.linalg.inv(m).dot(m).trace())), pandas.DataFrame({"k": [1, 1, 2], "v": [1, 2, 3]}).groupby("k").v.sum().tolist())',
      'import matplotlib.pyplot as plt',
      'plt.plot([1, 2], [3, 4])',
      'plt.savefig("/tmp/p.png")',
      'print(open("/tmp/p.png", "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n")',
    ].join('\n');
    const cold = await run(t, py(source));
    expect(cold).toMatchObject({ claim: 'miss', status: 'ok', stderr: '' });
    await forkServer('l', t);
    const warm = await run(t, py(source));
    expect(warm).toMatchObject({ claim: 'hit', status: 'ok', stderr: '' });
    expect(warm.stdout).toBe(cold.stdout);
    expect(warm.stdout).toMatch(/^\[\["HOME", "\/tmp"\].*\["VIRTUAL_ENV", "\/opt\/venv"\]\]$/m);
    expect(warm.stdout).toMatch(/^\d+\.\d+\.\d+ \d+\.\d+\.\d+ \{"a":\{"0":1,"1":2\}\} agg$/im);
    expect(warm.stdout).toMatch(/^500 \[3, 3\]\nTrue\n$/m);
    await pool().dropOwner('l');
  }, 120_000);
});

describe('freshness: nothing of one execution reaches the next on one fork server', () => {
  test('a module global, /tmp, /dev/shm, a background process, SysV shared memory, random and numpy.random', async () => {
    const t = newTarget(pandas, 41);
    await forkServer('b', t);
    // Everything the first execution leaves, looked at by the same probe in both.
    const probe = [
      'import ctypes, os, random, sys, numpy',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'shm = libc.shmget(0x4242, 4096, 0o600)',
      'print(hasattr(sys, "fork_marker"), os.path.exists("/tmp/left-behind"), os.path.exists("/dev/shm/left-behind"), shm >= 0)',
      'print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))',
      'print(os.getpid())',
      'print(repr(random.random()), repr(float(numpy.random.rand())))',
    ];
    const first = await run(t, py([
      'import ctypes, subprocess, sys',
      'sys.fork_marker = 1',
      'open("/tmp/left-behind", "w").write("x")',
      'open("/dev/shm/left-behind", "w").write("x")',
      'assert ctypes.CDLL(None, use_errno=True).shmget(0x4242, 4096, 0o1000 | 0o600) >= 0, "shmget"',
      'subprocess.Popen(["sleep", "4242.5"], start_new_session=True)',
      ...probe,
    ].join('\n')));
    expect(first).toMatchObject({ claim: 'hit', status: 'ok' });
    // The probe sees each thing where it was made: it would see it in the next execution too.
    const [setFlags, setPids, , firstRandom] = first.stdout.trim().split('\n');
    expect(setFlags).toBe('True True True True');
    expect((JSON.parse(setPids ?? '[]') as number[]).length).toBeGreaterThan(2);
    await waitUntil(() => hostProcessesMatching('sleep 4242.5'), (p) => p.length === 0, 5000);
    expect(hostProcessesMatching('sleep 4242.5')).toEqual([]);
    const second = await run(t, py(probe.join('\n')));
    expect(second).toMatchObject({ claim: 'hit', status: 'ok' });
    const [flags, pids, me, secondRandom] = second.stdout.trim().split('\n');
    expect(flags).toBe('False False False False');
    // Only the namespace's init (1) and the program itself: the sleeper died with the first.
    expect(pids).toBe(`[1, ${me}]`);
    const [r1, n1] = (firstRandom ?? '').split(' ');
    const [r2, n2] = (secondRandom ?? '').split(' ');
    expect(r1).toMatch(/^0\.\d+/);
    expect(n1).toMatch(/^0\.\d+/);
    expect(r2).not.toBe(r1);
    expect(n2).not.toBe(n1);
    await pool().dropOwner('b');
  }, 120_000);
});

describe('cgroups: every process of an execution is in a cgroup of its own', () => {
  test('the spare and a running execution are outside the server\'s cgroup; inside, /proc/self/cgroup shows the root', async () => {
    const t = newTarget(null, 42);
    const bwrap = await forkServer('c', t);
    const server = serverProcess(bwrap);
    const own = cgroupsOf(server.pid);
    if (own === null) throw new Error('no fork server');
    const hierarchies = managed(own);
    expect(hierarchies.length).toBeGreaterThanOrEqual(2);
    // A process below the server is in a cgroup of an execution: in each of those hierarchies, not the server's.
    const placement = () => descendantsOf(server.pid).map((p) => {
      const cg = cgroupsOf(p.pid);
      return { pid: p.pid, apart: cg !== null && hierarchies.every((h) => cg.get(h) !== own.get(h) && cg.get(h) !== undefined), memory: cg?.get('memory') };
    });
    // The spare alone, forked ahead: its first process, the init and the program's process waiting.
    // Its first process is forked in the server's cgroup and does nothing (it waits for 'p') until
    // the service has placed it: looked at once placed (a placement that never comes fails below).
    const spare = await waitUntil(placement, (ps) => ps.length >= 3 && ps.every((p) => p.apart), 10_000);
    expect(spare.length).toBe(3);
    expect(spare.filter((p) => !p.apart)).toEqual([]);
    const running = run(t, { kind: 'command', command: 'cat /proc/self/cgroup; (sleep 3.4141 &); sleep 1.4141; echo done' });
    await waitForSleep('1.4141');
    await waitForSleep('3.4141');
    // This execution's four or five (first, init, sh, both sleeps) and the next spare's three, placed.
    const both = await waitUntil(placement, (ps) => ps.length >= 7 && ps.every((p) => p.apart), 10_000);
    expect(both.length).toBeGreaterThanOrEqual(7);
    expect(both.filter((p) => !p.apart)).toEqual([]);
    expect(new Set(both.map((p) => p.memory)).size).toBe(2);
    const r = await running;
    expect(r).toMatchObject({ claim: 'hit', status: 'ok' });
    const inside = r.stdout.trim().split('\n');
    expect(inside.at(-1)).toBe('done');
    const lines = inside.slice(0, -1);
    expect(lines.length).toBeGreaterThanOrEqual(hierarchies.length);
    for (const line of lines) expect(line).toMatch(/^\d+:[^:]*:\/$/);
    await pool().dropOwner('c');
  }, 60_000);

  test('the memory limit ends an execution as oom; the server stays', async () => {
    const t = { ...newTarget(null, 43), limits: { ...sandbox.defaultLimits, memoryBytes: 64 * 1024 * 1024 } };
    await forkServer('d', t);
    const r = await run(t, py('x = bytearray(256 * 1024 * 1024)\nprint(len(x))\n'));
    expect(r).toMatchObject({ claim: 'hit', status: 'oom' });
    const next = await run(t, py('print("still here")\n'));
    expect(next).toMatchObject({ claim: 'hit', status: 'ok', stdout: 'still here\n' });
    // A program may make its init the OOM killer's first choice (same uid, /proc/1/oom_score_adj):
    // the init dies first, and the run is still reported as oom.
    const victim = await run(t, py('open("/proc/1/oom_score_adj", "w").write("1000")\nx = bytearray(256 * 1024 * 1024)\nprint(len(x))\n'));
    expect(victim).toMatchObject({ claim: 'hit', status: 'oom' });
    await pool().dropOwner('d');
  }, 60_000);

  test('the timeout kills the whole tree', async () => {
    const t = newTarget(null, 44);
    await forkServer('e', t);
    const r = await run(t, py('import subprocess, time\nsubprocess.Popen(["sleep", "4343.5"], start_new_session=True)\nprint("started", flush=True)\ntime.sleep(60)\n'), { timeoutMs: 1500 });
    expect(r).toMatchObject({ claim: 'hit', status: 'timeout', timed_out: true, stdout: 'started\n', signal: 'SIGKILL' });
    expect(r.duration_ms).toBeLessThan(10_000);
    await waitUntil(() => hostProcessesMatching('sleep 4343.5'), (p) => p.length === 0, 5000);
    expect(hostProcessesMatching('sleep 4343.5')).toEqual([]);
    await pool().dropOwner('e');
  }, 60_000);

  test('a cancellation kills the whole tree; the server forks the next', async () => {
    const t = newTarget(null, 53);
    await forkServer('m', t);
    const abort = new AbortController();
    const running = run(t, { kind: 'command', command: '(sleep 4545.5 &); echo started; sleep 60' }, { signal: abort.signal });
    await waitForSleep('4545.5');
    abort.abort();
    const r = await running;
    expect(r).toMatchObject({ claim: 'hit', status: 'killed', signal: 'SIGKILL', stdout: 'started\n' });
    await waitUntil(() => hostProcessesMatching('sleep 4545.5'), (p) => p.length === 0, 5000);
    expect(hostProcessesMatching('sleep 4545.5')).toEqual([]);
    expect(await run(t, { kind: 'command', command: 'echo next' })).toMatchObject({ claim: 'hit', status: 'ok', stdout: 'next\n' });
    await pool().dropOwner('m');
  }, 60_000);

  test('resource figures: cpu_ms and memory_peak_bytes of the execution', async () => {
    const t = newTarget(null, 45);
    await forkServer('f', t);
    const r = await run(t, py('x = bytearray(48 * 1024 * 1024)\nsum(range(3_000_000))\nprint("done")\n'));
    expect(r).toMatchObject({ claim: 'hit', status: 'ok', stdout: 'done\n' });
    expect(r.resources.cpu_ms).toBeGreaterThan(0);
    expect(r.resources.memory_peak_bytes).toBeGreaterThan(48 * 1024 * 1024);
    await pool().dropOwner('f');
  }, 60_000);

  test('the spare being forked after a claim is counted (forking: 1, as /metrics shows it) until it is ready, then 0', async () => {
    const t = newTarget(null, 56);
    await forkServer('spare-count', t);
    await waitUntil(() => pool().counts(), (c) => c.forking === 0, 20_000);
    const seen: number[] = [];
    pool().observe({ onClaim: (r) => claims.push(r), onDiscarded: (r) => discarded.push(r), onCounts: (c) => seen.push(c.forking) });
    try {
      const r = await run(t, py('print("x")'));
      expect(r).toMatchObject({ claim: 'hit', status: 'ok', stdout: 'x\n' });
      // The refill starts on the event loop's next turn after the claim: on a loaded machine the
      // whole execution may be answered before that, so it is waited for, not expected at once.
      await waitUntil(() => seen.includes(1), (counted) => counted, 10_000);
      expect(seen).toContain(1);
      // Ready again: the refill's spare is the one a next run takes.
      await waitUntil(() => pool().counts(), (c) => c.forking === 0, 20_000);
      expect(seen.at(-1)).toBe(0);
      expect(seen.indexOf(1)).toBeLessThan(seen.lastIndexOf(0));
      const next = await run(t, py('print("y")'));
      expect(next).toMatchObject({ claim: 'hit', status: 'ok', stdout: 'y\n' });
    } finally {
      pool().observe({ onClaim: (r) => claims.push(r), onDiscarded: (r) => discarded.push(r) });
      await pool().dropOwner('spare-count');
    }
    expect(pool().counts().forking).toBe(0);
  }, 60_000);
});

describe('executions at once', () => {
  test('three executions run at once on one fork server, each with its own output', async () => {
    const t = newTarget(null, 46);
    await forkServer('g', t);
    const started = performance.now();
    const rs = await Promise.all(['A', 'B', 'C'].map((x) => run(t, { kind: 'command', command: `sleep 1; echo ${x}; echo err-${x} >&2; exit ${x.charCodeAt(0) - 64}` })));
    const elapsed = performance.now() - started;
    expect(rs.map((r) => r.claim)).toEqual(['hit', 'hit', 'hit']);
    expect(rs.map((r) => [r.stdout, r.stderr, r.exit_code])).toEqual([['A\n', 'err-A\n', 1], ['B\n', 'err-B\n', 2], ['C\n', 'err-C\n', 3]]);
    // Side by side, not one after another (three seconds).
    expect(elapsed).toBeLessThan(2900);
    await pool().dropOwner('g');
  }, 60_000);
});

describe('a fork server that goes', () => {
  /** The server's processes, its descendants (the spare, the running execution) and their cgroups, while `sleepArg` runs. */
  const snapshot = (bwrap: number) => {
    const procs = [readHostProcess(bwrap), ...descendantsOf(bwrap)].filter((p): p is HostProcess => p !== null);
    const dirs = new Set<string>();
    for (const p of procs) {
      for (const [h, cg] of cgroupsOf(p.pid) ?? []) if (['memory', 'pids'].includes(h) && cg !== '/') dirs.add(cgroupDir(h, cg));
    }
    return { procs, dirs: [...dirs] };
  };
  const leftInCgroup = (dir: string) => {
    try {
      return fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim();
    } catch {
      return ''; // gone
    }
  };

  for (const how of ['dropped', 'replaced'] as const) {
    test(`${how} while an execution runs: the execution completes, then nothing of the server or its spare is left`, async () => {
      const t = newTarget(null, how === 'dropped' ? 47 : 48);
      const owner = `h-${how}`;
      const bwrap = await forkServer(owner, t);
      const arg = how === 'dropped' ? '2.0471' : '2.0481';
      const running = run(t, { kind: 'command', command: `sleep ${arg}; echo done` });
      await waitForSleep(arg);
      // bwrap, its init, the server, the running execution's four (first, init, sh, sleep) and the
      // next spare's three (forked after the claim: waited for).
      const before = await waitUntil(() => snapshot(bwrap), (b) => b.procs.length >= 10, 5000);
      expect(before.procs).toHaveLength(10);
      // The server's, the execution's and the spare's cgroups, in two hierarchies.
      expect(before.dirs.length).toBeGreaterThanOrEqual(6);
      const n = discarded.length;
      const gone = how === 'dropped' ? pool().dropOwner(owner) : Promise.resolve(pool().prestart(owner, { ...t, limits: { ...t.limits, pids: t.limits.pids - 1 } }));
      const r = await running;
      expect(r).toMatchObject({ claim: 'hit', status: 'ok', stdout: 'done\n' });
      await gone;
      if (how === 'replaced') await pool().dropOwner(owner);
      await pool().settled();
      expect(discarded.slice(n)).toContain(how);
      expect(stillRunning(before.procs)).toEqual([]);
      // Removed, or emptied and kept for reuse (the cgroup pool): no process in any of them.
      expect(before.dirs.map(leftInCgroup)).toEqual(before.dirs.map(() => ''));
    }, 60_000);
  }

  /** A fork server's processes on the host once its spare is forked: bwrap, its init, the server, the spare's three. */
  const withSpare = (bwrap: number) => waitUntil(() => [readHostProcess(bwrap), ...descendantsOf(bwrap)].filter((p): p is HostProcess => p !== null), (ps) => ps.length >= 6, 10_000);

  test('a killed server: once the pool has seen it, the next run is a miss and runs correctly cold; nothing is left', async () => {
    const t = newTarget(null, 49);
    const bwrap = await forkServer('i', t);
    expect(await withSpare(bwrap)).toHaveLength(6);
    const before = snapshot(bwrap);
    expect(before.procs).toHaveLength(6);
    const n = discarded.length;
    process.kill(bwrap, 'SIGKILL');
    await waitUntil(() => pool().owners(), (o) => !o.includes('i'), 5000);
    expect(discarded.slice(n)).toEqual(['died']);
    const r = await run(t, py('import os\nprint("cold", os.getpid())\n'));
    expect(r).toMatchObject({ claim: 'miss', status: 'ok', stdout: 'cold 2\n' });
    await pool().settled();
    await waitUntil(() => stillRunning(before.procs), (p) => p.length === 0, 5000);
    expect(stillRunning(before.procs)).toEqual([]);
    expect(before.dirs.map(leftInCgroup)).toEqual(before.dirs.map(() => ''));
  }, 60_000);

  test('a server killed while the service was busy (its exit not yet seen): the next run is still a miss, never a run that did not happen', async () => {
    const t = newTarget(null, 51);
    const bwrap = await forkServer('k', t);
    const procs = await withSpare(bwrap);
    expect(procs).toHaveLength(6);
    process.kill(bwrap, 'SIGKILL');
    // The event loop held here, as by other work: the kernel has ended every process of the
    // sandbox (the spare's too) before the service could see bwrap exit.
    const deadline = Date.now() + 5000;
    while (stillRunning(procs).length > 0 && Date.now() < deadline) fs.readFileSync('/proc/self/stat');
    expect(stillRunning(procs)).toEqual([]);
    const started = performance.now();
    const r = await run(t, py('print("ran")\n'));
    expect(r).toMatchObject({ claim: 'miss', status: 'ok', stdout: 'ran\n' });
    // Gone cold at once, not after the fork request's time-out (10 s).
    expect(performance.now() - started).toBeLessThan(5000);
    expect(discarded.at(-1)).toBe('died');
    await pool().dropOwner('k');
  }, 60_000);
});

describe('a program cannot reach the server', () => {
  test('it sees only its own namespace, and signals to its init or writes to /proc/1 do not spoil the status', async () => {
    const t = newTarget(null, 50);
    await forkServer('j', t);
    const r = await run(t, py([
      'import os, signal',
      'print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), os.getpid(), os.getppid())',
      'for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD, signal.SIGKILL):',
      '    os.kill(1, s)',
      'for name, data in (("comm", "x"), ("oom_score_adj", "1000"), ("cmdline", "x"), ("attr/current", "x")):',
      '    try:',
      '        with open("/proc/1/" + name, "w") as f:',
      '            f.write(data)',
      '        print("wrote", name)',
      '    except OSError as e:',
      '        print("refused", name)',
      'try:',
      '    fds = os.listdir("/proc/1/fd")',
      'except OSError:',
      '    fds = []',
      'opened = []',
      'for fd in fds:',
      '    for mode in (os.O_RDONLY, os.O_WRONLY):',
      '        try:',
      '            os.close(os.open("/proc/1/fd/" + fd, mode))',
      '            opened.append(fd)',
      '        except OSError:',
      '            pass',
      'print("init fds opened:", opened)',
      'import time',
      'time.sleep(0.3)',
      'print("alive")',
      'raise SystemExit(3)',
    ].join('\n')));
    expect(r).toMatchObject({ claim: 'hit', status: 'error', exit_code: 3, signal: null });
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('[1, 2] 2 1');
    // Its status goes out on a socket the init holds: not one of its descriptors can be opened.
    expect(lines).toContain('init fds opened: []');
    expect(lines.at(-1)).toBe('alive');
    // The server still forks the next one.
    const next = await run(t, { kind: 'command', command: 'echo next' });
    expect(next).toMatchObject({ claim: 'hit', status: 'ok', stdout: 'next\n' });
    await pool().dropOwner('j');
  }, 60_000);
});

describe('a host that refuses what a fork server needs', () => {
  test('a server that cannot load the seccomp program never says ready; after three in a row sessions get used-once warm sandboxes', async () => {
    // A pool of its own whose seccomp program the kernel refuses (3 bytes: not a filter).
    const deps = { ...sandbox.runner.spawnDeps, seccompProgram: Buffer.from('bad') };
    const own = new WarmPool({
      ...warmPoolSettings(loadConfig({ BUBBLE_SANDBOX_WORKSPACE_DIR: workDir, BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR, BUBBLE_SANDBOX_WARM_MIN_AVAILABLE_BYTES: '0' })),
      dir: path.join(workDir, 'warm-refused'),
      spawnDeps: deps,
      nextCgroupName: (prefix = 'exec') => sandbox.runner.nextCgroupName(`${prefix}-refused`),
    });
    const gone: WarmDiscardReason[] = [];
    own.observe({ onDiscarded: (r) => gone.push(r) });
    try {
      for (const [i, slot] of [52, 53, 54].entries()) {
        expect(own.forkServersGivenUp).toBe(false);
        own.prestart(`r${i}`, newTarget(null, slot), { reuse: true });
        await waitUntil(() => own.counts(), (c) => c.starting === 0 && c.idle === 0, 30_000);
        expect(gone.filter((r) => r === 'died').length).toBe(i + 1);
      }
      expect(own.forkServersGivenUp).toBe(true);
      // From now on a session's warm sandbox is a used-once one (its launcher, not a server).
      own.prestart('r3', newTarget(null, 55), { reuse: true });
      await waitUntil(() => own.pids(), (p) => p.length === 1, 30_000);
      const bwrap = own.pids()[0]?.pid ?? -1;
      await waitUntil(() => descendantsOf(bwrap).map((p) => p.command).join('\n'), (c) => c.includes('warm-launch.py'), 10_000);
      expect(descendantsOf(bwrap).some((p) => p.command.includes('--fork-server'))).toBe(false);
    } finally {
      await own.close();
    }
  }, 90_000);
});
