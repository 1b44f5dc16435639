import { describe, expect, test } from 'vitest';
import { buildBwrapInvocation, encodeArgs, type BwrapPolicy } from '../../src/sandbox/bwrap-args.js';

const policy: BwrapPolicy = {
  systemMounts: [{ kind: 'ro-bind', source: '/usr', dest: '/usr' }, { kind: 'symlink', target: 'usr/bin', dest: '/bin' }],
  etcFiles: [{ source: '/run/gen/passwd', dest: '/etc/passwd' }],
  procMasks: [{ source: '/run/gen/.empty-file', dest: '/proc/cmdline' }, { source: '/run/gen/.empty-dir', dest: '/proc/acpi' }],
  venvDir: '/srv/envs/bare/.venv',
  sandboxFiles: ['main.py'],
  volumes: [{ name: 'shared', mode: 'ro' }, { name: 'out', mode: 'rw' }],
  seccomp: true,
  tmpSizeBytes: 1024,
  env: { PATH: '/usr/bin', SECRET: 'value' },
  command: ['--bind', '/', '/x'],
};

describe('buildBwrapInvocation', () => {
  test('only --args and the command are on the visible command line, after --', () => {
    const inv = buildBwrapInvocation(policy);
    expect(inv.argv).toEqual(['--args', '3', '--', '--bind', '/', '/x']);
  });

  test('options carry every hardening flag and the mounts', () => {
    expect(buildBwrapInvocation(policy).options).toMatchInlineSnapshot(`
      [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin",
        "--setenv",
        "SECRET",
        "value",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--dir",
        "/etc",
        "--ro-bind",
        "/run/gen/passwd",
        "/etc/passwd",
        "--ro-bind",
        "/srv/envs/bare/.venv",
        "/opt/venv",
        "--proc",
        "/proc",
        "--ro-bind",
        "/run/gen/.empty-file",
        "/proc/cmdline",
        "--ro-bind",
        "/run/gen/.empty-dir",
        "/proc/acpi",
        "--dev",
        "/dev",
        "--size",
        "1024",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/sandbox",
        "--ro-bind-data",
        "4",
        "/sandbox/main.py",
        "--remount-ro",
        "/sandbox",
        "--bind-fd",
        "5",
        "/workspace",
        "--dir",
        "/volumes",
        "--ro-bind-fd",
        "6",
        "/volumes/shared",
        "--bind-fd",
        "7",
        "/volumes/out",
        "--seccomp",
        "8",
        "--remount-ro",
        "/",
        "--chdir",
        "/workspace",
      ]
    `);
  });

  test('descriptor roles follow the numbers used in the options', () => {
    expect(buildBwrapInvocation(policy).fdRoles).toEqual([
      { role: 'args' }, { role: 'sandbox-file', name: 'main.py' }, { role: 'workspace' }, { role: 'volume', name: 'shared' }, { role: 'volume', name: 'out' }, { role: 'seccomp' },
    ]);
  });

  test('no setup target is placed under the writable workspace', () => {
    const o = buildBwrapInvocation(policy).options;
    const targets = o.filter((a, i) => ['--dir', '--file', '--symlink', '--ro-bind-data', '--tmpfs'].includes(o[i - 1] ?? '') || (['--ro-bind', '--bind'].includes(o[i - 2] ?? '') && a.startsWith('/')));
    expect(targets.filter((t) => t.startsWith('/workspace'))).toEqual([]);
  });

  test('/proc masks are mounted after /proc itself, read-only', () => {
    const o = buildBwrapInvocation(policy).options;
    const proc = o.indexOf('--proc');
    for (const dest of ['/proc/cmdline', '/proc/acpi']) {
      const i = o.indexOf(dest);
      expect(i).toBeGreaterThan(proc);
      expect(o[i - 2]).toBe('--ro-bind');
    }
    expect(buildBwrapInvocation({ ...policy, procMasks: [] }).options.filter((a) => a.startsWith('/proc/'))).toEqual([]);
  });

  test('shareNet keeps the joined network namespace: --share-net right after --unshare-all, nothing else changes', () => {
    const base = buildBwrapInvocation(policy).options;
    expect(base).not.toContain('--share-net');
    expect(buildBwrapInvocation({ ...policy, shareNet: false }).options).toEqual(base);
    const shared = buildBwrapInvocation({ ...policy, shareNet: true }).options;
    expect(shared.slice(0, 4)).toEqual(['--unshare-all', '--share-net', '--unshare-user', '--disable-userns']);
    expect(shared.filter((a) => a !== '--share-net')).toEqual(base);
  });

  test('NUL bytes cannot smuggle extra options', () => {
    expect(() => encodeArgs(['--setenv', 'A', 'x\0--bind'])).toThrow(/NUL/);
    expect(encodeArgs(['a', 'b']).toString()).toBe('a\0b\0');
  });
});
