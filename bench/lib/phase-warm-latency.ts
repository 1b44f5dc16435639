// Issue 17, latency against the bare hardened floor (floor.runRaw: bwrap spawned from the bench
// process with the service's namespaces, mounts, seccomp and uid; no wrapper, no cgroup):
//   - execute `print('x')` in a session, and one-shot POST /v1/execute, interleaved round by
//     round with raw bwrap (session, raw, one-shot, raw: the raw series has a sample beside each);
//   - a pandas script in a pandas-exec session against the same script spawned cold by raw bwrap
//     with that environment's python.
// Before every measured request, service or floor, the phase waits until no warm sandbox is
// being started (settleWarmPool), so neither series pays for the other's background refill.
// Each service request is classed hit/miss from the claims counter read around it.
import type { Floor } from './floor.js';
import { createSession, deleteSession, executeIn, type BenchClient } from './http.js';
import { PRINT_X, type WarmSizes } from './context.js';
import { now, ratio, summarize, type Summary } from './stats.js';
import { addClaims, claimsBetween, newSettleStats, scrape, settleWarmPool, type Claims, type SettleStats } from './warm-probe.js';

const PANDAS_SETTLE_CAP_MS = 10_000;

export const PANDAS_SCRIPT = "import pandas as pd; print(pd.DataFrame({'a':[1,2]}).a.sum())";

/** A service series: all samples, and the hit/miss split when the service counts claims. */
export interface ServiceSeries {
  all: Summary;
  /** Claims during the measured requests; null when the service has no warm-claims metric. */
  claims: Claims | null;
  hit_ratio: number | null;
  /** Samples whose request claimed a warm sandbox (empty without the metric). */
  hits: Summary;
  errors: number;
  error_samples: string[];
}

export interface WarmLatencyResult {
  execute: ServiceSeries;
  one_shot: ServiceSeries;
  raw_bwrap: Summary;
  raw_errors: number;
  execute_over_raw_p50: number;
  one_shot_over_raw_p50: number;
  settle: SettleStats;
}

export interface PandasResult {
  service: ServiceSeries;
  raw_cold: Summary;
  raw_errors: number;
  service_over_raw_p50: number;
  settle: SettleStats;
}

interface WarmInput { client: BenchClient; sizes: WarmSizes; log: (message: string) => void }

/** Collects one service series; `measure` does the request and says whether it answered right. */
function serviceSeries(capMs = 2000) {
  const all: number[] = [];
  const hits: number[] = [];
  const samples: string[] = [];
  let errors = 0;
  let total: Claims | null = null;
  return {
    async run(client: BenchClient, stats: SettleStats, record: boolean, measure: () => Promise<string | null>) {
      const before = await settleWarmPool(client, stats, capMs);
      const t0 = now();
      let problem: string | null;
      try {
        problem = await measure();
      } catch (err) {
        problem = err instanceof Error ? err.message : String(err);
      }
      const dt = now() - t0;
      const claimed = claimsBetween(before, await scrape(client));
      if (!record) return problem;
      if (problem !== null) {
        errors += 1;
        if (samples.length < 3) samples.push(problem.slice(0, 300));
        return problem;
      }
      all.push(dt);
      total = addClaims(total, claimed);
      if (claimed && claimed.hit > 0) hits.push(dt);
      return null;
    },
    result(): ServiceSeries {
      const c = total;
      return {
        all: summarize(all), claims: c, hit_ratio: c && c.hit + c.miss > 0 ? ratio(c.hit, c.hit + c.miss) : null,
        hits: summarize(hits), errors, error_samples: samples,
      };
    },
  };
}

/** Times raw bwrap runs after the same wait as the service's. */
function rawSeries(floor: Floor, workspace: number, capMs = 2000) {
  const times: number[] = [];
  let errors = 0;
  return {
    async run(client: BenchClient, stats: SettleStats, record: boolean, script: string, expected: string) {
      await settleWarmPool(client, stats, capMs);
      const t0 = now();
      let ok = false;
      try {
        ok = (await floor.runRaw(workspace, script)) === expected;
      } catch {
        ok = false;
      }
      const dt = now() - t0;
      if (!record) return ok;
      if (ok) times.push(dt);
      else errors += 1;
      return ok;
    },
    summary: () => summarize(times),
    errors: () => errors,
  };
}

function expectStdout(status: number, body: { status?: string; stdout?: string } | null, text: string, stdout: string): string | null {
  return status === 200 && body?.status === 'ok' && body.stdout === stdout ? null : `${status} ${text.slice(0, 300)}`;
}

export async function measureWarmLatency(input: WarmInput & { floor: Floor }): Promise<WarmLatencyResult> {
  const { client, floor, sizes, log } = input;
  const session = 'bench-warm-exec';
  await createSession(client, session);
  const settle = newSettleStats();
  const exec = serviceSeries();
  const oneShot = serviceSeries();
  const raw = rawSeries(floor, 10);
  const round = async (record: boolean) => {
    await exec.run(client, settle, record, async () => {
      const r = await executeIn(client, session, { script: PRINT_X });
      return expectStdout(r.status, r.result, r.text, 'x\n');
    });
    await raw.run(client, settle, record, PRINT_X, 'x\n');
    await oneShot.run(client, settle, record, async () => {
      const res = await client.json('POST', '/v1/execute', { script: PRINT_X });
      let body: { status?: string; stdout?: string } | null = null;
      try {
        body = JSON.parse(res.text) as typeof body;
      } catch {
        body = null;
      }
      return expectStdout(res.status, body, res.text, 'x\n');
    });
    await raw.run(client, settle, record, PRINT_X, 'x\n');
  };
  try {
    for (let i = 0; i < sizes.warmup; i++) await round(false);
    for (let i = 0; i < sizes.n; i++) {
      await round(true);
      if ((i + 1) % 25 === 0) log(`warm latency ${i + 1}/${sizes.n}`);
    }
  } finally {
    await deleteSession(client, session);
  }
  const e = exec.result();
  const o = oneShot.result();
  const r = raw.summary();
  return {
    execute: e, one_shot: o, raw_bwrap: r, raw_errors: raw.errors(),
    execute_over_raw_p50: ratio(e.all.p50, r.p50), one_shot_over_raw_p50: ratio(o.all.p50, r.p50), settle,
  };
}

/** `pandasFloor` is a floor created for the pandas-exec environment. */
export async function measurePandas(input: WarmInput & { pandasFloor: Floor }): Promise<PandasResult> {
  const { client, pandasFloor, sizes, log } = input;
  const session = 'bench-warm-pandas';
  await createSession(client, session, 'pandas-exec');
  const settle = newSettleStats();
  // A pandas-exec refill imports pandas, numpy and matplotlib: well over the default cap on a busy machine.
  const svc = serviceSeries(PANDAS_SETTLE_CAP_MS);
  const raw = rawSeries(pandasFloor, 20, PANDAS_SETTLE_CAP_MS);
  const round = async (record: boolean) => {
    await svc.run(client, settle, record, async () => {
      const r = await executeIn(client, session, { script: PANDAS_SCRIPT });
      return expectStdout(r.status, r.result, r.text, '3\n');
    });
    await raw.run(client, settle, record, PANDAS_SCRIPT, '3\n');
  };
  try {
    for (let i = 0; i < 2; i++) await round(false);
    for (let i = 0; i < sizes.pandasN; i++) await round(true);
    log(`pandas: ${sizes.pandasN} rounds`);
  } finally {
    await deleteSession(client, session);
  }
  const s = svc.result();
  const r = raw.summary();
  return { service: s, raw_cold: r, raw_errors: raw.errors(), service_over_raw_p50: ratio(s.all.p50, r.p50), settle };
}
