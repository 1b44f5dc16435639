// The changed-files report with 10,000 files in the workspace, and the service's RSS while a
// script prints 100 MB.
import fs from 'node:fs';
import path from 'node:path';
import { ChangeTracker } from '../../src/workspace/change-tracker.js';
import { SNAPSHOT_MAX_ENTRIES } from '../../src/sessions/executor.js';
import { SessionChanges } from '../../src/sessions/session-changes.js';
import { storeLayout, workspaceOf } from '../../src/sessions/session-store.js';
import { diffSnapshots, snapshotWorkspace } from '../../src/workspace/workspace-fs.js';
import { createSession, deleteSession, executeIn } from './http.js';
import { PRINT_X, type BenchContext } from './context.js';
import { procStatusKiB, resetPeakRss } from './server.js';
import { now, percentile, ratio, round, sleep, summarize, type Summary } from './stats.js';

export interface ChangedFilesResult {
  files: number;
  /** print('x') in the session with the files, and in an empty one (interleaved). */
  with_files: Summary;
  empty: Summary;
  /** with_files p50 - empty p50: what the report costs an execution through the service. */
  report_cost_p50_ms: number;
  /** How the service learnt the changes (its /readyz change_tracking.mode). */
  service_tracking: string;
  /** snapshotWorkspace + diffSnapshots run directly on that workspace: what a scan costs. */
  direct: { snapshot_p50_ms: number; diff_p50_ms: number; before_after_diff_p50_ms: number; reps: number };
  /**
   * The same workspace through SessionChanges with a change tracker of the bench's own (before +
   * after of one execution): nothing changed, and one file written. Null when fanotify is
   * unavailable here.
   */
  tracked: { unchanged_p50_ms: number; one_file_p50_ms: number; reps: number } | null;
}

export async function measureChangedFiles(ctx: BenchContext): Promise<ChangedFilesResult> {
  const { client, sizes } = ctx;
  const many = 'bench-many-files';
  const empty = 'bench-empty';
  await createSession(client, many);
  await createSession(client, empty);
  const writer = `import os\nos.makedirs('many', exist_ok=True)\nfor i in range(${sizes.manyFiles}):\n    with open(f'many/f{i:05d}.txt', 'w') as f:\n        f.write('x')\nprint('x')`;
  const made = await executeIn(client, many, { script: writer, timeout_seconds: 120 });
  const createdCount = made.result?.files?.created?.length ?? 0;
  if (made.status !== 200 || createdCount !== sizes.manyFiles) {
    throw new Error(`writing ${sizes.manyFiles} files: ${made.status}, ${createdCount} reported created: ${made.text.slice(0, 300)}`);
  }
  const withFiles: number[] = [];
  const without: number[] = [];
  const time = async (session: string, into: number[] | null) => {
    const t0 = now();
    const r = await executeIn(client, session, { script: PRINT_X });
    if (r.status !== 200 || r.result?.status !== 'ok') throw new Error(`execute in ${session}: ${r.status} ${r.text.slice(0, 300)}`);
    into?.push(now() - t0);
  };
  for (let i = 0; i < 3; i++) {
    await time(many, null);
    await time(empty, null);
  }
  for (let i = 0; i < sizes.manyFilesReps; i++) {
    await time(many, withFiles);
    await time(empty, without);
  }

  const dir = workspaceOf(storeLayout(ctx.serviceWorkspaceDir), many);
  const snap: number[] = [];
  const diff: number[] = [];
  const total: number[] = [];
  for (let i = -2; i < sizes.snapshotReps; i++) {
    const t0 = now();
    const before = await snapshotWorkspace(dir, { maxEntries: SNAPSHOT_MAX_ENTRIES });
    const t1 = now();
    const after = await snapshotWorkspace(dir, { maxEntries: SNAPSHOT_MAX_ENTRIES });
    const t2 = now();
    const d = diffSnapshots(before, after);
    const t3 = now();
    if (before.size !== sizes.manyFiles || d.created.length + d.modified.length + d.deleted.length !== 0) {
      throw new Error(`unexpected snapshot: ${before.size} files, ${JSON.stringify({ c: d.created.length, m: d.modified.length, d: d.deleted.length })}`);
    }
    if (i < 0) continue;
    snap.push(t1 - t0, t2 - t1);
    diff.push(t3 - t2);
    total.push(t3 - t0);
  }
  const tracked = await measureTracked(dir, sizes.snapshotReps);
  await deleteSession(client, many);
  await deleteSession(client, empty);
  const w = summarize(withFiles);
  const e = summarize(without);
  return {
    files: sizes.manyFiles,
    with_files: w,
    empty: e,
    report_cost_p50_ms: round(w.p50 - e.p50),
    service_tracking: (ctx.server.readyChecks.change_tracking as { mode?: string } | undefined)?.mode ?? 'unknown',
    tracked,
    direct: {
      snapshot_p50_ms: round(percentile(snap, 50)),
      diff_p50_ms: round(percentile(diff, 50)),
      before_after_diff_p50_ms: round(percentile(total, 50)),
      reps: sizes.snapshotReps,
    },
  };
}

async function measureTracked(dir: string, reps: number): Promise<ChangedFilesResult['tracked']> {
  const { tracker } = await ChangeTracker.start({ logger: { warn: () => undefined, error: () => undefined } });
  if (!tracker) return null;
  try {
    const changes = new SessionChanges({ warn: () => undefined });
    changes.useTracker(tracker);
    // One execution's report: its "before" and its "after", without the act in between.
    const report = async (act: () => void) => {
      const source = changes.forSession('bench', dir, () => true);
      const t0 = now();
      const before = await source.before();
      const t1 = now();
      act();
      const t2 = now();
      await source.after(before);
      return t1 - t0 + (now() - t2);
    };
    await report(() => undefined); // the first "before" is a full scan
    if (!changes.isTracked('bench')) return null;
    const unchanged: number[] = [];
    const oneFile: number[] = [];
    for (let i = 0; i < reps; i++) {
      unchanged.push(await report(() => undefined));
      oneFile.push(await report(() => fs.writeFileSync(path.join(dir, 'many', 'f00042.txt'), String(i))));
    }
    return { unchanged_p50_ms: round(percentile(unchanged, 50)), one_file_p50_ms: round(percentile(oneFile, 50)), reps };
  } finally {
    await tracker.close();
  }
}

export interface RssResult {
  idle_kib: number;
  peak_kib: number;
  /** VmHWM after resetting it just before the print: catches a peak between two samples. */
  hwm_kib: number | null;
  ratio: number;
  samples: number;
  print_ms: number;
  print_status: string;
  stdout_chars: number;
}

const PRINT_100MB = "import sys\nfor _ in range(100): sys.stdout.write('x'*1_000_000)";

export async function measureRss(ctx: BenchContext): Promise<RssResult> {
  const { client, server } = ctx;
  const session = 'bench-rss';
  await createSession(client, session);
  await sleep(500);
  const idleSamples: number[] = [];
  for (let i = 0; i < 25; i++) {
    idleSamples.push(procStatusKiB(server.pid, 'VmRSS'));
    await sleep(20);
  }
  const idle = percentile(idleSamples, 50);
  const hwmReset = resetPeakRss(server.pid);
  let peak = 0;
  let samples = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, procStatusKiB(server.pid, 'VmRSS'));
      samples += 1;
      await sleep(20);
    }
  })();
  const t0 = now();
  const r = await executeIn(client, session, { script: PRINT_100MB, timeout_seconds: 120 }).finally(() => {
    sampling = false;
  });
  const printMs = now() - t0;
  await sampler;
  const hwm = hwmReset ? procStatusKiB(server.pid, 'VmHWM') : null;
  await deleteSession(client, session);
  const top = Math.max(peak, hwm ?? 0);
  return {
    idle_kib: idle, peak_kib: peak, hwm_kib: hwm, ratio: ratio(top, idle), samples,
    print_ms: round(printMs), print_status: `${r.status} ${r.result?.status ?? ''}`.trim(), stdout_chars: r.result?.stdout?.length ?? 0,
  };
}
