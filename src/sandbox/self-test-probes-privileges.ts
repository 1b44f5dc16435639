// Self-test probes of what the sandboxed process may do: its identity inside and on the host, its
// capabilities, and the seccomp filter.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IS_ROOT } from './sandbox.js';
import { fail, jsonOf, outputOf, py, PY_PRELUDE, sh, verdict, type ProbeSpec } from './self-test-kit.js';


export const IDENTITY_PROBES: ProbeSpec[] = [
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
];

export const CAPABILITY_PROBES: ProbeSpec[] = [
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
];

export const SECCOMP_PROBES: ProbeSpec[] = [
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
];
