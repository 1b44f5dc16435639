// Self-test probes of what the sandbox can read and leak: the filesystem view, the environment and
// the open descriptors.
import fs from 'node:fs';
import path from 'node:path';
import { baseEnvironment } from './runner.js';
import { clip, jsonOf, outputOf, py, pyArgv, PY_PRELUDE, sh, token, verdict, withServiceVariable, type ProbeSpec } from './self-test-kit.js';

const CANARY_VARIABLE = 'BUBBLE_SANDBOX_SELFTEST_CANARY';

export const FILESYSTEM_PROBES: ProbeSpec[] = [
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
];

export const ENVIRONMENT_PROBES: ProbeSpec[] = [
  {
    category: 'environment', name: 'clean',
    async check(ctx) {
      const value = `canary-${token()}`;
      const env = await withServiceVariable(CANARY_VARIABLE, value, async () =>
        jsonOf<Record<string, string>>((await ctx.run(py('import json, os\nprint(json.dumps(dict(os.environ)))'))).result));
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
];

export const FD_PROBES: ProbeSpec[] = [
  {
    category: 'fds', name: 'only-stdio',
    async check(ctx) {
      // python3 -c, not a script: a script's launcher holds one pipe of ours on purpose (its error report).
      const fds = jsonOf<number[]>((await ctx.run(pyArgv(`import json, os, resource
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
];
