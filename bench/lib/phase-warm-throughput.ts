// Issue 17, throughput with 4 concurrent clients for a fixed time: executions of print('x') in 4
// sessions (one each: a session runs one execution at a time) against 4 concurrent raw bwrap runs
// (floor.runRaw, each in its own workspace and uid). Each side runs twice, alternated (service,
// raw, service, raw), and before each half the phase waits until no warm sandbox is being
// started, so a refill left over from the service's half does not slow the floor's.
//
// Both sides are bound by the CPU on this machine kind, so the phase also counts the machine's
// CPU time (user + system + interrupts, every process, from /proc/stat) per completed execution:
// a half's count runs from its start until the service's warm refills after it have settled (and
// 200 ms more for the kernel's deferred teardown on both sides), so the work an execution leaves
// behind is charged to it. The throughput ratio can be no better than the inverse ratio of these.
import fs from 'node:fs';
import type { Floor } from './floor.js';
import { createSession, deleteSession, executeIn, type BenchClient } from './http.js';
import { PRINT_X, type WarmSizes } from './context.js';
import { now, ratio, round, sleep } from './stats.js';
import { addClaims, claimsBetween, newSettleStats, scrape, settleWarmPool, type Claims, type SettleStats } from './warm-probe.js';

const CLIENTS = 4;

export interface TimedPool {
  completed: number;
  /** From the start until the last client's run in flight at the deadline finished. */
  elapsed_s: number;
  per_s: number;
  http_429: number;
  errors: number;
  error_samples: string[];
}

export interface WarmThroughputResult {
  clients: number;
  service: TimedPool;
  raw_bwrap: TimedPool;
  ratio: number;
  claims: Claims | null;
  settle: SettleStats;
  /** Machine CPU ms (all processes, user + system + interrupts) per completed execution; null where /proc/stat is unreadable. */
  cpu_ms_per_execution: { service: number; raw_bwrap: number } | null;
}

const TICK_MS = 10; // /proc/stat counts in USER_HZ (100 on Linux)

/** Busy CPU time of the whole machine in ms (user, nice, system, irq, softirq, steal), or null. */
export function machineBusyCpuMs(): number | null {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const busy = [0, 1, 2, 5, 6, 7].reduce((a, i) => a + (f[i] ?? NaN), 0);
    return Number.isFinite(busy) ? busy * TICK_MS : null;
  } catch {
    return null;
  }
}

type Outcome = 'ok' | { retryAfterMs: number } | { error: string };

/** CLIENTS loops, each starting runs (at least one) until `seconds` have passed; runs in flight then are waited for and counted. */
async function runFor(seconds: number, attempt: (client: number) => Promise<Outcome>) {
  let completed = 0;
  let http429 = 0;
  let errors = 0;
  const samples: string[] = [];
  const t0 = now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: CLIENTS }, async (_, k) => {
    do {
      let r: Outcome;
      try {
        r = await attempt(k);
      } catch (err) {
        r = { error: err instanceof Error ? err.message : String(err) };
      }
      if (r === 'ok') completed += 1;
      else if ('retryAfterMs' in r) {
        http429 += 1;
        await sleep(Math.min(r.retryAfterMs, 200));
      } else {
        errors += 1;
        if (samples.length < 3) samples.push(r.error.slice(0, 300));
      }
    } while (now() < deadline);
  }));
  return { completed, elapsed_s: (now() - t0) / 1000, http_429: http429, errors, error_samples: samples };
}

function merge(parts: Awaited<ReturnType<typeof runFor>>[]): TimedPool {
  const completed = parts.reduce((a, p) => a + p.completed, 0);
  const elapsed = parts.reduce((a, p) => a + p.elapsed_s, 0);
  return {
    completed, elapsed_s: round(elapsed), per_s: round(completed / elapsed, 2),
    http_429: parts.reduce((a, p) => a + p.http_429, 0), errors: parts.reduce((a, p) => a + p.errors, 0),
    error_samples: parts.flatMap((p) => p.error_samples).slice(0, 3),
  };
}

export async function measureWarmThroughput(input: { client: BenchClient; floor: Floor; sizes: WarmSizes; log: (m: string) => void }): Promise<WarmThroughputResult> {
  const { client, floor, sizes, log } = input;
  const ids = Array.from({ length: CLIENTS }, (_, k) => `bench-warm-tp-${k}`);
  for (const id of ids) await createSession(client, id);
  const settle = newSettleStats();
  const service = async (k: number): Promise<Outcome> => {
    const r = await executeIn(client, ids[k] as string, { script: PRINT_X });
    if (r.status === 200 && r.result?.status === 'ok' && r.result.stdout === 'x\n') return 'ok';
    if (r.status === 429) return { retryAfterMs: 1000 * (Number(r.headers['retry-after']) || 1) };
    return { error: `${r.status} ${r.text}` };
  };
  const raw = async (k: number): Promise<Outcome> => ((await floor.runRaw(30 + k, PRINT_X)) === 'x\n' ? 'ok' : { error: 'unexpected stdout' });
  try {
    // Warm-up: one run per client on each side (starts the sessions' warm sandboxes, if any).
    await runFor(0, service);
    await runFor(0, raw);
    const s: Awaited<ReturnType<typeof runFor>>[] = [];
    const f: Awaited<ReturnType<typeof runFor>>[] = [];
    let claims: Claims | null = null;
    const cpu = { service: 0, raw: 0, ok: true };
    const counted = (c0: number | null) => {
      const c1 = machineBusyCpuMs();
      if (c0 === null || c1 === null) cpu.ok = false;
      return c0 === null || c1 === null ? 0 : c1 - c0;
    };
    let before = await settleWarmPool(client, settle, 5000);
    for (let half = 0; half < 2; half++) {
      let c0 = machineBusyCpuMs();
      s.push(await runFor(sizes.throughputHalfSeconds, service));
      claims = addClaims(claims, claimsBetween(before, await scrape(client)));
      await settleWarmPool(client, settle, 5000);
      await sleep(200);
      cpu.service += counted(c0);
      c0 = machineBusyCpuMs();
      f.push(await runFor(sizes.throughputHalfSeconds, raw));
      await sleep(200);
      cpu.raw += counted(c0);
      before = await settleWarmPool(client, settle, 5000);
    }
    const svc = merge(s);
    const rawPool = merge(f);
    const cpuPerExecution = cpu.ok && svc.completed > 0 && rawPool.completed > 0
      ? { service: round(cpu.service / svc.completed, 1), raw_bwrap: round(cpu.raw / rawPool.completed, 1) } : null;
    log(`warm throughput ${CLIENTS} clients: service ${svc.per_s}/s, raw bwrap ${rawPool.per_s}/s; machine CPU ms per execution ${cpuPerExecution ? `${cpuPerExecution.service} / ${cpuPerExecution.raw_bwrap}` : 'unknown'}`);
    return { clients: CLIENTS, service: svc, raw_bwrap: rawPool, ratio: ratio(svc.per_s, rawPool.per_s), claims, settle, cpu_ms_per_execution: cpuPerExecution };
  } finally {
    for (const id of ids) await deleteSession(client, id);
  }
}
