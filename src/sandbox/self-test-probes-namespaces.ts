// Self-test probes of the namespaces and the network: the sandbox sees only itself and a loopback
// that leads nowhere.
import fs from 'node:fs';
import { clip, closeServer, hostListener, jsonOf, outputOf, py, PY_PRELUDE, sh, token, verdict, type ProbeSpec } from './self-test-kit.js';


export const NAMESPACE_PROBES: ProbeSpec[] = [
  {
    category: 'namespaces', name: 'pid',
    async check(ctx) {
      const out = outputOf((await ctx.run(sh('echo $$; cat /proc/1/comm; ls /proc | grep -c "^[0-9]"'))).result);
      const [pid, comm, count] = out.trim().split('\n');
      // Pid 1 is the sandbox's own init: bwrap's, or a fork server's execution's (fork-body.py names it).
      const ok = Number(pid) < 10 && (comm === 'bwrap' || comm === 'sandbox-init') && Number(count) < 10;
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
];

export const NETWORK_PROBES: ProbeSpec[] = [
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
];
