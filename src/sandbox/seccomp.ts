// Builds the classic BPF seccomp program handed to `bwrap --seccomp FD`, without a native addon.
// Shape and deny list: docs/sandbox-security.md, "Seccomp without a native addon". A deny list
// (not an allow list) because strict allow lists break real Python workloads.
import {
  AUDIT_ARCH,
  MAX_REVIEWED_SYSCALL,
  syscallNumber,
  type SeccompArch,
  type SyscallName,
} from './seccomp-syscalls.js';

export type { SeccompArch } from './seccomp-syscalls.js';

/** Refused with ENOSYS rather than EPERM, so libc falls back (clone3 -> clone). */
export const ENOSYS_SYSCALLS = [
  'clone3', 'open_tree', 'move_mount', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'mount_setattr',
] as const satisfies readonly SyscallName[];

/** Refused with EPERM. Names an architecture lacks (umount, and iopl/ioperm/uselib on aarch64) are skipped. */
export const EPERM_SYSCALLS = [
  'syslog', 'uselib', 'acct', 'quotactl', 'add_key', 'keyctl', 'request_key', 'move_pages',
  'mbind', 'get_mempolicy', 'set_mempolicy', 'migrate_pages', 'unshare', 'setns', 'mount',
  'umount', 'umount2', 'pivot_root', 'chroot', 'perf_event_open', 'ptrace', 'bpf', 'userfaultfd',
  'kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module',
  'open_by_handle_at', 'name_to_handle_at', 'process_vm_readv', 'process_vm_writev', 'iopl',
  'ioperm', 'swapon', 'swapoff', 'reboot', 'sethostname', 'setdomainname', 'settimeofday',
  'clock_settime', 'clock_adjtime', 'adjtimex', 'vhangup', 'fanotify_init', 'io_uring_setup',
  'io_uring_enter', 'io_uring_register', 'kcmp',
] as const satisfies readonly SyscallName[];

/** Every call refused outright, whatever its arguments. */
export const DENIED_SYSCALLS: readonly string[] = Object.freeze([...EPERM_SYSCALLS, ...ENOSYS_SYSCALLS]);

/** Families socket() may create; anything else (VSOCK, ALG, PACKET, ...) gets EAFNOSUPPORT. */
export const ALLOWED_SOCKET_FAMILIES = Object.freeze({ AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16 });

const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_ALLOW = 0x7fff0000;
const EPERM = 1;
const ENOSYS = 38;
const EAFNOSUPPORT = 97;

const X32_SYSCALL_BIT = 0x40000000;
const CLONE_NEWUSER = 0x10000000;
const TIOCSTI = 0x5412;
const TIOCLINUX = 0x541c;
const PERSONALITY_QUERY = 0xffffffff;
const PER_LINUX = 0;

// struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
/**
 * Low 32 bits of args[i] (both arches are little-endian). Only the low word is compared: the
 * kernel truncates int/unsigned-int arguments, so a check on all 64 bits is bypassed by setting
 * a high bit (`ioctl(fd, TIOCSTI | 1 << 32, ...)`).
 */
const argLow = (i: number): number => 16 + 8 * i;

// Classic BPF opcodes.
const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_JGT_K = 0x25;
const BPF_JSET_K = 0x45;
const BPF_RET_K = 0x06;

const INSTRUCTION_BYTES = 8;
/** Kernel limit (BPF_MAXINSNS). */
const MAX_INSTRUCTIONS = 4096;

type Label = 'native' | 'allow' | 'eperm' | 'enosys' | 'clone' | 'ioctl' | 'personality' | 'socket';

interface Instruction {
  code: number;
  k: number;
  /** Where to go when the test holds / fails; undefined falls through to the next instruction. */
  jt?: Label;
  jf?: Label;
}

/** Tiny assembler with forward labels; jump offsets are u8, so a long jump is a build error. */
function createAssembler() {
  const code: Instruction[] = [];
  const labels = new Map<Label, number>();
  const jump = (op: number, k: number, jt?: Label, jf?: Label): void => {
    const insn: Instruction = { code: op, k };
    if (jt !== undefined) insn.jt = jt;
    if (jf !== undefined) insn.jf = jf;
    code.push(insn);
  };
  return {
    label(name: Label): void {
      if (labels.has(name)) throw new Error(`seccomp: label ${name} defined twice`);
      labels.set(name, code.length);
    },
    load(offset: number): void { code.push({ code: BPF_LD_W_ABS, k: offset }); },
    ret(value: number): void { code.push({ code: BPF_RET_K, k: value }); },
    jeq: (k: number, jt?: Label, jf?: Label): void => jump(BPF_JEQ_K, k, jt, jf),
    jgt: (k: number, jt?: Label, jf?: Label): void => jump(BPF_JGT_K, k, jt, jf),
    jset: (k: number, jt?: Label, jf?: Label): void => jump(BPF_JSET_K, k, jt, jf),
    assemble(): Buffer {
      if (code.length > MAX_INSTRUCTIONS) throw new Error(`seccomp: ${code.length} instructions exceed the kernel limit`);
      const out = Buffer.alloc(code.length * INSTRUCTION_BYTES);
      const offset = (from: number, to: Label | undefined): number => {
        if (to === undefined) return 0;
        const target = labels.get(to);
        if (target === undefined) throw new Error(`seccomp: undefined label ${to}`);
        const delta = target - from - 1;
        if (delta < 0 || delta > 255) throw new Error(`seccomp: jump from ${from} to ${to} (${delta}) does not fit a u8`);
        return delta;
      };
      code.forEach((insn, i) => {
        const at = i * INSTRUCTION_BYTES;
        out.writeUInt16LE(insn.code, at);
        out.writeUInt8(offset(i, insn.jt), at + 2);
        out.writeUInt8(offset(i, insn.jf), at + 3);
        out.writeUInt32LE(insn.k >>> 0, at + 4);
      });
      return out;
    },
  };
}

function numbersOf(arch: SeccompArch, names: readonly SyscallName[]): number[] {
  return names.map((name) => syscallNumber(arch, name)).filter((nr): nr is number => nr !== null);
}

function mustNumber(arch: SeccompArch, name: SyscallName): number {
  const nr = syscallNumber(arch, name);
  if (nr === null) throw new Error(`seccomp: ${name} has no number on ${arch}`);
  return nr;
}

/**
 * The seccomp program for `arch`, as struct sock_filter[] bytes (u16 code, u8 jt, u8 jf, u32 k,
 * little-endian). Pure and deterministic; callers cache it.
 */
export function buildSeccompProgram(arch: SeccompArch): Buffer {
  const a = createAssembler();
  const errno = (e: number): number => SECCOMP_RET_ERRNO | e;

  // A foreign ABI (i386 `int 0x80` on x86_64, compat on arm64) has other numbers: kill it.
  a.load(OFFSET_ARCH);
  a.jeq(AUDIT_ARCH[arch], 'native');
  a.ret(SECCOMP_RET_KILL_PROCESS);
  a.label('native');
  a.load(OFFSET_NR);
  if (arch === 'x86_64') a.jset(X32_SYSCALL_BIT, 'enosys');
  a.jgt(MAX_REVIEWED_SYSCALL[arch], 'enosys');
  for (const nr of numbersOf(arch, ENOSYS_SYSCALLS)) a.jeq(nr, 'enosys');
  for (const nr of numbersOf(arch, EPERM_SYSCALLS)) a.jeq(nr, 'eperm');
  a.jeq(mustNumber(arch, 'clone'), 'clone');
  a.jeq(mustNumber(arch, 'ioctl'), 'ioctl');
  a.jeq(mustNumber(arch, 'personality'), 'personality');
  a.jeq(mustNumber(arch, 'socket'), 'socket');
  a.ret(SECCOMP_RET_ALLOW);

  // clone(flags, ...): flags is arg0 on both arches (only the stack/tls order differs).
  a.label('clone');
  a.load(argLow(0));
  a.jset(CLONE_NEWUSER, 'eperm', 'allow');

  a.label('ioctl');
  a.load(argLow(1));
  a.jeq(TIOCSTI, 'eperm');
  a.jeq(TIOCLINUX, 'eperm', 'allow');

  a.label('personality');
  a.load(argLow(0));
  a.jeq(PER_LINUX, 'allow');
  a.jeq(PERSONALITY_QUERY, 'allow', 'eperm');

  a.label('socket');
  a.load(argLow(0));
  for (const family of Object.values(ALLOWED_SOCKET_FAMILIES)) a.jeq(family, 'allow');
  a.ret(errno(EAFNOSUPPORT));

  a.label('allow');
  a.ret(SECCOMP_RET_ALLOW);
  a.label('eperm');
  a.ret(errno(EPERM));
  a.label('enosys');
  a.ret(errno(ENOSYS));
  return a.assemble();
}

/** Maps a Node `process.arch` value to the seccomp architecture; null where there is no program. */
export function seccompArchFor(nodeArch: string): SeccompArch | null {
  if (nodeArch === 'x64') return 'x86_64';
  if (nodeArch === 'arm64') return 'aarch64';
  return null;
}

export function hostSeccompArch(): SeccompArch | null {
  return seccompArchFor(process.arch);
}
