// Issue 17, memory for the documented budget: the service plus its idle warm sandboxes with 50
// sessions. Creates the sessions, runs one execution in each (after which each session has its
// warm sandbox, once the service builds them), waits for the warm pool to settle, then reads
//   - the service's RSS (/proc/<pid>/status),
//   - bubble_sandbox_warm_memory_bytes and the idle count, when the service has them,
//   - independently of the service's own accounting: the summed RSS and PSS of every process
//     below the service (sandboxes, helpers, interpreters), from /proc,
// and the same before the sessions existed, so the sessions' share is the difference.
// The sessions are deleted whatever happens.
import { createSession, deleteSession, executeIn, type BenchClient } from './http.js';
import { PRINT_X, type WarmSizes } from './context.js';
import { procStatusKiB } from './server.js';
import { now, round, sleep } from './stats.js';
import { sample, scrape, treeMemory, WARM_METRICS, type TreeMemory } from './warm-probe.js';

export interface MemorySnapshot {
  service_rss_kib: number;
  tree: TreeMemory;
  /** bubble_sandbox_warm_memory_bytes; null without the metric. */
  warm_memory_bytes: number | null;
  warm_idle: number | null;
  warm_starting: number | null;
}

export interface WarmMemoryResult {
  sessions: number;
  executions_failed: number;
  before: MemorySnapshot;
  after: MemorySnapshot;
  /** Seconds waited for the pool to settle (starting 0 and idle unchanged for a second; capped). */
  settle_s: number;
  settle_capped: boolean;
  /** Service RSS + PSS of all its descendants, with the sessions and their warm sandboxes, in MiB. */
  total_mib: number;
  /** The same minus before the sessions existed, per session, in MiB. */
  added_per_session_mib: number;
}

async function snapshot(client: BenchClient, servicePid: number): Promise<MemorySnapshot> {
  const s = await scrape(client);
  return {
    service_rss_kib: procStatusKiB(servicePid, 'VmRSS'),
    tree: treeMemory(servicePid),
    warm_memory_bytes: sample(s, WARM_METRICS.memory) ?? null,
    warm_idle: sample(s, WARM_METRICS.sandboxes, { state: 'idle' }) ?? null,
    warm_starting: sample(s, WARM_METRICS.sandboxes, { state: 'starting' }) ?? null,
  };
}

/** Until nothing is starting and the idle count held still for a second; without the metrics, a second. */
async function settle(client: BenchClient, capMs: number): Promise<{ seconds: number; capped: boolean }> {
  const t0 = now();
  let stableSince = now();
  let lastIdle: number | undefined;
  for (;;) {
    const s = await scrape(client);
    const starting = sample(s, WARM_METRICS.sandboxes, { state: 'starting' });
    const idle = sample(s, WARM_METRICS.sandboxes, { state: 'idle' });
    if (idle !== lastIdle || (starting ?? 0) > 0) stableSince = now();
    lastIdle = idle;
    if (now() - stableSince >= 1000) return { seconds: round((now() - t0) / 1000, 1), capped: false };
    if (now() - t0 > capMs) return { seconds: round((now() - t0) / 1000, 1), capped: true };
    await sleep(100);
  }
}

export async function measureWarmMemory(input: { client: BenchClient; servicePid: number; sizes: WarmSizes; log: (m: string) => void }): Promise<WarmMemoryResult> {
  const { client, servicePid, sizes, log } = input;
  await settle(client, 10_000);
  const before = await snapshot(client, servicePid);
  const ids = Array.from({ length: sizes.memorySessions }, (_, k) => `bench-warm-mem-${k}`);
  const created: string[] = [];
  let failed = 0;
  try {
    for (const id of ids) {
      await createSession(client, id);
      created.push(id);
      const r = await executeIn(client, id, { script: PRINT_X });
      if (!(r.status === 200 && r.result?.stdout === 'x\n')) failed += 1;
    }
    const waited = await settle(client, 20_000);
    const after = await snapshot(client, servicePid);
    const total = (kib: MemorySnapshot) => kib.service_rss_kib + kib.tree.pss_kib;
    log(`memory with ${ids.length} sessions: service ${(after.service_rss_kib / 1024).toFixed(1)} MiB + descendants PSS ${(after.tree.pss_kib / 1024).toFixed(1)} MiB (${after.tree.processes} processes)`);
    return {
      sessions: ids.length, executions_failed: failed, before, after, settle_s: waited.seconds, settle_capped: waited.capped,
      total_mib: round(total(after) / 1024, 1),
      added_per_session_mib: round((total(after) - total(before)) / 1024 / ids.length, 2),
    };
  } finally {
    for (const id of created) await deleteSession(client, id);
  }
}
