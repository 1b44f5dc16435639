// withChangedFiles, the frame of every execution: the look at what a run changed starts as soon
// as the run says its code is over (a run_code cell, while the kernel still reads its cgroup's
// statistics), not only once the run has resolved; and it stays inside the execution's slot.
import { describe, expect, it } from 'vitest';
import { withChangedFiles, type ChangeSource } from '../../src/sessions/executor.js';
import type { ExecutionLimiter } from '../../src/sessions/limiter.js';
import { WorkspaceSnapshot } from '../../src/workspace/workspace-fs.js';

const budget = { maxPaths: 100, maxBytes: 10_000 };

function setup() {
  const events: string[] = [];
  let afterCalled: () => void = () => undefined;
  const afterStarted = new Promise<void>((resolve) => {
    afterCalled = resolve;
  });
  const changes: ChangeSource = {
    before: async () => new WorkspaceSnapshot(),
    after: async () => {
      events.push('after');
      afterCalled();
      return { created: ['out.txt'], modified: [], deleted: [], truncated: false };
    },
  };
  const limiter = {
    acquire: async () => {
      events.push('acquire');
      return () => events.push('release');
    },
  } as unknown as ExecutionLimiter;
  return { events, changes, limiter, afterStarted };
}

describe('withChangedFiles', () => {
  it('starts the look after the run when the run calls ended(), before the run resolves', async () => {
    const { events, changes, limiter, afterStarted } = setup();
    const result = await withChangedFiles({ limiter, changedFilesBudget: budget }, { workspaceDir: '/nonexistent', changes }, undefined, async (ended) => {
      ended();
      // The run's last step (the statistics) waits on nothing here but the look having begun:
      // without the early start this would never resolve.
      const started = await Promise.race([afterStarted.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2000))]);
      events.push(started ? 'run done after the look began' : 'run done, no look yet');
      return { status: 'ok' as const, duration_ms: 1 };
    });
    expect(events).toEqual(['acquire', 'after', 'run done after the look began', 'release']);
    expect(result.files).toEqual({ created: ['out.txt'], modified: [], deleted: [] });
  });

  it('without ended(), looks once the run has resolved; a run that fails after ended() still waits for its look inside the slot', async () => {
    const plain = setup();
    await withChangedFiles({ limiter: plain.limiter, changedFilesBudget: budget }, { workspaceDir: '/nonexistent', changes: plain.changes }, undefined, async () => {
      plain.events.push('run');
      return { status: 'ok' as const, duration_ms: 1 };
    });
    expect(plain.events).toEqual(['acquire', 'run', 'after', 'release']);

    const failing = setup();
    const slow: ChangeSource = {
      before: () => failing.changes.before(),
      after: async (b, bud) => {
        await new Promise((r) => setTimeout(r, 50));
        return failing.changes.after(b, bud);
      },
    };
    await expect(withChangedFiles({ limiter: failing.limiter, changedFilesBudget: budget }, { workspaceDir: '/nonexistent', changes: slow }, undefined, async (ended) => {
      ended();
      throw new Error('the kernel failed after the cell');
    })).rejects.toThrow('the kernel failed after the cell');
    expect(failing.events).toEqual(['acquire', 'after', 'release']);
  });
});
