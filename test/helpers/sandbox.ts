// Shared set-up for tests that run real bwrap: a runner, a workspace owned by the sandbox uid,
// and default limits.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { createHostLayout, type HostLayout } from '../../src/sandbox/host-layout.js';
import { createSandboxRunner, type SandboxRunner } from '../../src/sandbox/runner.js';
import { createSpawner, spawnerPathFor, type Spawner } from '../../src/sandbox/spawner.js';
import type { ResourceLimits, RunRequest, RunResult } from '../../src/sandbox/types.js';

export const IS_ROOT = process.getuid?.() === 0;
export const TEST_UID = 201000;
/** The exec helper where the default configuration finds it (test/global-setup.ts builds it). */
export const EXEC_HELPER_PATH = loadConfig({}).execHelperPath;

export const DEFAULT_LIMITS: ResourceLimits = {
  memoryBytes: 512 * 1024 * 1024,
  pids: 128,
  cpuCores: 1,
  tmpSizeBytes: 64 * 1024 * 1024,
  fileSizeBytes: 512 * 1024 * 1024,
  openFiles: 1024,
};

export function bwrapUsable(): boolean {
  return process.env.BUBBLE_SANDBOX_TEST_BWRAP !== '0';
}

export interface SandboxFixture {
  runner: SandboxRunner;
  layout: HostLayout;
  workspace: string;
  run(partial: Partial<RunRequest> & Pick<RunRequest, 'program'>): Promise<RunResult>;
  dispose(): void;
}

export function makeWorkspace(uid = TEST_UID): string {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-test-'));
  fs.chmodSync(parent, 0o755);
  const ws = path.join(parent, 'ws');
  fs.mkdirSync(ws, { mode: 0o755 });
  if (IS_ROOT) fs.chownSync(ws, uid, uid);
  return ws;
}

// One spawn helper per test file, as the service has one: the fixtures' sandboxes start through it
// (pass spawner: null for the service-fork path). It ends with the test process (EOF on its channel).
let sharedSpawner: Spawner | null = null;
export function testSpawner(): Spawner {
  sharedSpawner ??= createSpawner(spawnerPathFor(EXEC_HELPER_PATH));
  return sharedSpawner;
}

export function createSandboxFixture(opts: Partial<Parameters<typeof createSandboxRunner>[0]> = {}): SandboxFixture {
  const layout = opts.layout ?? createHostLayout();
  const runner = createSandboxRunner({ bwrapPath: 'bwrap', execHelperPath: EXEC_HELPER_PATH, layout, seccompProgram: null, cgroups: null, spawner: testSpawner(), ...opts });
  const workspace = makeWorkspace();
  return {
    runner,
    layout,
    workspace,
    run: (partial) =>
      runner.run({
        environment: null,
        workspaceDir: workspace,
        volumes: [],
        timeoutMs: 10_000,
        maxOutputChars: 100_000,
        limits: DEFAULT_LIMITS,
        identity: IS_ROOT ? { uid: TEST_UID, gid: TEST_UID } : null,
        ...partial,
      }),
    dispose: () => {
      layout.dispose();
      fs.rmSync(path.dirname(workspace), { recursive: true, force: true });
    },
  };
}
