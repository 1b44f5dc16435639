// What of the host's filesystem the sandbox sees, decided once at start-up: the system
// directories read-only (as symlinks where /usr is merged) and a minimal /etc. Nothing of /home,
// /root, /run, /sys or host sockets, and no host /etc secrets.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SystemMount } from './bwrap-args.js';
import { SANDBOX_GID, SANDBOX_HOSTNAME, SANDBOX_UID } from './bwrap-args.js';

const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];

/**
 * /proc entries that describe the host (boot parameters, kernel memory, keys, timers, hardware)
 * and that container runtimes mask; bwrap's fresh /proc shows them. Which exist depends on the
 * kernel, and bwrap cannot mount over a missing one, so the layout masks those present here.
 * (bwrap already makes /proc/sys, /proc/sysrq-trigger, /proc/irq and /proc/bus read-only.)
 */
export const MASKED_PROC_ENTRIES = [
  'cmdline', 'kcore', 'keys', 'timer_list', 'timer_stats', 'sched_debug', 'latency_stats', 'sysrq-trigger',
  'acpi', 'scsi', 'asound',
] as const;

/** Host /etc entries that programs need and that hold no secrets. */
const HOST_ETC = [
  'ld.so.cache', 'ld.so.conf', 'ld.so.conf.d', 'alternatives', 'ssl', 'ca-certificates',
  'localtime', 'mime.types', 'matplotlibrc', 'fonts', 'python3', 'python3.11', 'python3.12', 'python3.13',
];

export interface HostLayout {
  systemMounts: SystemMount[];
  etcFiles: { source: string; dest: string }[];
  /** Read-only mounts of an empty file or directory over the host-describing /proc entries present here. */
  procMasks: { source: string; dest: string }[];
  /** Directory holding the generated /etc files; removed by dispose(). */
  generatedEtcDir: string;
  dispose(): void;
}

export function detectSystemMounts(root = '/'): SystemMount[] {
  const mounts: SystemMount[] = [];
  for (const dir of SYSTEM_DIRS) {
    const hostPath = path.join(root, dir);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(hostPath);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) mounts.push({ kind: 'symlink', target: fs.readlinkSync(hostPath), dest: dir });
    else if (st.isDirectory()) mounts.push({ kind: 'ro-bind', source: hostPath, dest: dir });
  }
  return mounts;
}

/** The masked /proc entries this kernel has, each with whether it is a directory. */
export function detectProcMasks(procRoot = '/proc'): { name: string; dir: boolean }[] {
  const found: { name: string; dir: boolean }[] = [];
  for (const name of MASKED_PROC_ENTRIES) {
    const st = fs.lstatSync(path.join(procRoot, name), { throwIfNoEntry: false });
    if (st) found.push({ name, dir: st.isDirectory() });
  }
  return found;
}

function generatedEtc(): Record<string, string> {
  return {
    passwd: `root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:${SANDBOX_UID}:${SANDBOX_GID}:sandbox:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    group: `root:x:0:\nsandbox:x:${SANDBOX_GID}:\nnogroup:x:65534:\n`,
    hosts: `127.0.0.1\tlocalhost ${SANDBOX_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n`,
    hostname: `${SANDBOX_HOSTNAME}\n`,
    'nsswitch.conf': 'passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n',
    'resolv.conf': '# no network inside the sandbox\n',
  };
}

const ETC_DIR_PREFIX = 'bubble-sandbox-etc-';

/**
 * A process killed before dispose() leaves its generated /etc behind. Directories are named after
 * their creator's pid: those of dead processes that belong to us are removed at the next start.
 */
export function removeStaleEtcDirs(tmp = os.tmpdir()): number {
  let removed = 0;
  for (const name of fs.readdirSync(tmp)) {
    const pid = Number(/^bubble-sandbox-etc-(\d+)-/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const dir = path.join(tmp, name);
    try {
      if (fs.lstatSync(dir).uid !== process.getuid?.()) continue;
      process.kill(pid, 0);
      continue; // its creator is alive
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    fs.rmSync(dir, { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/** Build the layout: writes the generated /etc files into a fresh private directory. */
export function createHostLayout(): HostLayout {
  removeStaleEtcDirs();
  const generatedEtcDir = fs.mkdtempSync(path.join(os.tmpdir(), `${ETC_DIR_PREFIX}${process.pid}-`));
  fs.chmodSync(generatedEtcDir, 0o755);
  const etcFiles: { source: string; dest: string }[] = [];
  for (const [name, content] of Object.entries(generatedEtc())) {
    const file = path.join(generatedEtcDir, name);
    fs.writeFileSync(file, content, { mode: 0o644 });
    etcFiles.push({ source: file, dest: `/etc/${name}` });
  }
  for (const name of HOST_ETC) {
    const hostPath = path.join('/etc', name);
    if (fs.existsSync(hostPath)) etcFiles.push({ source: hostPath, dest: hostPath });
  }
  // Mask sources: not under /etc inside (only etcFiles are mounted), read-only for everyone.
  const emptyFile = path.join(generatedEtcDir, '.empty-file');
  const emptyDir = path.join(generatedEtcDir, '.empty-dir');
  fs.writeFileSync(emptyFile, '', { mode: 0o444 });
  fs.mkdirSync(emptyDir, { mode: 0o555 });
  const procMasks = detectProcMasks().map((m) => ({ source: m.dir ? emptyDir : emptyFile, dest: `/proc/${m.name}` }));
  return {
    systemMounts: detectSystemMounts(),
    etcFiles,
    procMasks,
    generatedEtcDir,
    dispose: () => fs.rmSync(generatedEtcDir, { recursive: true, force: true }),
  };
}
