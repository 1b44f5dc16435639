// Self-test probes of the resource limits: timeout, cgroup memory and pids, file size, /tmp size
// and the rlimits the wrapper sets.
import fs from 'node:fs';
import path from 'node:path';
import { fail, jsonOf, py, PY_PRELUDE, sh, verdict, type ProbeSpec } from './self-test-kit.js';

const MiB = 1024 * 1024;

export const SLOW_LIMIT_PROBES: ProbeSpec[] = [
  {
    category: 'limits', name: 'timeout',
    async check(ctx) {
      const started = performance.now();
      const { result } = await ctx.run(sh('sleep 30'), { timeoutMs: 500 });
      const took = Math.round(performance.now() - started);
      return verdict(result.status === 'timeout' && took < 3000, `'sleep 30' with a 500 ms timeout ended '${result.status}' after ${took} ms`);
    },
  },
  {
    category: 'limits', name: 'memory',
    async check(ctx) {
      if (ctx.sandbox.cgroupMode === 'none') return fail(`no cgroups: memory is not limited${ctx.sandbox.cgroupReason ? ` (${ctx.sandbox.cgroupReason})` : ''}`);
      const { result } = await ctx.run(py('data = bytes([1]) * (256 << 20)\nprint(len(data))'), { limits: { memoryBytes: 64 * MiB } });
      return verdict(result.status === 'oom', `a 256 MiB allocation under a 64 MiB limit ended '${result.status}' (cgroup ${ctx.sandbox.cgroupMode})`);
    },
  },
  {
    category: 'limits', name: 'pids',
    async check(ctx) {
      if (ctx.sandbox.cgroupMode === 'none') return fail(`no cgroups: processes are not limited${ctx.sandbox.cgroupReason ? ` (${ctx.sandbox.cgroupReason})` : ''}`);
      const { result } = await ctx.run(py(`${PY_PRELUDE}
import time
forked = refused = 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    forked += 1
print(json.dumps({'forked': forked, 'refused': refused, 'procs': sum(1 for p in os.listdir('/proc') if p.isdigit())}))
`), { limits: { pids: 16 } });
      const r = jsonOf<{ forked: number; refused: number; procs: number }>(result);
      return verdict(r.procs <= 17 && r.refused > 0, `40 forks under pids 16: ${r.forked} started, ${r.refused} refused, ${r.procs} processes visible`);
    },
  },
];

export const LIMIT_PROBES: ProbeSpec[] = [
  {
    category: 'limits', name: 'file-size',
    async check(ctx) {
      const { result, workspace } = await ctx.run(py(`${PY_PRELUDE}
def write():
    with open('/workspace/fsize-probe', 'wb') as f:
        f.write(bytes(2 << 20))
print(json.dumps({'result': outcome(write)}))
`), { limits: { fileSizeBytes: MiB } });
      const r = jsonOf<{ result: string }>(result);
      const size = fs.lstatSync(path.join(workspace, 'fsize-probe'), { throwIfNoEntry: false })?.size ?? 0;
      return verdict(r.result === 'EFBIG' && size <= MiB, `writing 2 MiB under a 1 MiB file size limit: ${r.result}, ${size} bytes written`);
    },
  },
  {
    category: 'limits', name: 'tmp-size',
    async check(ctx) {
      const r = jsonOf<{ result: string }>((await ctx.run(py(`${PY_PRELUDE}
def write():
    with open('/tmp/fill', 'wb') as f:
        f.write(bytes(2 << 20))
print(json.dumps({'result': outcome(write)}))
`), { limits: { tmpSizeBytes: MiB } })).result);
      return verdict(r.result === 'ENOSPC', `writing 2 MiB to a 1 MiB /tmp: ${r.result}`);
    },
  },
  {
    category: 'limits', name: 'rlimits',
    async check(ctx) {
      const r = jsonOf<Record<string, [number, number]>>((await ctx.run(py(`import json, resource as r
print(json.dumps({k: r.getrlimit(getattr(r, 'RLIMIT_' + k)) for k in ('CORE', 'NOFILE', 'FSIZE', 'CPU')}))
`))).result);
      const want = ctx.sandbox.defaultLimits;
      const fsize = Math.max(1, Math.floor(want.fileSizeBytes / 512)) * 512;
      const ok = r.CORE?.[0] === 0 && r.NOFILE?.[0] === want.openFiles && r.FSIZE?.[0] === fsize && (r.CPU?.[0] ?? -1) > 0;
      return verdict(ok, `core ${String(r.CORE?.[0])}, nofile ${String(r.NOFILE?.[0])} (want ${want.openFiles}), fsize ${String(r.FSIZE?.[0])} (want ${fsize}), cpu ${String(r.CPU?.[0])} s`);
    },
  },
];
