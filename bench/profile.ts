// Profiles the service under load: starts it with --cpu-prof, drives executions of print('x')
// from several clients (one session each), stops it with SIGTERM and summarises the profile
// over the load window. Run after `npm run build`:  npx tsx bench/profile.ts
// Env: PROFILE_N (executions, default 200), PROFILE_CLIENTS (default 4), PROFILE_SPAWN_HELPER
// (on/off: the service's SPAWN_HELPER, to compare forking through the spawn helper with forking itself).
import fs from 'node:fs';
import path from 'node:path';
import { PRINT_X, intFromEnv } from './lib/context.js';
import { summarizeProfile, type CpuProfile, type Ranked } from './lib/cpuprofile.js';
import { BenchClient, createSession, executeIn } from './lib/http.js';
import { ENVIRONMENTS_DIR, freePort, makeTempDir, processCpuMs, PROJECT_ROOT, cleanEnv, startService, removeTempDir } from './lib/server.js';

const total = intFromEnv('PROFILE_N', 200);
const clients = intFromEnv('PROFILE_CLIENTS', 4);
const monoUs = () => Number(process.hrtime.bigint() / 1000n);

async function main(): Promise<void> {
  const tmp = makeTempDir('bubble-profile-');
  const profDir = path.join(tmp, 'prof');
  const ws = path.join(tmp, 'ws');
  fs.mkdirSync(ws, { mode: 0o711 });
  const env = cleanEnv({
    BUBBLE_SANDBOX_HOST: '127.0.0.1', BUBBLE_SANDBOX_PORT: String(await freePort()),
    BUBBLE_SANDBOX_WORKSPACE_DIR: ws, BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR,
    ...(process.env.PROFILE_SPAWN_HELPER !== undefined ? { BUBBLE_SANDBOX_SPAWN_HELPER: process.env.PROFILE_SPAWN_HELPER } : {}),
  });
  const server = await startService(env, { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] });
  const client = new BenchClient(server.baseUrl);
  try {
    const ids = Array.from({ length: clients }, (_, k) => `prof-${k}`);
    for (const id of ids) await createSession(client, id);
    for (let i = 0; i < 20; i++) await executeIn(client, ids[i % clients] as string, { script: PRINT_X });

    let started = 0;
    let failed = 0;
    const cpu0 = processCpuMs(server.pid);
    const w0 = monoUs();
    await Promise.all(ids.map(async (id) => {
      while (started < total) {
        started += 1;
        const r = await executeIn(client, id, { script: PRINT_X });
        if (r.status !== 200 || r.result?.status !== 'ok') failed += 1;
      }
    }));
    const w1 = monoUs();
    const cpuMs = processCpuMs(server.pid) - cpu0;
    client.close();
    await server.stop();

    const file = fs.readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error('the service wrote no .cpuprofile');
    const profile = JSON.parse(fs.readFileSync(path.join(profDir, file), 'utf8')) as CpuProfile;
    const summary = summarizeProfile(profile, { start: w0, end: w1 });
    const wallMs = (w1 - w0) / 1000;
    const out = {
      executions: total, clients, failed, wall_ms: Math.round(wallMs),
      executions_per_s: Math.round((total / wallMs) * 1000 * 10) / 10,
      process_cpu_ms_per_execution: Math.round((cpuMs / total) * 100) / 100,
      main_thread_busy_ms_per_execution: Math.round((summary.busy_ms / total) * 100) / 100,
      ...summary,
    };
    const resultsDir = path.join(PROJECT_ROOT, 'bench-results');
    fs.mkdirSync(resultsDir, { recursive: true });
    fs.copyFileSync(path.join(profDir, file), path.join(resultsDir, 'service.cpuprofile'));
    fs.writeFileSync(path.join(resultsDir, 'profile-summary.json'), `${JSON.stringify(out, null, 2)}\n`);

    const show = (title: string, list: Ranked[]) => {
      process.stdout.write(`\n${title}\n`);
      for (const r of list) process.stdout.write(`  ${r.ms.toFixed(1).padStart(8)} ms  ${(r.share_of_busy * 100).toFixed(1).padStart(5)}%  ${r.name}\n`);
    };
    process.stdout.write(`${total} executions, ${clients} clients, ${failed} failed, ${out.wall_ms} ms wall (${out.executions_per_s}/s)\n`);
    process.stdout.write(`main thread busy ${summary.busy_ms} ms of ${summary.window_ms} ms window = ${(summary.busy_fraction * 100).toFixed(1)}% (${summary.windowed ? 'load window' : 'whole profile'}); idle ${summary.idle_ms} ms; GC ${summary.gc_ms} ms; (program) ${summary.program_ms} ms\n`);
    process.stdout.write(`per execution: main thread ${out.main_thread_busy_ms_per_execution} ms, whole process CPU (all threads, user+sys) ${out.process_cpu_ms_per_execution} ms\n`);
    show('top self time (share of busy time)', summary.top_self);
    show('self time by module', summary.by_module);
    show('inclusive time, project functions', summary.project_inclusive);
    show('busy time charged to the nearest project frame', summary.by_project_caller);
    process.stdout.write('\nbench-results/profile-summary.json, bench-results/service.cpuprofile\n');
  } finally {
    client.close();
    await server.stop();
    removeTempDir(tmp);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`profile failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
