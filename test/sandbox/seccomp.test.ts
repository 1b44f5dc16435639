import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ALLOWED_SOCKET_FAMILIES,
  DENIED_SYSCALLS,
  ENOSYS_SYSCALLS,
  EPERM_SYSCALLS,
  buildSeccompProgram,
  hostSeccompArch,
  seccompArchFor,
  type SeccompArch,
} from '../../src/sandbox/seccomp.js';
import {
  AUDIT_ARCH,
  MAX_REVIEWED_SYSCALL,
  SYSCALL_NUMBERS,
  syscallNumber,
  type SyscallName,
} from '../../src/sandbox/seccomp-syscalls.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/seccomp/', import.meta.url));
const SYSTEM_PYTHON = '/usr/bin/python3';
const ARCHES: readonly SeccompArch[] = ['x86_64', 'aarch64'];

const KILL_PROCESS = 0x80000000;
const ALLOW = 0x7fff0000;
const ERRNO = (e: number): number => 0x00050000 | e;
const EPERM = 1;
const ENOENT = 2;
const ENOTTY = 25;
const ENOSYS = 38;
const EAFNOSUPPORT = 97;

function pythonHas(module: string): boolean {
  return spawnSync(SYSTEM_PYTHON, ['-c', `import ${module}`], { stdio: 'ignore' }).status === 0;
}

const hasLibseccomp = pythonHas('seccomp');
const hasPandas = pythonHas('pandas');

/** Runs a classic BPF program the way the kernel would; only the opcodes either generator emits. */
function runCbpf(prog: Buffer, data: Buffer): number {
  const count = prog.length / 8;
  let a = 0;
  let pc = 0;
  while (pc < count) {
    const at = pc * 8;
    const code = prog.readUInt16LE(at);
    const jt = prog.readUInt8(at + 2);
    const jf = prog.readUInt8(at + 3);
    const k = prog.readUInt32LE(at + 4);
    pc += 1;
    switch (code) {
      case 0x20: // ld [k]
        if (k % 4 !== 0 || k + 4 > data.length) throw new Error(`bad load offset ${k}`);
        a = data.readUInt32LE(k);
        break;
      case 0x00: a = k; break; // ld #k
      case 0x54: a = (a & k) >>> 0; break; // and #k
      case 0x05: pc += k; break; // ja
      case 0x15: pc += a === k ? jt : jf; break;
      case 0x25: pc += a > k ? jt : jf; break;
      case 0x35: pc += a >= k ? jt : jf; break;
      case 0x45: pc += (a & k) !== 0 ? jt : jf; break;
      case 0x06: return k;
      default: throw new Error(`unsupported opcode 0x${code.toString(16)} at ${pc - 1}`);
    }
  }
  throw new Error('program fell off its end');
}

/** struct seccomp_data for a call; args are full 64-bit register values. */
function seccompData(arch: number, nr: number, args: readonly bigint[] = []): Buffer {
  const data = Buffer.alloc(64);
  data.writeUInt32LE(nr >>> 0, 0);
  data.writeUInt32LE(arch >>> 0, 4);
  data.writeBigUInt64LE(0x401000n, 8);
  args.forEach((value, i) => data.writeBigUInt64LE(BigInt.asUintN(64, value), 16 + 8 * i));
  return data;
}

function nr(arch: SeccompArch, name: SyscallName): number {
  const value = syscallNumber(arch, name);
  if (value === null) throw new Error(`${name} does not exist on ${arch}`);
  return value;
}

describe('buildSeccompProgram (unit)', () => {
  it.each(ARCHES)('%s: whole instructions, within the kernel limit, jumps inside the program', (arch) => {
    const prog = buildSeccompProgram(arch);
    expect(prog.length % 8).toBe(0);
    const count = prog.length / 8;
    expect(count).toBeGreaterThan(50);
    expect(count).toBeLessThan(256);
    for (let i = 0; i < count; i++) {
      const code = prog.readUInt16LE(i * 8);
      if ((code & 0x07) !== 0x05) continue; // BPF_JMP class
      expect(i + 1 + prog.readUInt8(i * 8 + 2)).toBeLessThan(count);
      expect(i + 1 + prog.readUInt8(i * 8 + 3)).toBeLessThan(count);
    }
    const last = prog.readUInt16LE(prog.length - 8);
    expect(last).toBe(0x06); // ends in a return
  });

  it.each(ARCHES)('%s: first checks the architecture and kills any other', (arch) => {
    const prog = buildSeccompProgram(arch);
    const insn = (i: number) => ({
      code: prog.readUInt16LE(i * 8), jt: prog.readUInt8(i * 8 + 2), jf: prog.readUInt8(i * 8 + 3), k: prog.readUInt32LE(i * 8 + 4),
    });
    expect(insn(0)).toEqual({ code: 0x20, jt: 0, jf: 0, k: 4 });
    expect(insn(1)).toEqual({ code: 0x15, jt: 1, jf: 0, k: AUDIT_ARCH[arch] });
    expect(insn(2)).toEqual({ code: 0x06, jt: 0, jf: 0, k: KILL_PROCESS });
    expect(insn(3)).toEqual({ code: 0x20, jt: 0, jf: 0, k: 0 });
    const foreign = [0x40000003 /* i386 */, 0x40000028 /* arm */, 0, ...ARCHES.filter((a) => a !== arch).map((a) => AUDIT_ARCH[a])];
    for (const auditArch of foreign) {
      expect(runCbpf(prog, seccompData(auditArch, 0))).toBe(KILL_PROCESS);
      expect(runCbpf(prog, seccompData(auditArch, 39))).toBe(KILL_PROCESS);
    }
  });

  it('is deterministic and returns a fresh buffer per call', () => {
    for (const arch of ARCHES) {
      const first = buildSeccompProgram(arch);
      const copy = Buffer.from(first);
      first.fill(0);
      expect(buildSeccompProgram(arch).equals(copy)).toBe(true);
    }
    expect(buildSeccompProgram('x86_64').equals(buildSeccompProgram('aarch64'))).toBe(false);
  });

  it('maps Node architectures', () => {
    expect(seccompArchFor('x64')).toBe('x86_64');
    expect(seccompArchFor('arm64')).toBe('aarch64');
    expect(seccompArchFor('ia32')).toBeNull();
    expect(seccompArchFor('riscv64')).toBeNull();
    expect(hostSeccompArch()).toBe(seccompArchFor(process.arch));
  });

  it('lists the deny list of the security doc', () => {
    const spec = `syslog uselib acct quotactl add_key keyctl request_key move_pages mbind get_mempolicy
      set_mempolicy migrate_pages unshare setns mount umount umount2 pivot_root chroot perf_event_open ptrace
      bpf userfaultfd kexec_load kexec_file_load init_module finit_module delete_module open_by_handle_at
      name_to_handle_at process_vm_readv process_vm_writev iopl ioperm swapon swapoff reboot sethostname
      setdomainname settimeofday clock_settime clock_adjtime adjtimex vhangup fanotify_init io_uring_setup
      io_uring_enter io_uring_register kcmp clone3 open_tree move_mount fsopen fsconfig fsmount fspick
      mount_setattr`.split(/\s+/);
    expect([...DENIED_SYSCALLS].sort()).toEqual([...spec].sort());
  });

  it.each(ARCHES)('%s: refuses, allows and checks arguments as specified', (arch) => {
    const prog = buildSeccompProgram(arch);
    const run = (name: SyscallName | number, ...args: bigint[]): number =>
      runCbpf(prog, seccompData(AUDIT_ARCH[arch], typeof name === 'number' ? name : nr(arch, name), args));
    for (const name of EPERM_SYSCALLS) {
      const value = syscallNumber(arch, name);
      if (value !== null) expect(run(value), name).toBe(ERRNO(EPERM));
    }
    for (const name of ENOSYS_SYSCALLS) expect(run(name), name).toBe(ERRNO(ENOSYS));
    expect(run(MAX_REVIEWED_SYSCALL[arch])).toBe(ALLOW);
    expect(run(MAX_REVIEWED_SYSCALL[arch] + 1)).toBe(ERRNO(ENOSYS));
    expect(run(0xffffffff)).toBe(ERRNO(ENOSYS));
    if (arch === 'x86_64') expect(run(0x40000000 | 39)).toBe(ERRNO(ENOSYS));
    expect(run(0)).toBe(ALLOW);
    expect(run('clone', 0x11n)).toBe(ALLOW);
    expect(run('clone', 0x10000011n)).toBe(ERRNO(EPERM));
    expect(run('clone', 0xffffffffn)).toBe(ERRNO(EPERM));
    expect(run('clone', 0xffffffff_efffffffn)).toBe(ALLOW);
    expect(run('ioctl', 0n, 0x5412n)).toBe(ERRNO(EPERM));
    expect(run('ioctl', 0n, 0x1_00005412n)).toBe(ERRNO(EPERM));
    expect(run('ioctl', 0n, 0x541cn)).toBe(ERRNO(EPERM));
    expect(run('ioctl', 0n, 0x5401n)).toBe(ALLOW);
    expect(run('personality', 0n)).toBe(ALLOW);
    expect(run('personality', 0xffffffffn)).toBe(ALLOW);
    expect(run('personality', 0x8n)).toBe(ERRNO(EPERM));
    expect(run('personality', 0x0040000n)).toBe(ERRNO(EPERM)); // ADDR_NO_RANDOMIZE
    for (const family of Object.values(ALLOWED_SOCKET_FAMILIES)) expect(run('socket', BigInt(family))).toBe(ALLOW);
    for (const family of [0, 3, 17, 38, 40, 0x1_0000_0028]) expect(run('socket', BigInt(family))).toBe(ERRNO(EAFNOSUPPORT));
  });

  it.skipIf(!hasLibseccomp && !process.env.CI)('uses the syscall numbers libseccomp (python3-seccomp) knows', () => {
    const names = Object.keys(SYSCALL_NUMBERS);
    const script = `import json, seccomp, sys
names = json.loads(sys.argv[1])
out = {}
for arch, key in (("x86_64", seccomp.Arch.X86_64), ("aarch64", seccomp.Arch.AARCH64)):
    out[arch] = {n: seccomp.resolve_syscall(key, n) for n in names}
print(json.dumps(out))`;
    const res = spawnSync(SYSTEM_PYTHON, ['-c', script, JSON.stringify(names)], { encoding: 'utf8' });
    expect(res.status, res.stderr).toBe(0);
    const resolved = JSON.parse(res.stdout) as Record<SeccompArch, Record<string, number>>;
    for (const arch of ARCHES) {
      for (const name of names as SyscallName[]) {
        const ours = syscallNumber(arch, name);
        const theirs = resolved[arch][name];
        // libseccomp gives a negative pseudo number for a call the architecture lacks.
        expect(ours ?? 'absent', `${arch} ${name}`).toBe(theirs !== undefined && theirs >= 0 ? theirs : 'absent');
      }
    }
  });

  describe.skipIf(!hasLibseccomp && !process.env.CI)('agrees with the same policy compiled by libseccomp', () => {
    let dir = '';
    beforeAll(() => { dir = mkdtempSync(path.join(os.tmpdir(), 'seccomp-ref-')); });
    afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

    it.each(ARCHES)('%s', (arch) => {
      // By name: libseccomp resolves them for `arch` from its own tables, including the names
      // (umount, iopl, ...) an architecture lacks.
      const spec = { eperm: EPERM_SYSCALLS, enosys: ENOSYS_SYSCALLS, families: Object.values(ALLOWED_SOCKET_FAMILIES) };
      const out = path.join(dir, `${arch}.bpf`);
      const res = spawnSync(SYSTEM_PYTHON, [path.join(FIXTURES, 'libseccomp-reference.py'), arch, out, JSON.stringify(spec)], { encoding: 'utf8' });
      expect(res.status, res.stderr).toBe(0);
      const reference = readFileSync(out);
      const ours = buildSeccompProgram(arch);

      const argPatterns: Partial<Record<SyscallName, { index: number; values: bigint[] }>> = {
        clone: { index: 0, values: [0n, 0x11n, 0x10000000n, 0x10000011n, 0xefffffffn, 0xffffffffn, 0x1_00000011n, 0x1_10000000n] },
        ioctl: { index: 1, values: [0n, 0x5401n, 0x5412n, 0x541cn, 0x5413n, 0x1_00005412n, 0xffffffff_0000541cn, 0xffffffffn] },
        personality: { index: 0, values: [0n, 1n, 8n, 0x40000n, 0x80000000n, 0xfffffffen, 0xffffffffn, 0x1_00000000n, 0x1_ffffffffn] },
        socket: { index: 0, values: [...Array.from({ length: 70 }, (_, i) => BigInt(i)), 0x100n, 0xffffffffn, 0x1_00000001n, 0x1_00000028n] },
      };
      let compared = 0;
      const compare = (data: Buffer, what: string) => {
        expect(runCbpf(ours, data), what).toBe(runCbpf(reference, data));
        compared += 1;
      };
      for (let n = 0; n <= MAX_REVIEWED_SYSCALL[arch]; n++) compare(seccompData(AUDIT_ARCH[arch], n), `nr ${n}`);
      for (const [name, pattern] of Object.entries(argPatterns) as [SyscallName, { index: number; values: bigint[] }][]) {
        for (const value of pattern.values) {
          const args = [0n, 0n, 0n, 0n, 0n, 0n];
          args[pattern.index] = value;
          compare(seccompData(AUDIT_ARCH[arch], nr(arch, name), args), `${name} 0x${value.toString(16)}`);
        }
      }
      for (const foreign of [0x40000003, 0x40000028, 0]) compare(seccompData(foreign, 20), `arch 0x${foreign.toString(16)}`);
      expect(compared).toBeGreaterThan(500);
    });
  });
});

interface RunResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

const BWRAP_BASE = [
  '--unshare-all', '--die-with-parent', '--ro-bind', '/usr', '/usr',
  '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64',
  // Debian reaches libblas.so.3 (numpy) through /etc/alternatives symlinks.
  '--ro-bind-try', '/etc/alternatives', '/etc/alternatives',
  '--proc', '/proc', '--dev', '/dev',
];

/** Runs argv in bwrap; with a program, it is written to the child's fd 3 for `--seccomp 3`. */
function runInBwrap(argv: string[], program: Buffer | null, env: Record<string, string>): Promise<RunResult> {
  const args = [...BWRAP_BASE, ...(program ? ['--seccomp', '3'] : []), '--', ...argv];
  const child = spawn('/usr/bin/bwrap', args, {
    stdio: program ? ['pipe', 'pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe'],
    env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  child.stdin?.end();
  if (program) {
    const fd3 = child.stdio[3];
    if (!(fd3 instanceof Writable)) throw new Error('fd 3 is not writable');
    fd3.on('error', (err) => { stderr += `\n[fd3] ${err.message}`; });
    fd3.end(program);
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

type Probe = { ret: number; errno: number };
type Probes = Record<string, Probe>;

const arch = hostSeccompArch();
// Same convention as test/helpers/sandbox.ts: only an explicit '0' from the global setup skips.
const bwrapUsable = process.env.BUBBLE_SANDBOX_TEST_BWRAP !== '0';

describe.skipIf(arch === null || !bwrapUsable)('seccomp program under real bwrap', () => {
  const hostArch = arch ?? 'x86_64';
  const program = buildSeccompProgram(hostArch);
  const probeSource = readFileSync(path.join(FIXTURES, 'probe.py'), 'utf8');
  const probeEnv = {
    PROBE_PANDAS: hasPandas ? '1' : '0',
    PROBE_SYSCALLS: JSON.stringify({
      ...Object.fromEntries((['ptrace', 'keyctl', 'add_key', 'unshare', 'clone', 'mount', 'io_uring_setup', 'bpf',
        'clone3', 'fsopen', 'socket', 'ioctl', 'personality'] as const).map((n) => [n, nr(hostArch, n)])),
      getpid: hostArch === 'x86_64' ? 39 : 172,
      max_reviewed: MAX_REVIEWED_SYSCALL[hostArch],
    }),
  };
  const python = async (mode: string, filtered: boolean): Promise<RunResult> =>
    runInBwrap([SYSTEM_PYTHON, '-c', probeSource, mode], filtered ? program : null, probeEnv);
  const parse = <T>(res: RunResult): T => {
    expect(res.code, `exit ${res.code} ${res.signal}: ${res.stderr}`).toBe(0);
    return JSON.parse(res.stdout) as T;
  };

  let filtered: Probes = {};
  let control: Probes = {};
  beforeAll(async () => {
    const [withFilter, withoutFilter] = await Promise.all([python('probes', true), python('probes', false)]);
    filtered = parse<Probes>(withFilter);
    control = parse<Probes>(withoutFilter);
  });
  const refused = (errno: number): Probe => ({ ret: -1, errno });
  const worked = expect.objectContaining({ errno: 0 }) as Probe;

  it('installs the filter (and the control run has none)', () => {
    expect(filtered.seccomp_mode).toEqual({ ret: 2, errno: 0 });
    expect(control.seccomp_mode).toEqual({ ret: 0, errno: 0 });
    expect(filtered.getpid).toEqual(worked);
  });

  it('ptrace(PTRACE_TRACEME) gets EPERM; it works without the filter', () => {
    expect(filtered.ptrace_traceme).toEqual(refused(EPERM));
    expect(control.ptrace_traceme).toEqual({ ret: 0, errno: 0 });
  });

  it('keyctl and add_key get EPERM; they work without the filter', () => {
    expect(filtered.keyctl_session).toEqual(refused(EPERM));
    expect(filtered.add_key).toEqual(refused(EPERM));
    expect(control.keyctl_session).toEqual(worked);
    expect(control.add_key).toEqual(worked);
  });

  it('unshare(CLONE_NEWUSER) and clone(CLONE_NEWUSER) get EPERM; a plain clone works', () => {
    expect(filtered.unshare_newuser).toEqual(refused(EPERM));
    expect(filtered.clone_newuser).toEqual(refused(EPERM));
    expect(filtered.clone_plain?.ret).toBeGreaterThan(0);
    expect(control.unshare_newuser).toEqual({ ret: 0, errno: 0 });
    expect(control.clone_newuser?.ret).toBeGreaterThan(0);
  });

  it('mount gets EPERM before the kernel looks at the path (ENOENT without the filter)', () => {
    expect(filtered.mount).toEqual(refused(EPERM));
    expect(control.mount).toEqual(refused(ENOENT));
  });

  it('io_uring_setup and bpf get EPERM; without the filter they reach argument checks', () => {
    expect(filtered.io_uring_setup).toEqual(refused(EPERM));
    expect(filtered.bpf).toEqual(refused(EPERM));
    expect(control.bpf?.errno).not.toBe(EPERM);
    const sysctl = '/proc/sys/kernel/io_uring_disabled'; // Linux 6.6+; 1 or 2 refuse with EPERM themselves
    if (!existsSync(sysctl) || readFileSync(sysctl, 'utf8').trim() === '0') {
      expect(control.io_uring_setup?.errno).not.toBe(EPERM);
    }
  });

  it('clone3 and fsopen get ENOSYS (so libc falls back)', () => {
    expect(filtered.clone3).toEqual(refused(ENOSYS));
    expect(filtered.fsopen).toEqual(refused(ENOSYS));
    expect(control.clone3?.errno).not.toBe(ENOSYS);
    expect(control.fsopen?.errno).not.toBe(ENOSYS);
  });

  it('socket: AF_VSOCK and AF_PACKET get EAFNOSUPPORT, AF_INET and AF_UNIX work', () => {
    expect(filtered.socket_vsock).toEqual(refused(EAFNOSUPPORT));
    expect(filtered.socket_packet).toEqual(refused(EAFNOSUPPORT));
    expect(filtered.socket_inet).toEqual(worked);
    expect(filtered.socket_unix).toEqual(worked);
    expect(control.socket_packet?.errno).not.toBe(EAFNOSUPPORT);
    // Without vsock in the kernel the control would give EAFNOSUPPORT on its own.
    if (/^AF_VSOCK\b/m.test(readFileSync('/proc/net/protocols', 'utf8'))) expect(control.socket_vsock).toEqual(worked);
  });

  it('ioctl TIOCSTI / TIOCLINUX get EPERM, also with a high bit set; ENOTTY without the filter', () => {
    for (const name of ['tiocsti', 'tiocsti_high_bit', 'tioclinux']) {
      expect(filtered[name], name).toEqual(refused(EPERM));
      expect(control[name], name).toEqual(refused(ENOTTY));
    }
    expect(filtered.tcgets).toEqual(refused(ENOTTY)); // other ioctls still reach the driver
  });

  it('personality allows 0 and the 0xffffffff query only', () => {
    expect(filtered.personality_query).toEqual({ ret: 0, errno: 0 });
    expect(filtered.personality_zero).toEqual({ ret: 0, errno: 0 });
    expect(filtered.personality_linux32).toEqual(refused(EPERM));
    expect(control.personality_linux32).toEqual({ ret: 0, errno: 0 });
  });

  it('x32 numbers and numbers above the reviewed maximum get ENOSYS', () => {
    if (hostArch === 'x86_64') expect(filtered.x32_getpid).toEqual(refused(ENOSYS));
    expect(filtered.above_reviewed_max).toEqual(refused(ENOSYS));
    const [major = 0, minor = 0] = os.release().split('.').map(Number);
    // 467 (open_tree_attr) exists from Linux 6.15 on; there the control reaches the kernel.
    if (MAX_REVIEWED_SYSCALL[hostArch] === 466 && (major > 6 || (major === 6 && minor >= 15))) {
      expect(control.above_reviewed_max?.errno).not.toBe(ENOSYS);
    }
  });

  it('real workloads keep working: threads, subprocess, multiprocessing, sqlite3, asyncio, pandas', async () => {
    const out = parse<Record<string, unknown>>(await python('workloads', true));
    expect(out).toMatchObject({
      threads: 285, thread_ran: true, subprocess: 'hi', multiprocessing: [0, 1, 4, 9, 16], sqlite: 45, asyncio: ['ping', 3],
    });
    if (hasPandas) expect(out.pandas).toEqual({ a: 2, b: 1 });
  });

  it.runIf(hostArch === 'x86_64')('kills an i386 int 0x80 syscall with SIGSYS', async (ctx) => {
    const [withFilter, withoutFilter] = await Promise.all([python('int80', true), python('int80', false)]);
    const plain = parse<{ int80: { signal: number; exit: number } }>(withoutFilter).int80;
    // Kernels without IA32 emulation (or VMs that fault on int 0x80) cannot run the check.
    if (plain.signal !== 0 || plain.exit !== 0) ctx.skip(`int 0x80 is unavailable here (signal ${plain.signal})`);
    expect(parse<{ int80: { signal: number; exit: number } }>(withFilter).int80).toEqual({ signal: 31, exit: -1 });
  });
});
