// run_code on a warm interpreter against a cold execute of the same code, interleaved.
// Issue 8 target: warm `1 + 1` p50 ≤ 3 ms server-side, and at least 10× faster than an execute.
// Issue 17 target: warm p50 ≤ 3 ms round trip through HTTP, and at least 15× under a *cold*
// execute. With warm sandboxes an execute in a session that has executed before claims a
// pre-started sandbox, so the cold series runs each execute as the first one of a fresh session
// (created and deleted outside the timing; the claims counter, when present, confirms no hit).
// Each warm run_code waits first until no warm sandbox is being started (the execute before it
// would otherwise leave a refill running alongside). With the service's pid, the phase also
// starts only once the service's process tree is quiet, and waits so again after each
// fresh-session sample: the earlier phases of `npm run bench` leave background work behind (the
// workspace pool refilling after a hundred creates, unmounts of deleted sessions), and so does
// each fresh session here (its delete, the pool's refill after its claim). That work is the
// bench's doing, not part of a run_code call; the waits are counted in `quiet`.
// Alone (a service of its own, as phase-issue17.ts's main does before its other phases):
// `npx tsx bench/lib/phase-run-code.ts`; BENCH_SIZE=small for fewer rounds; BENCH_SERVICE_BIN=
// <checkout>/bin/bubble-sandbox.js measures another build's service (to compare two builds).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { warmSizesFromEnv, type BenchSizes } from './context.js';
import { BenchClient, createSession, deleteSession, executeIn } from './http.js';
import { cleanEnv, ENVIRONMENTS_DIR, freePort, makeTempDir, startService } from './server.js';
import { now, ratio, summarize, type Summary } from './stats.js';
import { addClaims, claimsBetween, newSettleStats, scrape, settleWarmPool, waitForQuietService, type Claims } from './warm-probe.js';

export interface RunCodeResult {
  /** HTTP round trip of run_code `1 + 1` on a warm interpreter. */
  warm_round_trip: Summary;
  /** duration_ms the service reports for it (server-side, the interpreter call itself). */
  warm_reported: Summary;
  /** HTTP round trip of execute {script: "1 + 1"} in a session that has executed before (a warm sandbox when the service has them). */
  cold_execute: Summary;
  speedup_p50: number;
  /** HTTP round trip of execute {script: "1 + 1"} as the first execution of a fresh session: no warm sandbox to claim. */
  fresh_session_execute: Summary;
  /** Claims during the fresh-session executes (expected: no hit); null without the metric. */
  fresh_session_claims: Claims | null;
  speedup_vs_fresh_p50: number;
  errors: number;
  /** Waits for a quiet service (see the header); null without the service's pid. */
  quiet: { waits: number; waited_ms: number; capped: number } | null;
}

export async function measureRunCode(ctx: { client: BenchClient; sizes: Pick<BenchSizes, 'n' | 'warm'>; servicePid?: number }): Promise<RunCodeResult> {
  const { client, sizes } = ctx;
  const quiet = ctx.servicePid === undefined ? null : { waits: 0, waited_ms: 0, capped: 0 };
  const settleService = async () => {
    if (ctx.servicePid === undefined || quiet === null) return;
    const w = await waitForQuietService(ctx.servicePid, { windowMs: 100, maxBusyShare: 0.1, capMs: 5000 });
    quiet.waits += 1;
    quiet.waited_ms += w.waited_ms;
    if (w.capped) quiet.capped += 1;
  };
  await createSession(client, 'bench-kernel');
  await createSession(client, 'bench-cold');
  const warm: number[] = [];
  const reported: number[] = [];
  const cold: number[] = [];
  let errors = 0;
  const settle = newSettleStats();
  const runCode = async () => {
    await settleWarmPool(client, settle);
    const t0 = now();
    const res = await client.json('POST', '/v1/sessions/bench-kernel/run_code', { code: '1 + 1' });
    const ms = now() - t0;
    const body = JSON.parse(res.text) as { status?: string; result?: string; duration_ms?: number };
    if (res.status !== 200 || body.result !== '2') errors++;
    return { ms, reported: body.duration_ms ?? NaN };
  };
  // A fresh-session sample pays a session create and delete (an unmount, ~90 ms) outside its
  // timing, so only the first rounds take one.
  const fresh: number[] = [];
  let freshClaims: Claims | null = null;
  const freshSample = async (i: number) => {
    const id = `bench-cold-fresh-${i}`;
    await createSession(client, id);
    try {
      const before = await settleWarmPool(client, settle);
      const t0 = now();
      const r = await executeIn(client, id, { script: '1 + 1' });
      const ms = now() - t0;
      freshClaims = addClaims(freshClaims, claimsBetween(before, await scrape(client)));
      if (r.status !== 200 || r.result?.status !== 'ok') errors++;
      else fresh.push(ms);
    } finally {
      await deleteSession(client, id);
    }
    await settleService();
  };
  for (let i = 0; i < 10; i++) await runCode(); // start and warm the interpreter
  await settleService();
  const n = Math.max(20, Math.floor(sizes.n / 2));
  for (let i = 0; i < n; i++) {
    const w = await runCode();
    warm.push(w.ms);
    reported.push(w.reported);
    await settleWarmPool(client, settle);
    const t0 = now();
    const r = await executeIn(client, 'bench-cold', { script: '1 + 1' });
    cold.push(now() - t0);
    if (r.status !== 200 || r.result?.status !== 'ok') errors++;
    if (i < sizes.warm.coldSessions) await freshSample(i);
  }
  const warmSummary = summarize(warm);
  const coldSummary = summarize(cold);
  const freshSummary = summarize(fresh);
  return {
    warm_round_trip: warmSummary,
    warm_reported: summarize(reported),
    cold_execute: coldSummary,
    speedup_p50: ratio(coldSummary.p50, warmSummary.p50),
    fresh_session_execute: freshSummary,
    fresh_session_claims: freshClaims,
    speedup_vs_fresh_p50: ratio(freshSummary.p50, warmSummary.p50),
    errors,
    quiet: quiet && { ...quiet, waited_ms: Math.round(quiet.waited_ms) },
  };
}

/** Alone: a service of its own, then this phase with the sizes phase-issue17.ts's main gives it. */
async function main(): Promise<void> {
  const load = () => os.loadavg().map((v) => Math.round(v * 100) / 100);
  const loadAtStart = load();
  const tmp = makeTempDir('bubble-bench-run-code-');
  try {
    const dir = path.join(tmp, 'service');
    fs.mkdirSync(dir, { mode: 0o711 });
    const server = await startService(cleanEnv({
      BUBBLE_SANDBOX_HOST: '127.0.0.1', BUBBLE_SANDBOX_PORT: String(await freePort()),
      BUBBLE_SANDBOX_WORKSPACE_DIR: dir, BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR,
      // A uid range apart from the default one, which a service of `npm run bench` or of the tests
      // may hold on the same host (BENCH_UID_BASE to pick another).
      BUBBLE_SANDBOX_SANDBOX_UID_BASE: process.env.BENCH_UID_BASE ?? '460000',
    }), process.env.BENCH_SERVICE_BIN ? { bin: process.env.BENCH_SERVICE_BIN } : {});
    const client = new BenchClient(server.baseUrl);
    try {
      const warm = warmSizesFromEnv();
      const r = await measureRunCode({ client, sizes: { n: warm.n * 2, warm }, servicePid: server.pid });
      const w = r.warm_round_trip;
      process.stdout.write(`${process.env.BENCH_SERVICE_BIN ?? 'this checkout'}: run_code 1+1 warm round trip p50 ${w.p50} p90 ${w.p90} min ${w.min} ms (n ${w.n}); server-side p50 ${r.warm_reported.p50} ms; `
        + `fresh-session execute p50 ${r.fresh_session_execute.p50} ms; errors ${r.errors}; load average ${loadAtStart.join(' ')} at start, ${load().join(' ')} at end\n`);
      process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    } finally {
      client.close();
      await server.stop();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`run_code bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
