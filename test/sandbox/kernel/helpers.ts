// Real-bwrap fixtures for kernel tests. The sandbox comes from createSandbox like the service's,
// but kernels get a cgroup parent of their own: every createCgroupManager() on the shared parent
// removes children it does not recognise as another live process's (only `exec-<pid>-` names
// are), which would kill the long-lived `kernel-<pid>-` cgroups of tests running in parallel.
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../../src/config.js';
import { createCgroupManager, type CgroupManager } from '../../../src/sandbox/cgroups.js';
import { findEnvironment, type Environment } from '../../../src/sandbox/environments.js';
import { PythonKernel, type PythonKernelOptions } from '../../../src/sandbox/kernel/kernel.js';
import type { SandboxRunner } from '../../../src/sandbox/runner.js';
import { createSandbox, type Sandbox } from '../../../src/sandbox/sandbox.js';
import { ENVIRONMENTS_DIR } from '../../helpers/host-env.js';
import { makeWorkspace } from '../../helpers/sandbox.js';

export interface KernelFixture {
  sandbox: Sandbox;
  runner: Pick<SandboxRunner, 'spawnDeps' | 'nextCgroupName'>;
  cgroups: CgroupManager;
  environment(name: string): Promise<Environment>;
  /** A kernel on a fresh workspace; closed by dispose(). */
  kernel(options?: Partial<PythonKernelOptions>): PythonKernel;
  workspaceOf(kernel: PythonKernel): string;
  dispose(): Promise<void>;
}

export async function createKernelFixture(): Promise<KernelFixture> {
  const sandbox = await createSandbox(loadConfig({ BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR, BUBBLE_SANDBOX_LOG_LEVEL: 'silent' }));
  const parentName = `bs-kernel-test-${process.pid}`;
  const cgroups = await createCgroupManager({ parentName });
  const runner = {
    spawnDeps: { ...sandbox.runner.spawnDeps, cgroups: cgroups.mode === 'none' ? null : cgroups },
    nextCgroupName: (prefix?: string) => sandbox.runner.nextCgroupName(prefix),
  };
  const kernels = new Map<PythonKernel, string>();
  const workspaces: string[] = [];
  const identity = sandbox.identityFor(1);
  return {
    sandbox,
    runner,
    cgroups,
    async environment(name) {
      const env = await findEnvironment(ENVIRONMENTS_DIR, name);
      if (!env?.usable) throw new Error(`environment ${name} is not usable: ${env?.reason ?? 'missing'}`);
      return env;
    },
    kernel(options = {}) {
      const workspaceDir = options.workspaceDir ?? makeWorkspace(identity?.uid);
      workspaces.push(workspaceDir);
      const k = new PythonKernel({
        runner, environment: null, workspaceDir, volumes: [], limits: sandbox.defaultLimits, identity, ...options,
      });
      kernels.set(k, workspaceDir);
      return k;
    },
    workspaceOf(kernel) {
      const ws = kernels.get(kernel);
      if (ws === undefined) throw new Error('not a kernel of this fixture');
      return ws;
    },
    async dispose() {
      await Promise.all([...kernels.keys()].map((k) => k.close()));
      await cgroups.close();
      removeParentCgroup(parentName); // the manager leaves its parent in place by design
      await sandbox.close();
      for (const ws of workspaces) fs.rmSync(path.dirname(ws), { recursive: true, force: true });
    },
  };
}

function removeParentCgroup(name: string): void {
  const root = '/sys/fs/cgroup';
  const candidates = [path.join(root, name), ...fs.readdirSync(root).map((h) => path.join(root, h, name))];
  for (const dir of candidates) {
    try {
      fs.rmdirSync(dir);
    } catch {
      // not there (other layout, symlinked hierarchy already done), or still busy: leave it
    }
  }
}
