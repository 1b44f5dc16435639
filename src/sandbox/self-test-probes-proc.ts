// Self-test probes of what the sandbox reads from its /proc: the environment of every process it
// can see (bwrap, pid 1 inside, included) and the host-describing entries that must be masked.
import { MASKED_PROC_ENTRIES } from './host-layout.js';
import { baseEnvironment } from './runner.js';
import { jsonOf, py, PY_PRELUDE, token, verdict, withServiceVariable, type ProbeSpec } from './self-test-kit.js';

const CANARY_VARIABLE = 'BUBBLE_SANDBOX_SELFTEST_ENVIRON_CANARY';
const SANDBOX_VARIABLE = 'BUBBLE_SANDBOX_SELFTEST_OWN';
/** bwrap sets PWD for --chdir in the program's environment. */
const CHDIR_PWD = 'PWD=/workspace';

const READ_ENVIRONS = `import json, os
seen = {}
for pid in sorted((p for p in os.listdir('/proc') if p.isdigit()), key=int):
    try:
        with open('/proc/%s/environ' % pid, 'rb') as f:
            seen[pid] = [v.decode(errors='replace') for v in f.read().split(b'\\0') if v]
    except OSError:
        pass
print(json.dumps(seen))
`;

/** `NAME=value` entries of each readable /proc/<pid>/environ that the sandbox was not given. */
export function foreignEnvironEntries(environs: Record<string, string[]>, sandboxEnv: Record<string, string>): Record<string, string[]> {
  const allowed = new Set([...Object.entries(sandboxEnv).map(([k, v]) => `${k}=${v}`), CHDIR_PWD]);
  const foreign: Record<string, string[]> = {};
  for (const [pid, entries] of Object.entries(environs)) {
    const extra = entries.filter((e) => !allowed.has(e));
    if (extra.length > 0) foreign[pid] = extra;
  }
  return foreign;
}

/** For each masked /proc entry present inside: bytes (or directory entries) read, and how a write ended. */
export const READ_PROC_MASKS = `${PY_PRELUDE}
r = {}
for name in ${JSON.stringify(MASKED_PROC_ENTRIES)}:
    p = '/proc/' + name
    if not os.path.lexists(p):
        continue
    if os.path.isdir(p):
        try:
            size = len(os.listdir(p))
        except OSError as e:
            size = errno.errorcode.get(e.errno, str(e.errno))
        write = outcome(lambda: os.close(os.open(p + '/probe', os.O_WRONLY | os.O_CREAT, 0o600)))
    else:
        try:
            with open(p, 'rb') as f:
                size = len(f.read(65536))
        except OSError as e:
            size = errno.errorcode.get(e.errno, str(e.errno))
        write = outcome(lambda: os.close(os.open(p, os.O_WRONLY)))
    r[name] = {'dir': os.path.isdir(p), 'size': size, 'write': write}
print(json.dumps(r))
`;

export interface ProcMaskSeen {
  dir: boolean;
  /** Bytes read (file) or entries listed (directory), or the errno name when that failed. */
  size: number | string;
  write: string;
}

/** Masked means: it reads as empty (not merely unreadable) and a write fails. */
export const isMasked = (s: ProcMaskSeen): boolean => s.size === 0 && s.write !== 'ok';

export const PROC_PROBES: ProbeSpec[] = [
  {
    category: 'environment', name: 'proc-environ',
    async check(ctx) {
      const own = `own-${token()}`;
      const environs = await withServiceVariable(CANARY_VARIABLE, `canary-${token()}`, async () =>
        jsonOf<Record<string, string[]>>((await ctx.run(py(READ_ENVIRONS), { env: { [SANDBOX_VARIABLE]: own } })).result));
      const foreign = foreignEnvironEntries(environs, { ...baseEnvironment(null), [SANDBOX_VARIABLE]: own });
      const pids = Object.keys(environs);
      // Names only: values of the service's environment (paths, secrets) must not reach /readyz.
      const named = Object.entries(foreign).map(([pid, entries]) => `pid ${pid}: ${entries.map((e) => e.split('=')[0]).join(', ')}`);
      const bwrap = environs['1'];
      const summary = `${pids.length} environ files readable (pids ${pids.join(', ')}); bwrap's (pid 1) ${bwrap === undefined ? 'unreadable' : `holds ${bwrap.length} variables`}`;
      return verdict(named.length === 0, named.length === 0 ? `${summary}; none holds a variable the sandbox was not given` : `variables the sandbox was not given: ${named.join('; ')}`);
    },
  },
  {
    category: 'filesystem', name: 'proc-masked',
    async check(ctx) {
      const seen = jsonOf<Record<string, ProcMaskSeen>>((await ctx.run(py(READ_PROC_MASKS))).result);
      const open = Object.entries(seen).filter(([, s]) => !isMasked(s));
      const present = Object.keys(seen).map((n) => `/proc/${n}`);
      return verdict(open.length === 0, open.length === 0
        ? `empty and read-only: ${present.join(', ') || 'none of them present'}`
        : `not masked: ${open.map(([n, s]) => `/proc/${n} (read ${String(s.size)}, write ${s.write})`).join(', ')}`);
    },
  },
];
