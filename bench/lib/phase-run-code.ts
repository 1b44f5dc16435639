// run_code on a warm interpreter against a cold execute of the same code, interleaved.
// Issue target: warm `1 + 1` p50 ≤ 3 ms server-side, and at least 10× faster than cold execute.
import type { BenchContext } from './context.js';
import { createSession, executeIn } from './http.js';
import { now, ratio, summarize, type Summary } from './stats.js';

export interface RunCodeResult {
  /** HTTP round trip of run_code `1 + 1` on a warm interpreter. */
  warm_round_trip: Summary;
  /** duration_ms the service reports for it (server-side, the interpreter call itself). */
  warm_reported: Summary;
  /** HTTP round trip of execute {script: "1 + 1"} (a fresh sandbox each time). */
  cold_execute: Summary;
  speedup_p50: number;
  errors: number;
}

export async function measureRunCode(ctx: Pick<BenchContext, 'client' | 'sizes'>): Promise<RunCodeResult> {
  const { client, sizes } = ctx;
  await createSession(client, 'bench-kernel');
  await createSession(client, 'bench-cold');
  const warm: number[] = [];
  const reported: number[] = [];
  const cold: number[] = [];
  let errors = 0;
  const runCode = async () => {
    const t0 = now();
    const res = await client.json('POST', '/v1/sessions/bench-kernel/run_code', { code: '1 + 1' });
    const ms = now() - t0;
    const body = JSON.parse(res.text) as { status?: string; result?: string; duration_ms?: number };
    if (res.status !== 200 || body.result !== '2') errors++;
    return { ms, reported: body.duration_ms ?? NaN };
  };
  for (let i = 0; i < 10; i++) await runCode(); // start and warm the interpreter
  const n = Math.max(20, Math.floor(sizes.n / 2));
  for (let i = 0; i < n; i++) {
    const w = await runCode();
    warm.push(w.ms);
    reported.push(w.reported);
    const t0 = now();
    const r = await executeIn(client, 'bench-cold', { script: '1 + 1' });
    cold.push(now() - t0);
    if (r.status !== 200 || r.result?.status !== 'ok') errors++;
  }
  const warmSummary = summarize(warm);
  const coldSummary = summarize(cold);
  return {
    warm_round_trip: warmSummary,
    warm_reported: summarize(reported),
    cold_execute: coldSummary,
    speedup_p50: ratio(coldSummary.p50, warmSummary.p50),
    errors,
  };
}
