// The isolation self-test: each probe starts a real sandbox on this host and checks one property
// the design relies on (identity, capabilities, namespaces, network, filesystem, environment,
// descriptors, seccomp, limits). A probe that cannot prove its property fails; nothing is skipped,
// so a host that silently lost a protection (no cgroups, no seccomp) shows up as FAIL.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { baseEnvironment } from './runner.js';
import { explainProbeFailure, IS_ROOT, type Sandbox } from './sandbox.js';
import type { Program, ResourceLimits, RunResult } from './types.js';

export interface SelfTestProbe {
  name: string;
  category: string;
  passed: boolean;
  detail: string;
  duration_ms: number;
}

export interface SelfTestReport {
  passed: boolean;
  probes: SelfTestProbe[];
  duration_ms: number;
}

export interface SelfTestOptions {
  /** Probes running at once (default 2): enough to finish in a few seconds without crowding the host. */
  concurrency?: number;
  /** Identity slot the probes run as (default 0, like the start-up probe). */
  slot?: number;
  logger?: Logger;
}

const MiB = 1024 * 1024;
const CANARY_VARIABLE = 'BUBBLE_SANDBOX_SELFTEST_CANARY';

interface RunOptions {
  limits?: Partial<ResourceLimits>;
  timeoutMs?: number;
  env?: Record<string, string>;
}
interface ProbeContext {
  sandbox: Sandbox;
  identity: { uid: number; gid: number } | null;
  /** One sandbox run in a fresh workspace; the workspace's host path is returned for host-side checks. */
  run(program: Program, opts?: RunOptions): Promise<{ result: RunResult; workspace: string }>;
  /** /proc/self/status of one sandboxed process, read once and shared by the probes that parse it. */
  status(): Promise<Map<string, string>>;
}
interface Outcome {
  passed: boolean;
  detail: string;
}
interface ProbeSpec {
  category: string;
  name: string;
  check(ctx: ProbeContext): Promise<Outcome>;
}

/** A probe that could not get the answer it needs (the sandbox failed, odd output). */
class ProbeFailure extends Error {}

const fail = (detail: string): Outcome => ({ passed: false, detail });
const verdict = (ok: boolean, detail: string): Outcome => ({ passed: ok, detail });
const py = (source: string): Program => ({ kind: 'script', source });
const sh = (command: string): Program => ({ kind: 'command', command });
const catStatus: Program = { kind: 'argv', argv: ['/bin/cat', '/proc/self/status'] };
const token = () => randomBytes(8).toString('hex');

/** Details are shown to operators and may reach /readyz: short, and without host paths. */
function clip(text: string, max = 160): string {
  const one = text.replace(/\/(?:tmp|home|root|var|srv|opt|run)\/[^\s:'"]*/g, '<path>').replace(/\s+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max)}…` : one;
}

function describeRun(r: RunResult): string {
  const how = r.signal ? `signal ${r.signal}` : `exit ${String(r.exit_code)}`;
  const lines = r.stderr.split('\n').filter((l) => l.trim().length > 0);
  let why = 'no error output';
  if (lines.some((l) => /^(?:bwrap|setpriv|bubble-sandbox-wrapper):/.test(l)) || r.exit_code === 125 || r.exit_code === 127) {
    why = explainProbeFailure(r.exit_code, r.stderr);
  } else if (lines.length > 0) why = clip(lines[lines.length - 1] ?? '');
  return `the sandbox run ended '${r.status}' (${how}): ${why}`;
}

function outputOf(r: RunResult): string {
  if (r.status !== 'ok') throw new ProbeFailure(describeRun(r));
  return r.stdout;
}

/** The probe scripts print one JSON line last. */
function jsonOf<T>(r: RunResult): T {
  const out = outputOf(r).trim();
  try {
    return JSON.parse(out.split('\n').pop() ?? '') as T;
  } catch {
    throw new ProbeFailure(`unexpected probe output: ${clip(out) || '(empty)'}`);
  }
}

function statusFields(r: RunResult): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of outputOf(r).split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) fields.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return fields;
}

/** A Python probe that reports how an operation ended: `ok` or an errno name. */
const PY_PRELUDE = `import ctypes, errno, json, os, socket, sys
def outcome(fn):
    try:
        fn()
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
`;

async function hostListener(address: string | { path: string }): Promise<{ server: net.Server; connections: () => number; port: number }> {
  let count = 0;
  const server = net.createServer((s) => {
    count++;
    s.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (typeof address === 'string') server.listen(0, address, resolve);
    else server.listen(address.path, resolve);
  });
  const addr = server.address();
  return { server, connections: () => count, port: typeof addr === 'object' && addr ? addr.port : 0 };
}

const closeServer = (server: net.Server) => new Promise<void>((resolve) => server.close(() => resolve()));

const PROBES: ProbeSpec[] = [
  // The slow ones first, so the pool overlaps them with the quick ones.
  {
    category: 'limits', name: 'timeout',
    async check(ctx) {
      const started = performance.now();
      const { result } = await ctx.run(sh('sleep 30'), { timeoutMs: 500 });
      const took = Math.round(performance.now() - started);
      return verdict(result.status === 'timeout' && took < 3000, `'sleep 30' with a 500 ms timeout ended '${result.status}' after ${took} ms`);
    },
  },
  {
    category: 'limits', name: 'memory',
    async check(ctx) {
      if (ctx.sandbox.cgroupMode === 'none') return fail(`no cgroups: memory is not limited${ctx.sandbox.cgroupReason ? ` (${ctx.sandbox.cgroupReason})` : ''}`);
      const { result } = await ctx.run(py('data = bytes([1]) * (256 << 20)\nprint(len(data))'), { limits: { memoryBytes: 64 * MiB } });
      return verdict(result.status === 'oom', `a 256 MiB allocation under a 64 MiB limit ended '${result.status}' (cgroup ${ctx.sandbox.cgroupMode})`);
    },
  },
  {
    category: 'limits', name: 'pids',
    async check(ctx) {
      if (ctx.sandbox.cgroupMode === 'none') return fail(`no cgroups: processes are not limited${ctx.sandbox.cgroupReason ? ` (${ctx.sandbox.cgroupReason})` : ''}`);
      const { result } = await ctx.run(py(`${PY_PRELUDE}
import time
forked = refused = 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    forked += 1
print(json.dumps({'forked': forked, 'refused': refused, 'procs': sum(1 for p in os.listdir('/proc') if p.isdigit())}))
`), { limits: { pids: 16 } });
      const r = jsonOf<{ forked: number; refused: number; procs: number }>(result);
      return verdict(r.procs <= 17 && r.refused > 0, `40 forks under pids 16: ${r.forked} started, ${r.refused} refused, ${r.procs} processes visible`);
    },
  },
  {
    category: 'identity', name: 'uid',
    async check(ctx) {
      const uids = ((await ctx.status()).get('Uid') ?? '').split(/\s+/).map(Number);
      return verdict(uids.length === 4 && uids.every((u) => Number.isInteger(u) && u !== 0), `uid inside (real, effective, saved, fs): ${uids.join(' ')}`);
    },
  },
  {
    category: 'identity', name: 'gid',
    async check(ctx) {
      const f = await ctx.status();
      const gids = (f.get('Gid') ?? '').split(/\s+/).map(Number);
      const groups = (f.get('Groups') ?? '').split(/\s+/).filter(Boolean);
      const ok = gids.length === 4 && gids.every((g) => Number.isInteger(g) && g !== 0) && !groups.includes('0');
      return verdict(ok, `gid inside: ${gids.join(' ')}; supplementary groups: ${groups.join(' ') || 'none'}`);
    },
  },
  {
    category: 'identity', name: 'host-uid',
    async check(ctx) {
      const { result, workspace } = await ctx.run(sh('echo probe > owner-probe'));
      outputOf(result);
      const st = fs.lstatSync(path.join(workspace, 'owner-probe'));
      const expected = ctx.identity?.uid ?? process.getuid?.();
      const ok = st.isFile() && st.uid === expected && (!IS_ROOT || (st.uid !== 0 && st.gid !== 0));
      return verdict(ok, `a file the sandbox wrote is owned by host uid ${st.uid} gid ${st.gid} (expected uid ${String(expected)}, service uid ${String(process.getuid?.())})`);
    },
  },
  {
    category: 'capabilities', name: 'dropped',
    async check(ctx) {
      const f = await ctx.status();
      const sets = ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'].map((k) => [k, f.get(k) ?? 'missing'] as const);
      const bad = sets.filter(([k, v]) => !/^0+$/.test(v) && !(k === 'CapAmb' && v === 'missing'));
      return verdict(bad.length === 0, bad.length === 0 ? 'CapInh, CapPrm, CapEff, CapBnd and CapAmb are all empty' : `capabilities left: ${bad.map(([k, v]) => `${k}=${v}`).join(', ')}`);
    },
  },
  {
    category: 'capabilities', name: 'no-new-privs',
    async check(ctx) {
      const v = (await ctx.status()).get('NoNewPrivs') ?? 'missing';
      return verdict(v === '1', `NoNewPrivs: ${v}`);
    },
  },
  {
    category: 'namespaces', name: 'pid',
    async check(ctx) {
      const out = outputOf((await ctx.run(sh('echo $$; cat /proc/1/comm; ls /proc | grep -c "^[0-9]"'))).result);
      const [pid, comm, count] = out.trim().split('\n');
      const ok = Number(pid) < 10 && comm === 'bwrap' && Number(count) < 10;
      return verdict(ok, `shell pid ${String(pid)}, pid 1 is '${String(comm)}', ${String(count)} processes visible`);
    },
  },
  {
    category: 'namespaces', name: 'hostname',
    async check(ctx) {
      const name = outputOf((await ctx.run(sh('uname -n'))).result).trim();
      return verdict(name === 'sandbox', `hostname inside: '${clip(name, 64)}'`);
    },
  },
  {
    category: 'namespaces', name: 'distinct',
    async check(ctx) {
      const kinds = ['ipc', 'mnt', 'net', 'pid', 'user', 'uts', 'cgroup'];
      const inside = jsonOf<Record<string, string>>((await ctx.run(py(`import json, os\nprint(json.dumps({k: os.readlink('/proc/self/ns/' + k) for k in ${JSON.stringify(kinds)}}))`))).result);
      const shared = kinds.filter((k) => {
        let host: string | null = null;
        try {
          host = fs.readlinkSync(`/proc/self/ns/${k}`);
        } catch {
          // a kernel without this namespace type: nothing to share
        }
        return !inside[k] || (host !== null && inside[k] === host);
      });
      return verdict(shared.length === 0, shared.length === 0 ? `own ${kinds.join(', ')} namespaces (e.g. ${inside.ipc ?? '?'})` : `shared with the host: ${shared.join(', ')}`);
    },
  },
  {
    category: 'namespaces', name: 'no-nested-userns',
    async check(ctx) {
      const r = jsonOf<{ syscall: number; errno: number; command: number | null }>((await ctx.run(py(`${PY_PRELUDE}
import shutil, subprocess
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.unshare(0x10000000)
err = ctypes.get_errno()
cmd = subprocess.run(['unshare', '-U', 'true'], capture_output=True).returncode if shutil.which('unshare') else None
print(json.dumps({'syscall': rc, 'errno': err, 'command': cmd}))
`))).result);
      const ok = r.syscall === -1 && r.command !== 0;
      return verdict(ok, `unshare(CLONE_NEWUSER) returned ${r.syscall} (errno ${r.errno}); 'unshare -U true' ${r.command === null ? 'not installed' : `exited ${r.command}`}`);
    },
  },
  {
    category: 'network', name: 'interfaces',
    async check(ctx) {
      const out = outputOf((await ctx.run({ kind: 'argv', argv: ['/bin/cat', '/proc/net/dev'] })).result);
      const names = out.split('\n').slice(2).map((l) => l.split(':')[0]?.trim() ?? '').filter(Boolean);
      return verdict(names.length === 1 && names[0] === 'lo', `interfaces: ${names.join(', ') || 'none'}`);
    },
  },
  {
    category: 'network', name: 'host-loopback',
    async check(ctx) {
      const l = await hostListener('127.0.0.1');
      try {
        const r = jsonOf<{ result: string }>((await ctx.run(py(`${PY_PRELUDE}print(json.dumps({'result': outcome(lambda: socket.create_connection(('127.0.0.1', ${l.port}), timeout=2))}))`))).result);
        return verdict(r.result !== 'ok' && l.connections() === 0, `connect to a host 127.0.0.1 listener: ${r.result}; connections seen by the host: ${l.connections()}`);
      } finally {
        await closeServer(l.server);
      }
    },
  },
  {
    category: 'network', name: 'abstract-unix',
    async check(ctx) {
      const name = `bubble-sandbox-selftest-${token()}`;
      const l = await hostListener({ path: `\0${name}` });
      try {
        const r = jsonOf<{ result: string }>((await ctx.run(py(`${PY_PRELUDE}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(2)
print(json.dumps({'result': outcome(lambda: s.connect(chr(0) + '${name}'))}))
`))).result);
        return verdict(r.result !== 'ok' && l.connections() === 0, `connect to a host abstract unix socket: ${r.result}; connections seen by the host: ${l.connections()}`);
      } finally {
        await closeServer(l.server);
      }
    },
  },
  {
    category: 'network', name: 'egress',
    async check(ctx) {
      // 192.0.2.1 is TEST-NET-1: with a route it would time out; without one it fails at once.
      const r = jsonOf<{ result: string }>((await ctx.run(py(`${PY_PRELUDE}print(json.dumps({'result': outcome(lambda: socket.create_connection(('192.0.2.1', 80), timeout=2))}))`))).result);
      return verdict(r.result === 'ENETUNREACH', `connect to an outside address: ${r.result}`);
    },
  },
  {
    category: 'filesystem', name: 'hidden-paths',
    async check(ctx) {
      const paths = ['/etc/shadow', '/etc/gshadow', '/etc/sudoers', '/etc/ssh', '/root', '/home', '/run', '/sys', '/var/run'];
      const seen = jsonOf<string[]>((await ctx.run(py(`import json, os\nprint(json.dumps([p for p in ${JSON.stringify(paths)} if os.path.lexists(p)]))`))).result);
      return verdict(seen.length === 0, seen.length === 0 ? `absent: ${paths.join(', ')}` : `visible inside: ${seen.join(', ')}`);
    },
  },
  {
    category: 'filesystem', name: 'read-only-system',
    async check(ctx) {
      const dirs = ['/', '/usr', '/usr/bin', '/etc', '/bin', '/lib'];
      const name = `.bubble-sandbox-selftest-${token()}`;
      const r = jsonOf<Record<string, string>>((await ctx.run(py(`${PY_PRELUDE}
def touch(p):
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(p)
print(json.dumps({d: outcome(lambda d=d: touch(os.path.join(d, '${name}'))) for d in ${JSON.stringify(dirs)}}))
`))).result);
      const writable = dirs.filter((d) => r[d] === 'ok');
      return verdict(writable.length === 0, writable.length === 0 ? `creating a file fails in ${dirs.map((d) => `${d} (${r[d] ?? '?'})`).join(', ')}` : `writable: ${writable.join(', ')}`);
    },
  },
  {
    category: 'filesystem', name: 'workspace-writable',
    async check(ctx) {
      const value = token();
      const { result, workspace } = await ctx.run(sh(`echo ${value} > /workspace/rw-probe && cat /workspace/rw-probe`));
      const inside = outputOf(result).trim();
      const file = path.join(workspace, 'rw-probe');
      const st = fs.lstatSync(file, { throwIfNoEntry: false });
      const host = st?.isFile() ? fs.readFileSync(file, 'utf8').trim() : null;
      return verdict(inside === value && host === value, host === value ? '/workspace is writable and backed by the host workspace' : `write to /workspace: read back '${clip(inside, 40)}', host saw ${host === null ? 'no file' : 'other content'}`);
    },
  },
  {
    category: 'filesystem', name: 'tmp-private',
    async check(ctx) {
      const hostMarker = path.join('/tmp', `bubble-sandbox-selftest-${token()}`);
      const innerName = `bubble-sandbox-selftest-${token()}`;
      fs.writeFileSync(hostMarker, 'host', { mode: 0o600 });
      try {
        const r = jsonOf<{ before: string[]; marker: boolean; write: string; fstype: string }>((await ctx.run(py(`${PY_PRELUDE}
before = os.listdir('/tmp')
def write():
    with open('/tmp/${innerName}', 'w') as f:
        f.write('inside')
fstype = next((l.split(' - ')[1].split()[0] for l in open('/proc/self/mountinfo') if l.split()[4] == '/tmp'), 'none')
print(json.dumps({'before': before, 'marker': os.path.exists('${hostMarker}'), 'write': outcome(write), 'fstype': fstype}))
`))).result);
        const leaked = fs.existsSync(path.join('/tmp', innerName));
        const ok = r.write === 'ok' && r.before.length === 0 && !r.marker && !leaked && r.fstype === 'tmpfs';
        return verdict(ok, `/tmp is ${r.fstype}, write ${r.write}, ${r.before.length} entries at start, host file visible: ${r.marker ? 'yes' : 'no'}, sandbox file on host: ${leaked ? 'yes' : 'no'}`);
      } finally {
        fs.rmSync(hostMarker, { force: true });
        fs.rmSync(path.join('/tmp', innerName), { force: true });
      }
    },
  },
  {
    category: 'environment', name: 'clean',
    async check(ctx) {
      const value = `canary-${token()}`;
      const previous = process.env[CANARY_VARIABLE];
      process.env[CANARY_VARIABLE] = value;
      let env: Record<string, string>;
      try {
        env = jsonOf<Record<string, string>>((await ctx.run(py('import json, os\nprint(json.dumps(dict(os.environ)))'))).result);
      } finally {
        if (previous === undefined) delete process.env[CANARY_VARIABLE];
        else process.env[CANARY_VARIABLE] = previous;
      }
      // bwrap itself sets PWD for --chdir.
      const expected = new Set([...Object.keys(baseEnvironment(null)), 'PWD']);
      const extra = Object.keys(env).filter((k) => !expected.has(k));
      const leaked = CANARY_VARIABLE in env || Object.values(env).some((v) => v.includes(value));
      return verdict(!leaked && extra.length === 0, leaked ? 'a variable of the service process is visible inside' : extra.length > 0 ? `unexpected variables: ${extra.map((k) => clip(k, 40)).join(', ')}` : `only the ${Object.keys(env).length} variables the service sets`);
    },
  },
  {
    category: 'environment', name: 'proc-cmdline',
    async check(ctx) {
      const secret = `secret-${token()}`;
      const { result } = await ctx.run(py("print(open('/proc/1/cmdline', 'rb').read().decode(errors='replace').replace(chr(0), ' '))"), { env: { BUBBLE_SANDBOX_SELFTEST_VALUE: secret } });
      const cmdline = outputOf(result);
      const found = ['--setenv', '--bind', '--ro-bind', '--seccomp', '--tmpfs', secret].filter((s) => cmdline.includes(s));
      return verdict(found.length === 0, found.length === 0 ? '/proc/1/cmdline shows no bwrap options and no environment values' : `/proc/1/cmdline shows: ${found.map((s) => (s === secret ? 'an environment value' : s)).join(', ')}`);
    },
  },
  {
    category: 'fds', name: 'only-stdio',
    async check(ctx) {
      const fds = jsonOf<number[]>((await ctx.run(py(`import json, os, resource
fds = []
for fd in range(min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
print(json.dumps(fds))
`))).result);
      return verdict(fds.join(',') === '0,1,2', `open descriptors inside: ${fds.join(', ')}`);
    },
  },
  {
    category: 'seccomp', name: 'mode',
    async check(ctx) {
      const v = (await ctx.status()).get('Seccomp') ?? 'missing';
      if (!ctx.sandbox.seccomp) return fail(`no seccomp filter for this architecture (Seccomp: ${v})`);
      return verdict(v === '2', `Seccomp: ${v}${v === '2' ? ' (filter active)' : ''}`);
    },
  },
  {
    category: 'seccomp', name: 'ptrace',
    async check(ctx) {
      const r = jsonOf<{ rc: number; errno: number }>((await ctx.run(py(`${PY_PRELUDE}
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
rc = libc.ptrace(ctypes.c_long(0), 0, None, None)
print(json.dumps({'rc': rc, 'errno': ctypes.get_errno()}))
`))).result);
      return verdict(r.rc === -1 && r.errno === os.constants.errno.EPERM, `ptrace(PTRACE_TRACEME) returned ${r.rc} (errno ${r.errno}${r.errno === os.constants.errno.EPERM ? ' EPERM' : ''})`);
    },
  },
  {
    category: 'seccomp', name: 'socket-families',
    async check(ctx) {
      const r = jsonOf<{ vsock: string; alg: string }>((await ctx.run(py(`${PY_PRELUDE}
print(json.dumps({'vsock': outcome(lambda: socket.socket(40, socket.SOCK_STREAM)), 'alg': outcome(lambda: socket.socket(38, socket.SOCK_SEQPACKET))}))
`))).result);
      return verdict(r.vsock !== 'ok' && r.alg !== 'ok', `socket(AF_VSOCK): ${r.vsock}; socket(AF_ALG): ${r.alg}`);
    },
  },
  {
    category: 'limits', name: 'file-size',
    async check(ctx) {
      const { result, workspace } = await ctx.run(py(`${PY_PRELUDE}
def write():
    with open('/workspace/fsize-probe', 'wb') as f:
        f.write(bytes(2 << 20))
print(json.dumps({'result': outcome(write)}))
`), { limits: { fileSizeBytes: MiB } });
      const r = jsonOf<{ result: string }>(result);
      const size = fs.lstatSync(path.join(workspace, 'fsize-probe'), { throwIfNoEntry: false })?.size ?? 0;
      return verdict(r.result === 'EFBIG' && size <= MiB, `writing 2 MiB under a 1 MiB file size limit: ${r.result}, ${size} bytes written`);
    },
  },
  {
    category: 'limits', name: 'tmp-size',
    async check(ctx) {
      const r = jsonOf<{ result: string }>((await ctx.run(py(`${PY_PRELUDE}
def write():
    with open('/tmp/fill', 'wb') as f:
        f.write(bytes(2 << 20))
print(json.dumps({'result': outcome(write)}))
`), { limits: { tmpSizeBytes: MiB } })).result);
      return verdict(r.result === 'ENOSPC', `writing 2 MiB to a 1 MiB /tmp: ${r.result}`);
    },
  },
  {
    category: 'limits', name: 'rlimits',
    async check(ctx) {
      const r = jsonOf<Record<string, [number, number]>>((await ctx.run(py(`import json, resource as r
print(json.dumps({k: r.getrlimit(getattr(r, 'RLIMIT_' + k)) for k in ('CORE', 'NOFILE', 'FSIZE', 'CPU')}))
`))).result);
      const want = ctx.sandbox.defaultLimits;
      const fsize = Math.max(1, Math.floor(want.fileSizeBytes / 512)) * 512;
      const ok = r.CORE?.[0] === 0 && r.NOFILE?.[0] === want.openFiles && r.FSIZE?.[0] === fsize && (r.CPU?.[0] ?? -1) > 0;
      return verdict(ok, `core ${String(r.CORE?.[0])}, nofile ${String(r.NOFILE?.[0])} (want ${want.openFiles}), fsize ${String(r.FSIZE?.[0])} (want ${fsize}), cpu ${String(r.CPU?.[0])} s`);
    },
  },
];

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

export const SELF_TEST_PROBES: readonly string[] = PROBES.map((p) => `${p.category}/${p.name}`);

export async function runSelfTest(sandbox: Sandbox, opts: SelfTestOptions = {}): Promise<SelfTestReport> {
  const started = performance.now();
  const identity = sandbox.identityFor(opts.slot ?? 0);
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-sandbox-selftest-'));
  let n = 0;
  let status: Promise<Map<string, string>> | null = null;
  const ctx: ProbeContext = {
    sandbox,
    identity,
    status: () => (status ??= ctx.run(catStatus).then(({ result }) => statusFields(result))),
    async run(program, runOpts = {}) {
      const workspace = path.join(parent, `ws-${++n}`);
      fs.mkdirSync(workspace, { mode: 0o755 });
      if (identity) fs.chownSync(workspace, identity.uid, identity.gid);
      const result = await sandbox.runner.run({
        environment: null,
        workspaceDir: workspace,
        volumes: [],
        program,
        env: runOpts.env,
        timeoutMs: runOpts.timeoutMs ?? 10_000,
        maxOutputChars: 20_000,
        limits: { ...sandbox.defaultLimits, ...runOpts.limits },
        identity,
      });
      return { result, workspace };
    },
  };
  try {
    fs.chmodSync(parent, 0o711); // the sandbox uid must reach its workspace, but not list its siblings
    const probes = await mapLimit(PROBES, opts.concurrency ?? 2, async (p): Promise<SelfTestProbe> => {
      const t0 = performance.now();
      let outcome: Outcome;
      try {
        outcome = await p.check(ctx);
      } catch (err) {
        if (!(err instanceof ProbeFailure)) opts.logger?.error({ err, probe: `${p.category}/${p.name}` }, 'self-test probe crashed');
        outcome = fail(err instanceof ProbeFailure ? err.message : `probe error: ${clip(err instanceof Error ? err.message : String(err))}`);
      }
      return { name: p.name, category: p.category, passed: outcome.passed, detail: outcome.detail, duration_ms: Math.round(performance.now() - t0) };
    });
    return { passed: probes.every((p) => p.passed), probes, duration_ms: Math.round(performance.now() - started) };
  } finally {
    fs.rmSync(parent, { recursive: true, force: true });
  }
}
