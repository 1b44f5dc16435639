// The bwrap options for a root filesystem as `/`: its top-level entries bound from descriptors on
// bwrap's own root (nothing of the host's /usr or /etc), read-write only for a writable root, and
// root inside only then.
import { expect, test } from 'vitest';
import { buildBwrapInvocation, type BwrapPolicy } from '../../src/sandbox/bwrap-args.js';

const base: BwrapPolicy = {
  systemMounts: [{ kind: 'ro-bind', source: '/usr', dest: '/usr' }],
  etcFiles: [{ source: '/run/gen/passwd', dest: '/etc/passwd' }],
  procMasks: [],
  venvDir: null,
  sandboxFiles: [],
  volumes: [],
  seccomp: false,
  tmpSizeBytes: 1024,
  env: {},
  command: ['true'],
};

const entries = (writable: boolean) => [
  { kind: 'symlink' as const, name: 'bin', target: 'usr/bin' },
  { kind: 'dir' as const, name: 'etc', writable },
  { kind: 'dir' as const, name: 'usr', writable },
];

test('a read-only rootfs: top-level dirs from fds, read-only; no host mounts; uid 1000', () => {
  const inv = buildBwrapInvocation({ ...base, rootEntries: entries(false) });
  const o = inv.options.join(' ');
  expect(o).toContain('--symlink usr/bin /bin');
  expect(o).toContain('--ro-bind-fd 4 /etc --ro-bind-fd 5 /usr');
  expect(o).not.toContain('--ro-bind /usr /usr');
  expect(o).not.toContain('/run/gen/passwd');
  expect(o).toContain('--uid 1000 --gid 1000');
  expect(inv.fdRoles.slice(1, 3)).toEqual([{ role: 'root-entry', name: 'etc' }, { role: 'root-entry', name: 'usr' }]);
});

test('a writable root: read-write binds, root of its own user namespace', () => {
  const o = buildBwrapInvocation({ ...base, rootEntries: entries(true), insideUid: 0 }).options.join(' ');
  expect(o).toContain('--bind-fd 4 /etc --bind-fd 5 /usr');
  expect(o).toContain('--uid 0 --gid 0');
  expect(o).toContain('--cap-drop ALL');
});

test.each(['proc', 'workspace', 'tmp', '..', 'a/b'])('a root entry named %j is refused', (name) => {
  expect(() => buildBwrapInvocation({ ...base, rootEntries: [{ kind: 'dir', name, writable: false }] })).toThrow(/not a root entry name/);
});
