// The bwrap command line as a pure function of a policy. Nothing outside src/sandbox builds a
// bwrap argument. Options travel NUL-separated through `--args <fd>` so neither /proc/1/cmdline
// inside nor `ps` on the host shows mounts or environment values.

/**
 * How a host system path appears inside: read-only bind, or a symlink (merged-/usr hosts); a
 * read-write bind only for a writable-root session's own overlay over the host's /usr.
 */
export type SystemMount =
  | { kind: 'ro-bind'; source: string; dest: string }
  | { kind: 'bind'; source: string; dest: string }
  | { kind: 'symlink'; target: string; dest: string };

/** Where things live inside the sandbox. */
export const SANDBOX_PATHS = {
  workspace: '/workspace',
  volumes: '/volumes',
  venv: '/opt/venv',
  scriptDir: '/sandbox',
  script: '/sandbox/main.py',
  launcher: '/sandbox/launch.py',
  tmp: '/tmp',
} as const;

export const SANDBOX_UID = 1000;
export const SANDBOX_GID = 1000;
export const SANDBOX_HOSTNAME = 'sandbox';

/**
 * A top-level entry of a root filesystem used as `/`: a directory passed as an O_PATH descriptor
 * (read-only, or read-write for a session's writable overlay), or a symlink made anew by bwrap.
 */
export type RootEntry =
  | { kind: 'dir'; name: string; writable: boolean }
  | { kind: 'symlink'; name: string; target: string };

/** Top-level names bwrap provides itself, whatever the root filesystem has there. */
export const ROOT_NAMES_PROVIDED = new Set(['proc', 'dev', 'sys', 'tmp', 'workspace', 'sandbox', 'volumes']);

export interface BwrapPolicy {
  /**
   * A root filesystem's top-level entries, mounted on bwrap's own read-only `/` (so every setup
   * target is a top-level directory bwrap made, never beneath one the sandbox can write); replaces
   * systemMounts and etcFiles. Absent or null: the host's system directories.
   */
  rootEntries?: readonly RootEntry[] | null;
  /** The user inside: 0 in a writable root (root of the sandbox's own user namespace); default SANDBOX_UID. */
  insideUid?: number;
  /** Read-only system directories and merged-/usr symlinks. */
  systemMounts: readonly SystemMount[];
  /** Files placed read-only under /etc: generated ones (passwd, hosts, ...) and a few host ones. */
  etcFiles: readonly { source: string; dest: string }[];
  /** Empty read-only sources mounted over host-describing /proc entries (/proc/cmdline, ...). */
  procMasks: readonly { source: string; dest: string }[];
  /** Host directory of the environment's virtual environment, mounted read-only at /opt/venv. */
  venvDir: string | null;
  /** Mount venvDir read-write (a writable-root session's own overlay over the venv). */
  venvWritable?: boolean;
  /** Names of files to place read-only in /sandbox (main.py, launch.py), each read from an fd, never from the workspace. */
  sandboxFiles: readonly string[];
  /**
   * A host directory bound read-only at /sandbox instead of sandboxFiles (a warm sandbox's: the
   * service writes main.py into it once the program is known). Only the service can write it.
   */
  sandboxDir?: string | null;
  /** Volumes, mounted at /volumes/<name>; their sources are passed as O_PATH fds. */
  volumes: readonly { name: string; mode: 'ro' | 'rw' }[];
  /** Whether a seccomp program is passed on an fd. */
  seccomp: boolean;
  /**
   * Capabilities kept in the sandbox's own user namespace (bwrap --cap-add after --cap-drop ALL):
   * only a fork server's (warm/fork-server.ts), which needs them for each execution's namespaces and
   * mounts and drops them before any program runs. Absent or empty: none.
   */
  capAdd?: readonly ('CAP_SYS_ADMIN' | 'CAP_SETPCAP')[];
  /**
   * Stay in the network namespace bwrap starts in (a session's, joined by nsenter before bwrap)
   * instead of a fresh loopback-only one. Absent or false: a private netns per sandbox.
   */
  shareNet?: boolean;
  tmpSizeBytes: number;
  env: Readonly<Record<string, string>>;
  command: readonly string[];
}

/** What each extra descriptor (from 3 upwards, in order) must carry. */
export type FdRole =
  | { role: 'args' }
  | { role: 'seccomp' }
  | { role: 'sandbox-file'; name: string }
  | { role: 'workspace' }
  | { role: 'volume'; name: string }
  | { role: 'root-entry'; name: string };

export interface BwrapInvocation {
  /** argv after the bwrap binary: only `--args N -- command...` is visible. */
  argv: string[];
  /** The options written NUL-separated to the args fd. */
  options: string[];
  /** Descriptor roles; fdRoles[i] is fd 3 + i in the child. */
  fdRoles: FdRole[];
}

export function buildBwrapInvocation(policy: BwrapPolicy): BwrapInvocation {
  const fdRoles: FdRole[] = [{ role: 'args' }];
  const fdOf = (role: FdRole): string => {
    fdRoles.push(role);
    return String(2 + fdRoles.length);
  };

  const o: string[] = [
    // Namespaces: user, pid, net, ipc, uts, cgroup, mount; no nested user namespaces. --share-net
    // keeps the session's netns the chain already entered (the user namespace is still new, so
    // the sandbox holds no capability over it).
    '--unshare-all', ...(policy.shareNet === true ? ['--share-net'] : []), '--unshare-user', '--disable-userns',
    '--uid', String(policy.insideUid ?? SANDBOX_UID), '--gid', String(policy.insideUid ?? SANDBOX_GID),
    '--hostname', SANDBOX_HOSTNAME,
    '--die-with-parent', '--new-session', '--cap-drop', 'ALL',
    ...(policy.capAdd ?? []).flatMap((c) => ['--cap-add', c]),
    '--clearenv',
  ];
  for (const [k, v] of Object.entries(policy.env)) o.push('--setenv', k, v);

  if (policy.rootEntries) {
    for (const e of policy.rootEntries) {
      if (!/^[^/\0]+$/.test(e.name) || e.name === '.' || e.name === '..' || ROOT_NAMES_PROVIDED.has(e.name)) throw new Error(`not a root entry name: ${e.name}`);
      if (e.kind === 'symlink') o.push('--symlink', e.target, `/${e.name}`);
      else o.push(e.writable ? '--bind-fd' : '--ro-bind-fd', fdOf({ role: 'root-entry', name: e.name }), `/${e.name}`);
    }
  } else {
    for (const m of policy.systemMounts) {
      if (m.kind === 'symlink') o.push('--symlink', m.target, m.dest);
      else o.push(m.kind === 'bind' ? '--bind' : '--ro-bind', m.source, m.dest);
    }
    o.push('--dir', '/etc');
    for (const f of policy.etcFiles) o.push('--ro-bind', f.source, f.dest);
  }
  if (policy.venvDir !== null) o.push(policy.venvWritable === true ? '--bind' : '--ro-bind', policy.venvDir, SANDBOX_PATHS.venv);

  o.push('--proc', '/proc');
  for (const m of policy.procMasks) o.push('--ro-bind', m.source, m.dest);
  o.push('--dev', '/dev');
  o.push('--size', String(policy.tmpSizeBytes), '--tmpfs', SANDBOX_PATHS.tmp);

  // The script and its launcher live on a bwrap-made tmpfs outside the workspace: no setup target
  // is ever placed beneath a directory the sandbox can write (bwrap 0.8 follows planted symlinks there).
  if (policy.sandboxDir != null) {
    if (policy.sandboxFiles.length > 0) throw new Error('sandboxDir and sandboxFiles are exclusive');
    o.push('--ro-bind', policy.sandboxDir, SANDBOX_PATHS.scriptDir);
  } else if (policy.sandboxFiles.length > 0) {
    o.push('--tmpfs', SANDBOX_PATHS.scriptDir);
    for (const name of policy.sandboxFiles) {
      if (!/^[A-Za-z0-9_-]+\.py$/.test(name)) throw new Error(`not a sandbox file name: ${name}`);
      o.push('--ro-bind-data', fdOf({ role: 'sandbox-file', name }), `${SANDBOX_PATHS.scriptDir}/${name}`);
    }
    o.push('--remount-ro', SANDBOX_PATHS.scriptDir);
  }
  o.push('--bind-fd', fdOf({ role: 'workspace' }), SANDBOX_PATHS.workspace);
  if (policy.volumes.length > 0) {
    o.push('--dir', SANDBOX_PATHS.volumes);
    for (const v of policy.volumes) {
      const flag = v.mode === 'rw' ? '--bind-fd' : '--ro-bind-fd';
      o.push(flag, fdOf({ role: 'volume', name: v.name }), `${SANDBOX_PATHS.volumes}/${v.name}`);
    }
  }
  if (policy.seccomp) o.push('--seccomp', fdOf({ role: 'seccomp' }));
  o.push('--remount-ro', '/');
  o.push('--chdir', SANDBOX_PATHS.workspace);

  return { argv: ['--args', '3', '--', ...policy.command], options: o, fdRoles };
}

/** Encode options for `--args`: each argument NUL-terminated. */
export function encodeArgs(options: readonly string[]): Buffer {
  for (const a of options) {
    if (a.includes('\0')) throw new Error('bwrap option contains a NUL byte');
  }
  return Buffer.from(options.map((a) => `${a}\0`).join(''), 'utf8');
}
