// Execute latency of print('x') through HTTP against the floors, interleaved run by run
// (service, floor, floor without cgroup, raw bwrap, bare python3, service, ...). With warm
// sandboxes (issue 17) the phase waits after the service's run until its refill has finished, so
// the floors do not share the machine with it; one /metrics scrape per round, which the service's
// CPU figure then includes (none without the metric).
import { executeIn, createSession } from './http.js';
import { PRINT_X, type BenchContext } from './context.js';
import { processCpuMs } from './server.js';
import { now, percentile, ratio, round, summarize, type Summary } from './stats.js';
import { newSettleStats, sample, scrape, settleWarmPool, WARM_METRICS, type SettleStats } from './warm-probe.js';

export interface LatencyResult {
  service: Summary;
  floor: Summary;
  floor_no_cgroup: Summary;
  raw_bwrap: Summary;
  bare_python: Summary;
  /** p50 of duration_ms as the service reports it (runner only, whole milliseconds). */
  service_reported_duration_p50_ms: number;
  /** user+system CPU of the server process per execution, over the measured series. */
  service_cpu_ms_per_execution: number;
  /** user+system CPU of the bench process during its floor runs (same work minus HTTP, sessions, snapshots). */
  floor_cpu_ms_per_execution: number;
  errors: Record<SeriesKey, number>;
  /** Waits for a warm refill before the floors' runs (issue 17); none while the service has no warm sandboxes. */
  warm_refill_waits: SettleStats;
  ratios: {
    service_over_floor_p50: number; service_over_floor_p90: number; service_over_floor_p99: number; floor_over_raw_p50: number;
    floor_over_floor_no_cgroup_p50: number; floor_no_cgroup_over_raw_p50: number; raw_over_bare_p50: number; service_over_raw_p50: number;
  };
}

type SeriesKey = 'service' | 'floor' | 'floor_no_cgroup' | 'raw_bwrap' | 'bare_python';

export async function measureLatency(ctx: BenchContext): Promise<LatencyResult> {
  const { client, floor, sizes } = ctx;
  const session = 'bench-latency';
  await createSession(client, session);
  const keys: SeriesKey[] = ['service', 'floor', 'floor_no_cgroup', 'raw_bwrap', 'bare_python'];
  const series = Object.fromEntries(keys.map((k) => [k, [] as number[]])) as Record<SeriesKey, number[]>;
  const errors = Object.fromEntries(keys.map((k) => [k, 0])) as Record<SeriesKey, number>;
  const reported: number[] = [];
  let floorCpuUs = 0;
  const settle = newSettleStats();
  const warmPool = sample(await scrape(client), WARM_METRICS.sandboxes) !== undefined;

  const timed = async (key: SeriesKey, record: boolean, fn: () => Promise<boolean>) => {
    if (key === 'floor' && warmPool) await settleWarmPool(client, settle);
    const cpu0 = process.cpuUsage();
    const t0 = now();
    let ok = false;
    try {
      ok = await fn();
    } catch {
      ok = false;
    }
    const dt = now() - t0;
    if (!record) return;
    if (key === 'floor') {
      const cpu = process.cpuUsage(cpu0);
      floorCpuUs += cpu.user + cpu.system;
    }
    if (ok) series[key].push(dt);
    else errors[key] += 1;
  };
  const one = async (record: boolean) => {
    await timed('service', record, async () => {
      const r = await executeIn(client, session, { script: PRINT_X });
      const ok = r.status === 200 && r.result?.status === 'ok' && r.result.stdout === 'x\n';
      const d = r.result?.duration_ms;
      if (record && ok && typeof d === 'number') reported.push(d);
      return ok;
    });
    await timed('floor', record, async () => {
      const r = await floor.runFloor(0, PRINT_X);
      return r.status === 'ok' && r.stdout === 'x\n';
    });
    await timed('floor_no_cgroup', record, async () => {
      const r = await floor.runFloorNoCgroup(0, PRINT_X);
      return r.status === 'ok' && r.stdout === 'x\n';
    });
    await timed('raw_bwrap', record, async () => (await floor.runRaw(0, PRINT_X)) === 'x\n');
    await timed('bare_python', record, async () => (await floor.runBare(PRINT_X)) === 'x\n');
  };

  for (let i = 0; i < sizes.warmup; i++) await one(false);
  if (keys.some((k) => errors[k] > 0)) throw new Error(`warm-up failed: ${JSON.stringify(errors)}`);
  const cpu0 = processCpuMs(ctx.server.pid);
  for (let i = 0; i < sizes.n; i++) {
    await one(true);
    if ((i + 1) % 50 === 0) ctx.log(`latency ${i + 1}/${sizes.n}`);
  }
  const cpuMs = processCpuMs(ctx.server.pid) - cpu0;

  const s = summarize(series.service);
  const f = summarize(series.floor);
  const fnc = summarize(series.floor_no_cgroup);
  const raw = summarize(series.raw_bwrap);
  const bare = summarize(series.bare_python);
  return {
    service: s,
    floor: f,
    floor_no_cgroup: fnc,
    raw_bwrap: raw,
    bare_python: bare,
    service_reported_duration_p50_ms: percentile(reported, 50),
    service_cpu_ms_per_execution: round(cpuMs / Math.max(1, series.service.length)),
    floor_cpu_ms_per_execution: round(floorCpuUs / 1000 / Math.max(1, series.floor.length)),
    errors,
    warm_refill_waits: settle,
    ratios: {
      service_over_floor_p50: ratio(s.p50, f.p50),
      service_over_floor_p90: ratio(s.p90, f.p90),
      service_over_floor_p99: ratio(s.p99, f.p99),
      floor_over_raw_p50: ratio(f.p50, raw.p50),
      floor_over_floor_no_cgroup_p50: ratio(f.p50, fnc.p50),
      floor_no_cgroup_over_raw_p50: ratio(fnc.p50, raw.p50),
      raw_over_bare_p50: ratio(raw.p50, bare.p50),
      service_over_raw_p50: ratio(s.p50, raw.p50),
    },
  };
}
