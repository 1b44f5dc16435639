// Throughput with 1, 4 and 16 concurrent clients (one session each: a session runs one
// execution at a time) against the floor with the same number of concurrent runner.run calls.
// Each side runs in two halves, alternated (service, floor, service, floor), so drift in the
// machine's load hits both. Before each floor half the phase waits until no warm sandbox is
// being started (issue 17), so the service's background refills do not slow the floor.
import { createSession, deleteSession, executeIn } from './http.js';
import { PRINT_X, type BenchContext } from './context.js';
import { now, ratio, round, sleep } from './stats.js';
import { newSettleStats, settleWarmPool } from './warm-probe.js';

export interface PoolOutcome {
  completed: number;
  elapsed_s: number;
  executions_per_s: number;
  /** 429 answers (retried after a short pause, not counted as completed). */
  http_429: number;
  /** Anything else that was not a successful print('x'). */
  errors: number;
  error_samples: string[];
}

export interface ThroughputLevel {
  clients: number;
  service: PoolOutcome;
  floor: PoolOutcome;
  ratio: number;
}

type Attempt = { kind: 'ok' } | { kind: '429'; retryAfterMs: number } | { kind: 'error'; detail: string };

async function runPool(clients: number, total: number, attempt: (client: number) => Promise<Attempt>): Promise<Omit<PoolOutcome, 'executions_per_s'>> {
  let started = 0;
  let completed = 0;
  let http429 = 0;
  let errors = 0;
  const samples: string[] = [];
  const t0 = now();
  await Promise.all(Array.from({ length: clients }, async (_, k) => {
    while (started < total) {
      started += 1;
      let r: Attempt;
      try {
        r = await attempt(k);
      } catch (err) {
        r = { kind: 'error', detail: err instanceof Error ? err.message : String(err) };
      }
      if (r.kind === 'ok') completed += 1;
      else if (r.kind === '429') {
        http429 += 1;
        started -= 1; // a documented refusal: try that execution again
        await sleep(Math.min(r.retryAfterMs, 200));
      } else {
        errors += 1;
        if (samples.length < 3) samples.push(r.detail.slice(0, 300));
      }
    }
  }));
  return { completed, elapsed_s: (now() - t0) / 1000, http_429: http429, errors, error_samples: samples };
}

function merge(parts: Omit<PoolOutcome, 'executions_per_s'>[]): PoolOutcome {
  const completed = parts.reduce((a, p) => a + p.completed, 0);
  const elapsed = parts.reduce((a, p) => a + p.elapsed_s, 0);
  return {
    completed,
    elapsed_s: round(elapsed),
    executions_per_s: round(completed / elapsed, 2),
    http_429: parts.reduce((a, p) => a + p.http_429, 0),
    errors: parts.reduce((a, p) => a + p.errors, 0),
    error_samples: parts.flatMap((p) => p.error_samples).slice(0, 3),
  };
}

export async function measureThroughput(ctx: BenchContext): Promise<ThroughputLevel[]> {
  const { client, floor, sizes } = ctx;
  const levels: ThroughputLevel[] = [];
  for (const clients of sizes.clientCounts) {
    const ids = Array.from({ length: clients }, (_, k) => `bench-tp-${clients}-${k}`);
    for (const id of ids) await createSession(client, id);
    const serviceAttempt = async (k: number): Promise<Attempt> => {
      const r = await executeIn(client, ids[k] as string, { script: PRINT_X });
      if (r.status === 200 && r.result?.status === 'ok' && r.result.stdout === 'x\n') return { kind: 'ok' };
      if (r.status === 429) return { kind: '429', retryAfterMs: 1000 * (Number(r.headers['retry-after']) || 1) };
      return { kind: 'error', detail: `${r.status} ${r.text}` };
    };
    const floorAttempt = async (k: number): Promise<Attempt> => {
      const r = await floor.runFloor(100 + k, PRINT_X);
      return r.status === 'ok' && r.stdout === 'x\n' ? { kind: 'ok' } : { kind: 'error', detail: `${r.status} ${r.stderr}` };
    };
    // A short warm-up at this parallelism for both, then the alternated halves.
    await runPool(clients, clients, serviceAttempt);
    await settleWarmPool(client, newSettleStats(), 5000);
    await runPool(clients, clients, floorAttempt);
    const half = Math.ceil(sizes.throughputN / 2);
    const settle = newSettleStats();
    const s1 = await runPool(clients, half, serviceAttempt);
    await settleWarmPool(client, settle, 5000);
    const f1 = await runPool(clients, half, floorAttempt);
    const s2 = await runPool(clients, sizes.throughputN - half, serviceAttempt);
    await settleWarmPool(client, settle, 5000);
    const f2 = await runPool(clients, sizes.throughputN - half, floorAttempt);
    const service = merge([s1, s2]);
    const floorOutcome = merge([f1, f2]);
    levels.push({ clients, service, floor: floorOutcome, ratio: ratio(service.executions_per_s, floorOutcome.executions_per_s) });
    ctx.log(`throughput ${clients} clients: service ${service.executions_per_s}/s, floor ${floorOutcome.executions_per_s}/s`);
    for (const id of ids) await deleteSession(client, id);
  }
  return levels;
}
