// Root filesystems (issue 14): session create with writable_root p50 (target under 10 ms: the
// root layer is a pool entry claimed by rename; the overlay is mounted at the first sandbox, which
// is measured apart), and execute latency in a rootfs environment against a venv environment,
// interleaved request by request (target within 10%). The rootfs is BENCH_ROOTFS_ARCHIVE when
// set (e.g. the output of scripts/build-rootfs.sh), else the tests' tiny one made from the host's
// own binaries. Runs alone with `npx tsx bench/lib/phase-rootfs.ts` (as root; `npm run build` first).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { deleteSession, executeIn, type BenchClient } from './http.js';
import { notMeasuredRow, runIfMain, type PhaseInput } from './phase-kit.js';
import { fmt, verdict, type Row } from './report.js';
import { cleanEnv, makeTempDir, PROJECT_ROOT } from './server.js';
import { now, ratio, round, summarize, type Summary } from './stats.js';
import { newSettleStats, settleWarmPool } from './warm-probe.js';

export const ROOTFS_TARGETS = { createP50Ms: 10, executeRatio: 1.1 } as const;
const ROOTFS_NAME = 'bench-rootfs';

export type RootfsResult =
  | { error: null; n: number; archive: string; create_writable_root: Summary; first_execute_writable_root: Summary; execute_rootfs: Summary; execute_venv: Summary; execute_writable_root: Summary; execute_ratio: number }
  | { error: string };

function importRootfs(serviceWorkspaceDir: string): string {
  let archive = process.env.BENCH_ROOTFS_ARCHIVE;
  const tmp = makeTempDir('bench-rootfs-');
  try {
    if (archive === undefined) {
      archive = path.join(tmp, 'mini.tar');
      const made = spawnSync('bash', [path.join(PROJECT_ROOT, 'test/fixtures/rootfs/make-mini-rootfs.sh'), archive], { encoding: 'utf8' });
      if (made.status !== 0) throw new Error(`making the tiny rootfs: ${made.stderr.slice(0, 200)}`);
    }
    const r = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'bin/bubble-sandbox.js'), 'rootfs', 'import', ROOTFS_NAME, archive], {
      encoding: 'utf8', env: cleanEnv({ BUBBLE_SANDBOX_WORKSPACE_DIR: serviceWorkspaceDir }), timeout: 600_000,
    });
    if (r.status !== 0) throw new Error(`rootfs import: ${r.stderr.slice(0, 200)}`);
    return process.env.BENCH_ROOTFS_ARCHIVE ?? 'tiny (host binaries)';
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function create(client: BenchClient, id: string, body: Record<string, unknown>): Promise<number> {
  const t0 = now();
  const res = await client.json('POST', '/v1/sessions', { session_id: id, ...body });
  const dt = now() - t0;
  if (res.status !== 201) throw new Error(`creating ${id}: ${res.status} ${res.text.slice(0, 200)}`);
  return dt;
}

/**
 * Every execute of this phase spawns cold: the limits alternate between two values below the
 * configured ones, so the warm sandbox built after one execution never matches the next (warm
 * sandboxes need Python in the environment, which the tiny rootfs lacks: against a warm venv the
 * ratio would measure warm against cold, not the cost of a root filesystem). The warm figures are
 * the issue-17 rows.
 */
let alternate = 0;
const settle = newSettleStats();
async function timedExecute(client: BenchClient, id: string): Promise<number> {
  alternate += 1;
  // The venv execute before leaves a warm sandbox (or a fork server) being built for its other
  // limits: measured alongside it, the next execute would time the machine shared with that
  // refill, not the cost of a root filesystem. As every issue-17 request does, wait for it first.
  await settleWarmPool(client, settle);
  const t0 = now();
  const r = await executeIn(client, id, { command: 'echo hi', limits: { pids: 64 + (alternate % 2) } });
  const dt = now() - t0;
  if (r.status !== 200 || r.result?.stdout !== 'hi\n') throw new Error(`execute in ${id}: ${r.status} ${r.text.slice(0, 200)}`);
  return dt;
}

export async function measureRootfs(input: PhaseInput & { serviceWorkspaceDir: string }): Promise<RootfsResult> {
  const { client, n, warmup, log } = input;
  try {
    const archive = importRootfs(input.serviceWorkspaceDir);
    // Creates: one at a time, each deleted before the next (as the sessions phase does); the
    // first execution of each (the overlay mount) is timed on its own.
    const creates: number[] = [];
    const firsts: number[] = [];
    const createCount = Math.min(n, 50);
    log(`rootfs: ${createCount} creates with writable_root, ${n} executes each in rootfs, venv and writable-root sessions, interleaved`);
    for (let i = -3; i < createCount; i++) {
      const id = `bench-wr-${i + 3}`;
      const c = await create(client, id, { environment: ROOTFS_NAME, writable_root: true });
      const f = await timedExecute(client, id);
      await deleteSession(client, id);
      if (i < 0) continue;
      creates.push(c);
      firsts.push(f);
    }
    const sessions = { rootfs: 'bench-rootfs-ro', venv: 'bench-venv', writable: 'bench-rootfs-rw' };
    await create(client, sessions.rootfs, { environment: ROOTFS_NAME });
    await create(client, sessions.venv, { environment: 'bare' });
    await create(client, sessions.writable, { environment: ROOTFS_NAME, writable_root: true });
    try {
      const series = { rootfs: [] as number[], venv: [] as number[], writable: [] as number[] };
      for (let i = -warmup; i < n; i++) {
        const r = await timedExecute(client, sessions.rootfs);
        const v = await timedExecute(client, sessions.venv);
        const w = await timedExecute(client, sessions.writable);
        if (i < 0) continue;
        series.rootfs.push(r);
        series.venv.push(v);
        series.writable.push(w);
      }
      const rootfs = summarize(series.rootfs);
      const venv = summarize(series.venv);
      return {
        error: null, n, archive, create_writable_root: summarize(creates), first_execute_writable_root: summarize(firsts),
        execute_rootfs: rootfs, execute_venv: venv, execute_writable_root: summarize(series.writable), execute_ratio: round(ratio(rootfs.p50, venv.p50)),
      };
    } finally {
      for (const id of Object.values(sessions)) await deleteSession(client, id).catch(() => undefined);
    }
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

export function rootfsRows(r: RootfsResult): Row[] {
  if (r.error !== null) {
    return [notMeasuredRow('rootfs', `create < ${ROOTFS_TARGETS.createP50Ms} ms, execute within 10%`, r.error)];
  }
  return [
    {
      metric: 'session create with writable_root p50 ms', service: fmt(r.create_writable_root.p50), baseline: '-', ratio: '-',
      target: `< ${ROOTFS_TARGETS.createP50Ms} ms`, result: verdict(r.create_writable_root.p50 < ROOTFS_TARGETS.createP50Ms),
    },
    { metric: '  its first execute (mounts the overlay) p50 ms', service: fmt(r.first_execute_writable_root.p50), baseline: '-', ratio: '-', target: '-', result: 'info' },
    {
      metric: 'execute p50 ms, cold, rootfs env (vs venv env "bare")', service: fmt(r.execute_rootfs.p50), baseline: fmt(r.execute_venv.p50), ratio: fmt(r.execute_ratio),
      target: `<= ${ROOTFS_TARGETS.executeRatio}`, result: verdict(r.execute_ratio <= ROOTFS_TARGETS.executeRatio),
    },
    { metric: '  execute p50 ms, writable-root session (vs venv)', service: fmt(r.execute_writable_root.p50), baseline: fmt(r.execute_venv.p50), ratio: fmt(ratio(r.execute_writable_root.p50, r.execute_venv.p50)), target: '-', result: 'info' },
  ];
}

runIfMain(import.meta.url, 'rootfs', measureRootfs, rootfsRows);
