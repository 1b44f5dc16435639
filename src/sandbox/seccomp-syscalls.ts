// Syscall numbers for the calls the seccomp program names, per architecture. x86_64 comes from
// arch/x86/entry/syscalls/syscall_64.tbl, aarch64 from the generic table (asm-generic/unistd.h,
// scripts/syscall.tbl since 6.11). Both were checked against Debian 12's kernel headers and
// libseccomp 2.5.4 (python3-seccomp); the test suite repeats that check when it can.

export type SeccompArch = 'x86_64' | 'aarch64';

/** AUDIT_ARCH_* values the kernel reports in seccomp_data.arch. */
export const AUDIT_ARCH: Readonly<Record<SeccompArch, number>> = {
  x86_64: 0xc000003e, // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
  aarch64: 0xc00000b7, // EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
};

/**
 * Highest syscall number whose meaning was reviewed; anything above gets ENOSYS, so a call a
 * future kernel adds is refused until someone looks at it. 451-466 (cachestat .. removexattrat,
 * the same numbers on both tables) were judged harmless. 467 open_tree_attr belongs to the new
 * mount API and 470 listns enumerates namespaces, so the line stops at 466.
 */
export const MAX_REVIEWED_SYSCALL: Readonly<Record<SeccompArch, number>> = {
  x86_64: 466,
  aarch64: 466,
};

type Numbers = readonly [x86_64: number | null, aarch64: number | null];

/** [x86_64, aarch64]; null where the architecture never had the call. */
export const SYSCALL_NUMBERS = {
  // Calls that get an argument check.
  clone: [56, 220],
  ioctl: [16, 29],
  personality: [135, 92],
  socket: [41, 198],
  // ENOSYS, so glibc and friends fall back (clone3 -> clone, new mount API -> nothing to gain).
  clone3: [435, 435],
  open_tree: [428, 428],
  move_mount: [429, 429],
  fsopen: [430, 430],
  fsconfig: [431, 431],
  fsmount: [432, 432],
  fspick: [433, 433],
  mount_setattr: [442, 442],
  // EPERM.
  syslog: [103, 116],
  uselib: [134, null],
  acct: [163, 89],
  quotactl: [179, 60],
  add_key: [248, 217],
  keyctl: [250, 219],
  request_key: [249, 218],
  move_pages: [279, 239],
  mbind: [237, 235],
  get_mempolicy: [239, 236],
  set_mempolicy: [238, 237],
  migrate_pages: [256, 238],
  unshare: [272, 97],
  setns: [308, 268],
  mount: [165, 40],
  // `umount` (oldumount) exists only on 32-bit tables; both 64-bit ABIs have umount2 alone.
  umount: [null, null],
  umount2: [166, 39],
  pivot_root: [155, 41],
  chroot: [161, 51],
  perf_event_open: [298, 241],
  ptrace: [101, 117],
  bpf: [321, 280],
  userfaultfd: [323, 282],
  kexec_load: [246, 104],
  kexec_file_load: [320, 294],
  init_module: [175, 105],
  finit_module: [313, 273],
  delete_module: [176, 106],
  open_by_handle_at: [304, 265],
  name_to_handle_at: [303, 264],
  process_vm_readv: [310, 270],
  process_vm_writev: [311, 271],
  iopl: [172, null],
  ioperm: [173, null],
  swapon: [167, 224],
  swapoff: [168, 225],
  reboot: [169, 142],
  sethostname: [170, 161],
  setdomainname: [171, 162],
  settimeofday: [164, 170],
  clock_settime: [227, 112],
  clock_adjtime: [305, 266],
  adjtimex: [159, 171],
  vhangup: [153, 58],
  fanotify_init: [300, 262],
  io_uring_setup: [425, 425],
  io_uring_enter: [426, 426],
  io_uring_register: [427, 427],
  kcmp: [312, 272],
} as const satisfies Record<string, Numbers>;

export type SyscallName = keyof typeof SYSCALL_NUMBERS;

/** The call's number on `arch`, or null if that architecture has no such call. */
export function syscallNumber(arch: SeccompArch, name: SyscallName): number | null {
  const [x86, arm] = SYSCALL_NUMBERS[name];
  return arch === 'x86_64' ? x86 : arm;
}
