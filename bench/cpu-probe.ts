// Ad-hoc (not committed): machine CPU per execution, spawn helper on vs off, two services side by side,
// alternating rounds. `npm run build --silent && npx tsx bench/cpu-probe.ts`
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { BenchClient, createSession, executeIn } from './lib/http.js';
import { cleanEnv, ENVIRONMENTS_DIR, freePort, makeTempDir, startService } from './lib/server.js';
const sys = () => { const f = fs.readFileSync('/proc/stat','utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number); return { user: f[0]!+f[1]!, sys: f[2]! }; };
const pcpu = (pid: number) => { const s = fs.readFileSync(`/proc/${pid}/stat`,'utf8'); const f = s.slice(s.lastIndexOf(')')+2).split(' ').map(Number); return (f[11]!+f[12]!)*10; };
const N = Number(process.env.N ?? 200);
async function main() {
  const tmp = makeTempDir('cpu-probe-');
  const mk = async (mode: string, uidBase: string) => {
    const d = path.join(tmp, mode); fs.mkdirSync(d, { mode: 0o711 });
    const env = cleanEnv({ BUBBLE_SANDBOX_HOST: '127.0.0.1', BUBBLE_SANDBOX_PORT: String(await freePort()), BUBBLE_SANDBOX_WORKSPACE_DIR: d, BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR, BUBBLE_SANDBOX_SANDBOXES_CPU_CORES: '2', BUBBLE_SANDBOX_SANDBOX_UID_BASE: uidBase, BUBBLE_SANDBOX_SPAWN_HELPER: mode, BUBBLE_SANDBOX_UID_LOCK_DIR: path.join(tmp, `lock-${mode}`) });
    const server = await startService(env);
    const client = new BenchClient(server.baseUrl);
    const ids = ['a','b','c','d'].map((x) => `${mode}-${x}`);
    for (const id of ids) await createSession(client, id);
    for (let i = 0; i < 20; i++) await executeIn(client, ids[i%4]!, { script: "print('x')" });
    return { mode, server, client, ids };
  };
  const services = [await mk('off', '260000'), await mk('on', '270000')];
  for (let r = 0; r < 3; r++) for (const s of services) {
    const s0 = sys(); const p0 = pcpu(s.server.pid); const t0 = performance.now();
    let started = 0;
    await Promise.all([0,1,2,3].map(async (k) => { while (started < N) { started++; await executeIn(s.client, s.ids[k]!, { script: "print('x')" }); } }));
    const dt = performance.now() - t0; await new Promise(res => setTimeout(res, 300));
    const s1 = sys(); const p1 = pcpu(s.server.pid);
    const per = (x: number) => (x / N).toFixed(2);
    console.log(`spawn helper ${s.mode}: ${(N / dt * 1000).toFixed(1)}/s; per exec ms: machine user ${per((s1.user-s0.user)*10)} sys ${per((s1.sys-s0.sys)*10)} total ${per((s1.user-s0.user+s1.sys-s0.sys)*10)}; service process self ${per(p1-p0)}; load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  }
  for (const s of services) { s.client.close(); await s.server.stop(); }
  fs.rmSync(tmp, { recursive: true, force: true });
}
main().catch((e) => { console.error(e); process.exit(1); });
