// Change tracking against the truth: every report the tracker gives must equal the diff of two
// full scans, for creates, writes, renames of whole trees, deletes, links, hard links, names the
// API cannot address and changes made from inside a real sandbox. Real fanotify, real loop-mounted
// quota images: run as root. Skipped outside CI only when quotas cannot work here; in CI never.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ChangeTracker } from '../../src/workspace/change-tracker.js';
import { SessionChanges } from '../../src/sessions/session-changes.js';
import { diffSnapshots, snapshotWorkspace, type WorkspaceSnapshot } from '../../src/workspace/workspace-fs.js';
import { createQuotaWorkspace, detectQuotaSupport, removeQuotaWorkspace } from '../../src/workspace/workspace-quota.js';
import { runInBwrap } from '../helpers/mounts.js';
import { sleep } from '../helpers/host-env.js';

const MiB = 1024 * 1024;
const UID = 201_777;
const quota = await detectQuotaSupport();
const skip = !quota.available && !process.env.CI;
const silent = { warn: () => undefined, error: () => undefined };

let base = '';
let counter = 0;
const made: { dir: string; ws: string }[] = [];

async function quotaWorkspace(): Promise<string> {
  const dir = path.join(base, `s${++counter}`);
  const ws = path.join(dir, 'workspace');
  fs.mkdirSync(ws, { recursive: true });
  fs.chmodSync(dir, 0o711);
  await createQuotaWorkspace(dir, ws, 64 * MiB, { uid: UID, gid: UID });
  made.push({ dir, ws });
  return ws;
}

/** A SessionChanges over `tracker` that counts the full scans it falls back to. */
function changesWith(tracker: ChangeTracker | null, opts: { maxEntries?: number } = {}) {
  const counts = { scans: 0 };
  const changes = new SessionChanges(silent, {
    ...opts,
    scan: async (dir, o) => {
      counts.scans += 1;
      return snapshotWorkspace(dir, o);
    },
  });
  changes.useTracker(tracker);
  return { changes, counts };
}

/** One execution's worth: what the ChangeSource reports for `act`, and what two scans say. */
async function round(changes: SessionChanges, id: string, ws: string, act: () => void | Promise<void>) {
  const source = changes.forSession(id, ws, () => true);
  const before = await source.before();
  const truthBefore = await snapshotWorkspace(ws);
  await act();
  const truthAfter = await snapshotWorkspace(ws);
  const reported = await source.after(before);
  return { reported: pick(reported), truth: pick(diffSnapshots(truthBefore, truthAfter)), before };
}

const pick = (d: { created: string[]; modified: string[]; deleted: string[] }) => ({ created: d.created, modified: d.modified, deleted: d.deleted });
const entries = (s: WorkspaceSnapshot) => [...s.entries()].sort(([a], [b]) => (a < b ? -1 : 1));

describe.skipIf(skip)('change tracking (fanotify on quota images)', () => {
  let tracker: ChangeTracker;

  beforeAll(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-changes-'));
    fs.chmodSync(base, 0o711);
    const started = await ChangeTracker.start({ logger: silent });
    if (!started.tracker) throw new Error(`change tracker unavailable: ${started.reason}`);
    tracker = started.tracker;
  });

  afterAll(async () => {
    await tracker.close();
    for (const { dir, ws } of made) await removeQuotaWorkspace(dir, ws).catch(() => undefined);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('reports a created file from the kernel, without scanning after the first execution', async () => {
    const ws = await quotaWorkspace();
    const { changes, counts } = changesWith(tracker);
    fs.writeFileSync(path.join(ws, 'data.csv'), 'a,b\n');
    const first = await round(changes, 's1', ws, () => fs.writeFileSync(path.join(ws, 'out.txt'), 'x'));
    expect(first.reported).toEqual({ created: ['out.txt'], modified: [], deleted: [] });
    expect(changes.isTracked('s1')).toBe(true);
    expect(counts.scans).toBe(1); // the first "before"; "after" came from the tracker
    const second = await round(changes, 's1', ws, () => fs.appendFileSync(path.join(ws, 'data.csv'), '1,2\n'));
    expect(second.reported).toEqual({ created: [], modified: ['data.csv'], deleted: [] });
    const idle = await round(changes, 's1', ws, () => undefined);
    expect(idle.reported).toEqual({ created: [], modified: [], deleted: [] });
    expect(counts.scans).toBe(1);
  });

  it('equals two full scans over a long run of mixed operations, and keeps a snapshot equal to a scan', async () => {
    const ws = await quotaWorkspace();
    const { changes, counts } = changesWith(tracker);
    const p = (...parts: string[]) => path.join(ws, ...parts);
    const steps: (() => void)[] = [
      () => {
        fs.mkdirSync(p('a', 'b', 'c'), { recursive: true });
        for (let i = 0; i < 50; i++) fs.writeFileSync(p('a', 'b', 'c', `f${i}.txt`), String(i));
        fs.writeFileSync(p('a', 'top.txt'), 'top');
      },
      () => fs.renameSync(p('a', 'b'), p('moved')), // a whole tree under a new name
      () => {
        fs.writeFileSync(p('moved', 'c', 'f1.txt'), 'changed');
        fs.rmSync(p('moved', 'c', 'f2.txt'));
        fs.truncateSync(p('moved', 'c', 'f3.txt'), 0);
        fs.chmodSync(p('moved', 'c', 'f4.txt'), 0o600);
        fs.utimesSync(p('moved', 'c', 'f5.txt'), new Date(0), new Date(0));
      },
      () => {
        fs.mkdirSync(p('x'));
        fs.renameSync(p('moved'), p('x', 'inner')); // moved again, one level down
        fs.renameSync(p('a', 'top.txt'), p('x', 'top.txt'));
      },
      () => {
        fs.rmSync(p('x', 'inner'), { recursive: true }); // a tree deleted
        fs.symlinkSync('/etc', p('link'));
        fs.writeFileSync(p('x', 'new.txt'), 'n');
      },
      () => {
        fs.mkdirSync(p('d'));
        fs.writeFileSync(p('d', 'file.txt'), 'in d');
      },
      () => {
        fs.rmSync(p('d'), { recursive: true }); // a directory replaced by a link to elsewhere
        fs.symlinkSync(path.join(base), p('d'));
      },
      () => {
        fs.writeFileSync(p('h1.txt'), 'shared');
        fs.linkSync(p('h1.txt'), p('x', 'h2.txt'));
      },
      () => fs.appendFileSync(p('x', 'h2.txt'), ' more'), // through one name: both change
      () => fs.rmSync(p('h1.txt')), // the other name's link count changes
      () => { // a link made and removed again names only itself, yet changes x/h2.txt's inode
        fs.linkSync(p('x', 'h2.txt'), p('passing.link'));
        fs.rmSync(p('passing.link'));
      },
      () => {
        fs.writeFileSync(Buffer.concat([Buffer.from(`${ws}/bad-`), Buffer.from([0xff])]), 'not utf-8');
        fs.mkdirSync(Buffer.concat([Buffer.from(`${ws}/dir-`), Buffer.from([0xfe])]));
        fs.writeFileSync(Buffer.concat([Buffer.from(`${ws}/dir-`), Buffer.from([0xfe]), Buffer.from('/inside.txt')]), 'hidden');
        fs.writeFileSync(p('x', 'back\\slash.txt'), 'no');
        execFileSync('mkfifo', [p('fifo')]);
      },
      () => {
        fs.renameSync(p('x', 'new.txt'), p('x', 'top.txt')); // over an existing file
        fs.writeFileSync(p('z.txt'), 'created then');
        fs.rmSync(p('z.txt')); // gone again: nothing to report
      },
    ];
    for (const step of steps) {
      const r = await round(changes, 's2', ws, step);
      expect(r.reported).toEqual(r.truth);
      expect(entries(r.before)).toEqual(entries(await snapshotWorkspace(ws))); // updated in place to the state after
    }
    expect(counts.scans).toBe(1);
  });

  it('sees what a sandboxed process does through its own mount of the workspace', async () => {
    const ws = await quotaWorkspace();
    const { changes, counts } = changesWith(tracker);
    fs.writeFileSync(path.join(ws, 'keep.txt'), 'k');
    fs.writeFileSync(path.join(ws, 'edit.txt'), 'e');
    fs.writeFileSync(path.join(ws, 'drop.txt'), 'd');
    for (const f of ['keep.txt', 'edit.txt', 'drop.txt']) fs.chownSync(path.join(ws, f), UID, UID);
    await round(changes, 's3', ws, () => undefined);
    const r = await round(changes, 's3', ws, async () => expect((await runInBwrap(ws,
      'mkdir -p out/deep && echo 1 > out/deep/r.txt && echo more >> edit.txt && rm drop.txt && python3 -c "import mmap,os; f=open(\'keep.txt\',\'r+b\'); m=mmap.mmap(f.fileno(),0); m[0:1]=b\'K\'; m.flush()"', UID)).code).toBe(0));
    expect(r.reported).toEqual({ created: ['out/deep/r.txt'], modified: ['edit.txt', 'keep.txt'], deleted: ['drop.txt'] });
    expect(r.reported).toEqual(r.truth);
    expect(counts.scans).toBe(1);
  });

  it('uploads and deletes between executions are folded in before the run, not reported by it', async () => {
    const ws = await quotaWorkspace();
    const { changes, counts } = changesWith(tracker);
    await round(changes, 's4', ws, () => fs.writeFileSync(path.join(ws, 'a.txt'), 'a'));
    fs.writeFileSync(path.join(ws, 'uploaded.csv'), 'u'); // the API, between executions
    changes.workspaceChanged('s4');
    const r = await round(changes, 's4', ws, () => fs.writeFileSync(path.join(ws, 'b.txt'), 'b'));
    expect(r.reported).toEqual({ created: ['b.txt'], modified: [], deleted: [] });
    expect(counts.scans).toBe(1);
  });

  it('an execution after a quiet spell asks the helper once (after the run), not before it too', async () => {
    const ws = await quotaWorkspace();
    const { changes } = changesWith(tracker);
    await round(changes, 's10', ws, () => fs.writeFileSync(path.join(ws, 'a.txt'), 'a'));
    const drain = vi.spyOn(tracker, 'drain');
    try {
      const idle = await round(changes, 's10', ws, () => undefined);
      expect(idle.reported).toEqual({ created: [], modified: [], deleted: [] });
      const busy = await round(changes, 's10', ws, () => fs.writeFileSync(path.join(ws, 'b.txt'), 'b'));
      expect(busy.reported).toEqual({ created: ['b.txt'], modified: [], deleted: [] });
      expect(drain).toHaveBeenCalledTimes(2);
    } finally {
      drain.mockRestore();
    }
  });

  it('a change between executions that is not the API\'s (a background process) is folded in before the run once the helper told of it', async () => {
    const ws = await quotaWorkspace();
    const { changes, counts } = changesWith(tracker);
    await round(changes, 's11', ws, () => fs.writeFileSync(path.join(ws, 'a.txt'), 'a'));
    expect(tracker.unchangedSinceDrain('s11')).toBe(true);
    fs.writeFileSync(path.join(ws, 'background.txt'), 'written while no execution ran'); // no workspaceChanged
    fs.rmSync(path.join(ws, 'a.txt'));
    const deadline = Date.now() + 5000;
    while (tracker.unchangedSinceDrain('s11') && Date.now() < deadline) await sleep(5);
    expect(tracker.unchangedSinceDrain('s11')).toBe(false);
    const r = await round(changes, 's11', ws, () => fs.writeFileSync(path.join(ws, 'run.txt'), 'r'));
    expect(r.reported).toEqual({ created: ['run.txt'], modified: [], deleted: [] });
    expect(r.reported).toEqual(r.truth);
    expect(entries(r.before)).toEqual(entries(await snapshotWorkspace(ws)));
    expect(counts.scans).toBe(1);
  });

  it('falls back to a scan when more names changed than the helper keeps, and stays exact', async () => {
    const small = await ChangeTracker.start({ logger: silent, maxPairs: 10 });
    if (!small.tracker) throw new Error(String(small.reason));
    try {
      const ws = await quotaWorkspace();
      const { changes, counts } = changesWith(small.tracker);
      await round(changes, 's5', ws, () => undefined);
      const r = await round(changes, 's5', ws, () => {
        for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(ws, `many-${i}.txt`), 'x');
      });
      expect(r.reported.created).toHaveLength(40);
      expect(r.reported).toEqual(r.truth);
      expect(counts.scans).toBe(2); // first before + the rescan
      const next = await round(changes, 's5', ws, () => fs.writeFileSync(path.join(ws, 'one.txt'), '1'));
      expect(next.reported).toEqual({ created: ['one.txt'], modified: [], deleted: [] });
      expect(counts.scans).toBe(2); // tracked again
    } finally {
      await small.tracker.close();
    }
  });

  it('falls back to scans, still exact, when the helper dies, even for changes it had collected', async () => {
    const own = await ChangeTracker.start({ logger: silent });
    if (!own.tracker) throw new Error(String(own.reason));
    const ws = await quotaWorkspace();
    const { changes, counts } = changesWith(own.tracker);
    await round(changes, 's6', ws, () => undefined);
    // The API adds a file while the session is watched (its kept snapshot stays: the tracker
    // would report it), then the helper dies with that knowledge.
    fs.writeFileSync(path.join(ws, 'uploaded.csv'), 'u');
    changes.workspaceChanged('s6');
    process.kill(own.tracker.pid as number, 'SIGKILL');
    await sleep(100);
    expect(own.tracker.available).toBe(false);
    const r = await round(changes, 's6', ws, () => {
      fs.rmSync(path.join(ws, 'uploaded.csv'));
      fs.writeFileSync(path.join(ws, 'after-death.txt'), 'x');
    });
    expect(r.reported).toEqual({ created: ['after-death.txt'], modified: [], deleted: ['uploaded.csv'] });
    expect(counts.scans).toBeGreaterThan(1);
    await own.tracker.close();
  });

  it('names below paths longer than the API addresses are left out, as a scan leaves them, and the tracker stays up', async () => {
    const ws = await quotaWorkspace();
    const { changes } = changesWith(tracker);
    const deep = path.join(ws, ...Array.from({ length: 5 }, (_, i) => `${String(i)}${'d'.repeat(240)}`));
    fs.mkdirSync(deep, { recursive: true });
    for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(deep, `f${i}`), 'x');
    await round(changes, 's9', ws, () => undefined);
    const r = await round(changes, 's9', ws, () => {
      for (let i = 0; i < 50; i++) fs.chmodSync(path.join(deep, `f${i}`), 0o600);
      fs.writeFileSync(path.join(ws, 'short.txt'), 's');
    });
    expect(r.reported).toEqual({ created: ['short.txt'], modified: [], deleted: [] });
    expect(r.reported).toEqual(r.truth);
    expect(tracker.available).toBe(true);
    expect(changes.isTracked('s9')).toBe(true);
  });

  it('scans a workspace that is not a file system of its own', async () => {
    const plain = path.join(base, `plain-${++counter}`);
    fs.mkdirSync(plain);
    const { changes, counts } = changesWith(tracker);
    const r = await round(changes, 's7', plain, () => fs.writeFileSync(path.join(plain, 'p.txt'), 'p'));
    expect(r.reported).toEqual({ created: ['p.txt'], modified: [], deleted: [] });
    expect(changes.isTracked('s7')).toBe(false);
    await round(changes, 's7', plain, () => undefined);
    expect(counts.scans).toBe(3); // before + after of the first, after of the second: its "before" was kept
  });

  it('stops watching a forgotten session, and a new session of the same name starts clean', async () => {
    const ws = await quotaWorkspace();
    const { changes } = changesWith(tracker);
    await round(changes, 's8', ws, () => undefined);
    fs.writeFileSync(path.join(ws, 'before-forget.txt'), 'x');
    await changes.forget('s8', ws);
    expect(changes.isTracked('s8')).toBe(false);
    const r = await round(changes, 's8', ws, () => fs.writeFileSync(path.join(ws, 'later.txt'), 'y'));
    expect(r.reported).toEqual({ created: ['later.txt'], modified: [], deleted: [] });
    expect(changes.isTracked('s8')).toBe(true);
  });

  describe('against scans, random operations', () => {
    /** Deterministic pseudo-random numbers (mulberry32), so a failure can be replayed from its seed. */
    function rng(seed: number): () => number {
      let a = seed >>> 0;
      return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
      };
    }

    for (const seed of [1, 2, 3, 4]) {
      it(`seed ${seed}: 60 rounds of 1–6 random operations each report what two scans report`, async () => {
        const ws = await quotaWorkspace();
        const rand = rng(seed);
        const pick = <T>(xs: T[]): T | undefined => xs[Math.floor(rand() * xs.length)];
        const names = ['a', 'b', 'c', 'd.txt', 'e.csv', 'sub', 'x y', 'ü'];
        const randomRel = (depth = 1 + Math.floor(rand() * 3)) => Array.from({ length: depth }, () => pick(names) as string).join('/');
        // Everything that exists now, from the host's view (lstat, no following).
        const all = (): { files: string[]; dirs: string[]; any: string[] } => {
          const files: string[] = [];
          const dirs: string[] = [];
          const any: string[] = [];
          const walk = (rel: string) => {
            for (const e of fs.readdirSync(path.join(ws, rel), { withFileTypes: true })) {
              const p = rel ? `${rel}/${e.name}` : e.name;
              any.push(p);
              if (e.isDirectory()) {
                dirs.push(p);
                walk(p);
              } else if (e.isFile()) files.push(p);
            }
          };
          walk('');
          return { files, dirs, any };
        };
        const ops: (() => void)[] = [
          () => { // create or overwrite a file, making its directories
            const rel = randomRel();
            try {
              fs.mkdirSync(path.dirname(path.join(ws, rel)), { recursive: true });
              fs.writeFileSync(path.join(ws, rel), 'x'.repeat(Math.floor(rand() * 50)));
            } catch { /* a file where a directory should be: skip */ }
          },
          () => { const f = pick(all().files); if (f) fs.appendFileSync(path.join(ws, f), '+'); },
          () => { const f = pick(all().files); if (f) fs.truncateSync(path.join(ws, f), 0); },
          () => { const f = pick(all().files); if (f) fs.chmodSync(path.join(ws, f), rand() < 0.5 ? 0o600 : 0o644); },
          () => { const f = pick(all().files); if (f) fs.utimesSync(path.join(ws, f), new Date(0), new Date(Math.floor(rand() * 1e12))); },
          () => { const p = pick(all().any); if (p) fs.rmSync(path.join(ws, p), { recursive: true, force: true }); },
          () => { // rename anything (file, directory, link) to a fresh place, or over a file
            const from = pick(all().any);
            const to = randomRel();
            if (!from) return;
            try {
              fs.mkdirSync(path.dirname(path.join(ws, to)), { recursive: true });
              fs.renameSync(path.join(ws, from), path.join(ws, to));
            } catch { /* into itself, over a non-empty directory, ...: skip */ }
          },
          () => { // a hard link somewhere, sometimes removed again in the same round
            const f = pick(all().files);
            const to = path.join(ws, `${randomRel()}.link`);
            if (!f) return;
            try {
              fs.mkdirSync(path.dirname(to), { recursive: true });
              fs.linkSync(path.join(ws, f), to);
              if (rand() < 0.3) fs.rmSync(to);
            } catch { /* exists, or a file where a directory should be */ }
          },
          () => { try { fs.mkdirSync(path.join(ws, randomRel()), { recursive: true }); } catch { /* a file in the way */ } },
          () => fs.utimesSync(ws, new Date(0), new Date(Math.floor(rand() * 1e12))), // the root itself
          () => { try { fs.symlinkSync(rand() < 0.5 ? '/etc' : '.', path.join(ws, `${randomRel(1)}.sym`)); } catch { /* exists */ } },
          () => { const d = pick(all().dirs); if (d) fs.chmodSync(path.join(ws, d), 0o700); },
        ];
        const { changes, counts } = changesWith(tracker);
        try {
          for (let roundNo = 0; roundNo < 60; roundNo++) {
            const n = 1 + Math.floor(rand() * 6);
            const r = await round(changes, `fuzz-${seed}`, ws, () => {
              for (let i = 0; i < n; i++) (pick(ops) as () => void)();
            });
            expect({ round: roundNo, ...r.reported }).toEqual({ round: roundNo, ...r.truth });
            expect(entries(r.before)).toEqual(entries(await snapshotWorkspace(ws)));
          }
          expect(counts.scans).toBe(1);
        } finally {
          await changes.forget(`fuzz-${seed}`, ws);
          await removeQuotaWorkspace(path.dirname(ws), ws); // 60-round workspaces do not pile up
        }
      }, 120_000);
    }
  });
});

describe.skipIf(skip)('ChangeTracker helper', () => {
  it('refuses to watch a directory that is not the root of a file system', async () => {
    const started = await ChangeTracker.start({ logger: silent });
    if (!started.tracker) throw new Error(String(started.reason));
    try {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-plain-'));
      expect(await started.tracker.watch('plain', dir)).toBe(false);
      expect(await started.tracker.drain('plain', dir)).toEqual({ rescan: true });
      fs.rmSync(dir, { recursive: true });
    } finally {
      await started.tracker.close();
    }
  });
});
