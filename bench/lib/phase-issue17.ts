// Issue 17 (warm sandboxes, a lighter cold path, a faster run_code), measured against the bare
// hardened floor (floor.runRaw), and the table rows with the issue's targets:
//   execute p50 in a session ≤ 0.5 of raw bwrap; one-shot p50 ≤ 0.6; 4-client throughput ≥ 0.9;
//   a pandas script in a session ≤ 0.25 of the same script spawned cold; run_code `1 + 1` warm
//   ≤ 3 ms round trip and ≥ 15× under a cold execute; memory of 50 sessions (for the budget).
// Runs inside `npm run bench`, or alone with `npx tsx bench/lib/phase-issue17.ts` (its own
// service and floors; BENCH_SIZE=small for a quick pass), which prints the rows and the JSON.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadConfig } from '../../src/config.js';
import { warmSizesFromEnv, type BenchContext } from './context.js';
import { createFloor } from './floor.js';
import { BenchClient } from './http.js';
import { measureRunCode, type RunCodeResult } from './phase-run-code.js';
import { measurePandas, measureWarmLatency, type PandasResult, type ServiceSeries, type WarmLatencyResult } from './phase-warm-latency.js';
import { measureWarmMemory, type WarmMemoryResult } from './phase-warm-memory.js';
import { measureWarmThroughput, type WarmThroughputResult } from './phase-warm-throughput.js';
import { notMeasuredRow } from './phase-kit.js';
import { fmt, renderTable, verdict, type Row } from './report.js';
import { cleanEnv, ENVIRONMENTS_DIR, freePort, makeTempDir, PROJECT_ROOT, startService, removeTempDir } from './server.js';

export const ISSUE17_TARGETS = {
  executeOverRaw: 0.5,
  oneShotOverRaw: 0.6,
  throughputOverRaw: 0.9,
  pandasOverCold: 0.25,
  runCodeRoundTripMs: 3,
  runCodeUnderColdExecute: 15,
} as const;

/** What the service needs for these phases beyond its defaults: 50 sessions on top of the bench's own. */
export const ISSUE17_SERVICE_ENV = { BUBBLE_SANDBOX_MAX_SESSIONS: '100' } as const;

/** A phase's figures, or why it could not measure (a FAIL row; the other phases still run). */
export type Measured<T> = T | { error: string };

export interface Issue17Result {
  latency: Measured<WarmLatencyResult>;
  throughput: Measured<WarmThroughputResult>;
  /**
   * The same with a second service whose sandboxes may use every core (SANDBOXES_CPU_CORES =
   * cores), as raw bwrap does: by default the sandboxes' parent cgroup keeps a core for the
   * service (cores - 1 = 1 core here), so the default figure compares one core with two.
   */
  throughput_all_cores: Measured<WarmThroughputResult>;
  pandas: Measured<PandasResult>;
  memory: Measured<WarmMemoryResult>;
}

async function attempt<T>(log: (m: string) => void, what: string, fn: () => Promise<T>): Promise<Measured<T>> {
  try {
    return await fn();
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err);
    log(`issue 17: ${what} not measured: ${error}`);
    return { error };
  }
}

const failed = <T extends object>(m: Measured<T>): m is { error: string } => 'error' in m;

type Issue17Context = Pick<BenchContext, 'client' | 'floor' | 'config' | 'server' | 'log'> & {
  sizes: Pick<BenchContext['sizes'], 'warm'>; floorDir: string;
  /** The main service's environment, for the second service of the all-cores throughput. */
  serviceEnv: NodeJS.ProcessEnv;
};

export async function measureIssue17(ctx: Issue17Context): Promise<Issue17Result> {
  const { client, floor, log } = ctx;
  const sizes = ctx.sizes.warm;
  log(`issue 17: execute and one-shot vs raw bwrap, ${sizes.n} rounds`);
  const latency = await attempt(log, 'execute/one-shot', () => measureWarmLatency({ client, floor, sizes, log }));
  log(`issue 17: throughput, 4 clients, 2 x ${sizes.throughputHalfSeconds} s per side`);
  const throughput = await attempt(log, 'throughput', () => measureWarmThroughput({ client, floor, sizes, log }));
  log('issue 17: throughput again, a service whose sandboxes may use every core as raw bwrap does');
  const throughputAllCores = await attempt(log, 'throughput, all cores', async () => {
    const dir = path.join(ctx.floorDir, 'all-cores-service');
    fs.mkdirSync(dir, { recursive: true, mode: 0o711 });
    const server = await startService({
      ...ctx.serviceEnv, BUBBLE_SANDBOX_PORT: String(await freePort()), BUBBLE_SANDBOX_WORKSPACE_DIR: dir,
      BUBBLE_SANDBOX_SANDBOXES_CPU_CORES: String(os.availableParallelism()),
      // A uid range of its own: the main service still holds the default one.
      BUBBLE_SANDBOX_SANDBOX_UID_BASE: '240000',
    });
    const allCores = new BenchClient(server.baseUrl);
    try {
      return await measureWarmThroughput({ client: allCores, floor, sizes, log });
    } finally {
      allCores.close();
      await server.stop();
    }
  });
  log(`issue 17: pandas script vs raw bwrap cold, ${sizes.pandasN} rounds`);
  // Raw bwrap needs no cgroup: this floor makes none (the main floor's manager stays the only one).
  const pandas = await attempt(log, 'pandas', async () => {
    const pandasDir = path.join(ctx.floorDir, 'pandas');
    fs.mkdirSync(pandasDir, { recursive: true, mode: 0o711 });
    const pandasFloor = await createFloor({ ...ctx.config, cgroups: 'off' }, pandasDir, 'pandas-exec');
    try {
      return await measurePandas({ client, pandasFloor, sizes, log });
    } finally {
      await pandasFloor.close();
    }
  });
  log(`issue 17: memory with ${sizes.memorySessions} sessions`);
  const memory = await attempt(log, 'memory', () => measureWarmMemory({ client, servicePid: ctx.server.pid, sizes, log }));
  return { latency, throughput, throughput_all_cores: throughputAllCores, pandas, memory };
}

const hitText = (s: ServiceSeries) => (s.claims ? `hits ${s.claims.hit}/${s.claims.hit + s.claims.miss}` : 'no claims metric');
const info = (metric: string, service: string, baseline = '-', ratio = '-'): Row => ({ metric, service, baseline, ratio, target: '-', result: 'info' });

export function issue17Rows(r: Issue17Result, k: RunCodeResult): Row[] {
  const T = ISSUE17_TARGETS;
  const { latency: l, throughput: t, throughput_all_cores: ta, pandas: p, memory: m } = r;
  const rows: Row[] = [];
  if (failed(l)) {
    rows.push(notMeasuredRow('#17 execute print(\'x\') and one-shot vs raw bwrap', `<= ${T.executeOverRaw.toFixed(2)} / <= ${T.oneShotOverRaw.toFixed(2)}`, l.error));
  } else {
    rows.push({
      metric: `#17 execute print('x') p50 ms, session vs raw bwrap (${hitText(l.execute)})`, service: fmt(l.execute.all.p50), baseline: fmt(l.raw_bwrap.p50),
      ratio: fmt(l.execute_over_raw_p50), target: `<= ${T.executeOverRaw.toFixed(2)}`, result: verdict(l.execute_over_raw_p50 <= T.executeOverRaw && l.execute.errors === 0),
    });
    rows.push({
      metric: `#17 one-shot POST /v1/execute p50 ms vs raw bwrap (${hitText(l.one_shot)})`, service: fmt(l.one_shot.all.p50), baseline: fmt(l.raw_bwrap.p50),
      ratio: fmt(l.one_shot_over_raw_p50), target: `<= ${T.oneShotOverRaw.toFixed(2)}`, result: verdict(l.one_shot_over_raw_p50 <= T.oneShotOverRaw && l.one_shot.errors === 0),
    });
    rows.push(info('#17   execute / one-shot p90 ms (raw bwrap p90)', `${fmt(l.execute.all.p90)} / ${fmt(l.one_shot.all.p90)}`, fmt(l.raw_bwrap.p90)));
  }
  if (failed(t)) {
    rows.push(notMeasuredRow('#17 throughput 4 clients', `>= ${T.throughputOverRaw.toFixed(2)}`, t.error));
  } else {
    const tpClaims = t.claims ? `, hits ${t.claims.hit}/${t.claims.hit + t.claims.miss}` : '';
    rows.push(info(
      `#17   throughput ${t.clients} clients, default SANDBOXES_CPU_CORES (cores - 1) vs raw bwrap on every core (429: ${t.service.http_429}, err: ${t.service.errors}/${t.raw_bwrap.errors}${tpClaims})`,
      fmt(t.service.per_s, 1), fmt(t.raw_bwrap.per_s, 1), fmt(t.ratio),
    ));
  }
  if (failed(ta)) {
    rows.push(notMeasuredRow('#17 throughput 4 clients, sandboxes on every core', `>= ${T.throughputOverRaw.toFixed(2)}`, ta.error));
  } else {
    const taClaims = ta.claims ? `, hits ${ta.claims.hit}/${ta.claims.hit + ta.claims.miss}` : '';
    rows.push({
      metric: `#17 throughput ${ta.clients} clients exec/s, sessions vs raw bwrap, both on every core (429: ${ta.service.http_429}, err: ${ta.service.errors}/${ta.raw_bwrap.errors}${taClaims})`,
      service: fmt(ta.service.per_s, 1), baseline: fmt(ta.raw_bwrap.per_s, 1), ratio: fmt(ta.ratio),
      target: `>= ${T.throughputOverRaw.toFixed(2)}, no non-429 error`, result: verdict(ta.ratio >= T.throughputOverRaw && ta.service.errors === 0),
    });    if (ta.cpu_ms_per_execution !== null) {
      const c = ta.cpu_ms_per_execution;
      rows.push(info('#17   machine CPU ms per execution (all processes, user+sys), sessions vs raw bwrap, both on every core', fmt(c.service, 1), fmt(c.raw_bwrap, 1), fmt(c.raw_bwrap / c.service)));
    }
  }
  if (failed(p)) {
    rows.push(notMeasuredRow('#17 pandas script vs raw bwrap cold', `<= ${T.pandasOverCold.toFixed(2)}`, p.error));
  } else {
    rows.push({
      metric: `#17 pandas script p50 ms, pandas-exec session vs raw bwrap cold (${hitText(p.service)})`, service: fmt(p.service.all.p50), baseline: fmt(p.raw_cold.p50),
      ratio: fmt(p.service_over_raw_p50), target: `<= ${T.pandasOverCold.toFixed(2)}`, result: verdict(p.service_over_raw_p50 <= T.pandasOverCold && p.service.errors === 0),
    });
  }
  rows.push(...runCodeRows(k));
  if (failed(m)) rows.push(notMeasuredRow('#17 memory', '-', m.error));
  else rows.push(...memoryRows(m));
  const waits = [l, t, p].flatMap((x) => (failed(x) ? [] : [x.settle]));
  const present = waits.some((s) => s.metric_present);
  const n = waits.reduce((a, s) => a + s.waits, 0);
  const ms = waits.reduce((a, s) => a + s.waited_ms, 0);
  const capped = waits.reduce((a, s) => a + s.capped, 0);
  rows.push(info('#17   waits for warm refills before measured requests (mean ms, capped)', present ? `${n}: ${fmt(ms / Math.max(1, n))} ms, ${capped} capped` : 'no starting metric: none'));
  return rows;
}

function runCodeRows(k: RunCodeResult): Row[] {
  const T = ISSUE17_TARGETS;
  const freshHits = k.fresh_session_claims ? `, hits ${k.fresh_session_claims.hit}` : '';
  return [
    {
      metric: '#17 run_code 1+1 warm p50 ms, HTTP round trip', service: fmt(k.warm_round_trip.p50), baseline: '-', ratio: '-',
      target: `<= ${T.runCodeRoundTripMs} ms`, result: verdict(k.warm_round_trip.p50 <= T.runCodeRoundTripMs && k.errors === 0),
    },
    {
      metric: `#17 run_code warm vs cold execute (fresh session${freshHits}) p50 ms`, service: fmt(k.warm_round_trip.p50), baseline: fmt(k.fresh_session_execute.p50),
      ratio: `${fmt(k.speedup_vs_fresh_p50, 1)}x`, target: `>= ${T.runCodeUnderColdExecute}x faster`,
      result: verdict(k.speedup_vs_fresh_p50 >= T.runCodeUnderColdExecute && k.errors === 0 && (k.fresh_session_claims?.hit ?? 0) === 0),
    },
    info('#17   run_code warm vs execute in a session that executed before', fmt(k.warm_round_trip.p50), fmt(k.cold_execute.p50), `${fmt(k.speedup_p50, 1)}x`),
    info('#17   run_code warm p90 ms; server-side p50 (duration_ms); waits for a quiet service (total ms, capped)', `${fmt(k.warm_round_trip.p90)}; ${fmt(k.warm_reported.p50)}; ${k.quiet ? `${k.quiet.waits} waits (${k.quiet.waited_ms} ms, ${k.quiet.capped} capped)` : 'no waits'}`),
  ];
}

function memoryRows(m: WarmMemoryResult): Row[] {
  const mib = (kib: number) => fmt(kib / 1024, 1);
  const warm = m.after.warm_memory_bytes === null ? 'no metric' : `${fmt(m.after.warm_memory_bytes / 1024 / 1024, 1)} (${fmt(m.after.warm_idle ?? Number.NaN, 0)})`;
  return [
    info(
      `#17 memory, ${m.sessions} sessions each executed once${m.executions_failed > 0 ? ` (${m.executions_failed} failed)` : ''}: service RSS + descendants' PSS MiB (before the sessions)`,
      `${mib(m.after.service_rss_kib)} + ${mib(m.after.tree.pss_kib)} = ${fmt(m.total_mib, 1)}`,
      `${mib(m.before.service_rss_kib)} + ${mib(m.before.tree.pss_kib)}`, `+${fmt(m.added_per_session_mib)}/session`,
    ),
    info(
      `#17   descendants: processes, summed RSS MiB; warm metric MiB (idle)${m.settle_capped ? '; pool did not settle' : ''}`,
      `${m.after.tree.processes}, ${mib(m.after.tree.rss_kib)}; ${warm}`, `${m.before.tree.processes}, ${mib(m.before.tree.rss_kib)}`,
    ),
  ];
}

/** Alone: a service of its own (with the settings the full bench gives it), both floors, then run_code and these phases. */
async function main(): Promise<void> {
  const t0 = Date.now();
  const loadAtStart = os.loadavg().map((v) => Math.round(v * 100) / 100);
  const log = (message: string) => process.stderr.write(`[issue17 +${((Date.now() - t0) / 1000).toFixed(1)}s] ${message}\n`);
  const tmp = makeTempDir('bubble-bench-17-');
  const dirs = { service: path.join(tmp, 'service'), floor: path.join(tmp, 'floor') };
  for (const d of Object.values(dirs)) fs.mkdirSync(d, { mode: 0o711 });
  const env = cleanEnv({
    BUBBLE_SANDBOX_HOST: '127.0.0.1', BUBBLE_SANDBOX_PORT: String(await freePort()),
    BUBBLE_SANDBOX_WORKSPACE_DIR: dirs.service, BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR, ...ISSUE17_SERVICE_ENV,
  });
  const config = loadConfig(env, PROJECT_ROOT);
  const server = await startService(env);
  const onSignal = () => void server.stop().finally(() => {
    removeTempDir(tmp);
    process.exit(130);
  });
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const client = new BenchClient(server.baseUrl);
  const floor = await createFloor(config, dirs.floor);
  try {
    const warm = warmSizesFromEnv();
    log('run_code: warm interpreter vs execute');
    const runCode = await measureRunCode({ client, sizes: { n: warm.n * 2, warm }, servicePid: server.pid });
    const result = await measureIssue17({ client, floor, config, server, log, sizes: { warm }, floorDir: dirs.floor, serviceEnv: env });
    const load = { at_start: loadAtStart, at_end: os.loadavg().map((v) => Math.round(v * 100) / 100), cores: os.availableParallelism() };
    process.stdout.write(`load average ${load.at_start.join(' ')} at start, ${load.at_end.join(' ')} at end, ${load.cores} cores\n`);
    process.stdout.write(`${renderTable(issue17Rows(result, runCode))}\n${JSON.stringify({ sizes: warm, load_average: load, run_code: runCode, ...result }, null, 2)}\n`);
  } finally {
    client.close();
    await floor.close();
    await server.stop();
    removeTempDir(tmp);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`issue 17 bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
