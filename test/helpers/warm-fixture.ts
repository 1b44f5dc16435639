// A real sandbox (bwrap, cgroups) with its warm pool, for the warm-sandbox and fork-server tests:
// the pandas-exec environment, a private WORKSPACE_DIR, the pool's claims and discards recorded,
// and a target of its own per identity slot.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { findEnvironment, type Environment } from '../../src/sandbox/environments.js';
import { createSandbox, type Sandbox } from '../../src/sandbox/sandbox.js';
import type { WarmDiscardReason, WarmPool, WarmTarget } from '../../src/sandbox/warm/warm-pool.js';
import { ENVIRONMENTS_DIR } from './host-env.js';
import { makeWorkspace } from './sandbox.js';

export interface WarmFixture {
  sandbox: Sandbox;
  pandas: Environment;
  workDir: string;
  claims: ('hit' | 'miss')[];
  discarded: WarmDiscardReason[];
  /** A target of its own: a fresh workspace owned by the slot's uid. */
  newTarget(environment: Environment | null, slot: number): WarmTarget;
  pool(): WarmPool;
  close(): Promise<void>;
}

export async function createWarmFixture(prefix: string, settings: Record<string, string> = {}): Promise<WarmFixture> {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(workDir, 0o711);
  const config = loadConfig({
    BUBBLE_SANDBOX_LOG_LEVEL: 'silent', BUBBLE_SANDBOX_WORKSPACE_DIR: workDir, BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR,
    BUBBLE_SANDBOX_WARM_MIN_AVAILABLE_BYTES: '0', ...settings,
  });
  const sandbox = await createSandbox(config);
  const pandas = await findEnvironment(config.environmentsDir, 'pandas-exec');
  if (!pandas?.usable) throw new Error('pandas-exec is not built (npm run setup)');
  const claims: ('hit' | 'miss')[] = [];
  const discarded: WarmDiscardReason[] = [];
  sandbox.runner.warm?.observe({ onClaim: (r) => claims.push(r), onDiscarded: (r) => discarded.push(r) });
  const workspaces: string[] = [];
  return {
    sandbox, pandas, workDir, claims, discarded,
    newTarget(environment, slot) {
      const identity = sandbox.identityFor(slot);
      const ws = makeWorkspace(identity?.uid);
      workspaces.push(ws);
      return { environment, workspaceDir: ws, volumes: [], limits: sandbox.defaultLimits, identity };
    },
    pool() {
      const warm = sandbox.runner.warm;
      if (!warm) throw new Error('warm sandboxes are off');
      return warm;
    },
    async close() {
      await sandbox.close();
      for (const ws of workspaces) fs.rmSync(path.dirname(ws), { recursive: true, force: true });
      fs.rmSync(workDir, { recursive: true, force: true });
    },
  };
}
