// POST /v1/execute: one execution in a throw-away workspace (from the workspace pool when one is
// ready). Input files are written in, changed files come back inline (bounded), and the
// workspace is gone before the answer.
import path from 'node:path';
import type { Config } from '../config.js';
import type { ExecutionRequest, ExecutionResult } from './executor.js';
import { executeInWorkspace } from './executor.js';
import type { NetworkInput, SessionManager } from './session-manager.js';
import { withNetworkEnv } from './session-executions.js';
import { newOneShotPlace } from './one-shot-warm.js';
import { BusyError } from '../errors.js';
import { readUpTo } from '../workspace/exact-length-read.js';
import { readFileSafe, writeFileSafe } from '../workspace/workspace-fs.js';

export interface OutputFile {
  path: string;
  size: number;
  content_base64: string;
}

export type OneShotResult = Omit<ExecutionResult, 'files'> & {
  files: ExecutionResult['files'] & { outputs: OutputFile[]; outputs_omitted: string[] };
};

type OneShotInput = { environment: string; files: { path: string; content: Buffer }[]; request: ExecutionRequest; network?: NetworkInput | undefined };

/** The run is the manager's to wait for at shutdown (its workspace is removed only after its answer). */
export async function runOneShot(manager: SessionManager, config: Config, input: OneShotInput): Promise<OneShotResult> {
  return manager.trackOneShot(() => runOneShotNow(manager, config, input));
}

async function runOneShotNow(manager: SessionManager, config: Config, input: OneShotInput): Promise<OneShotResult> {
  const network = manager.checkOneShotNetwork(input.network);
  const environment = await manager.resolveEnvironment(input.environment);
  // Without a network, a place prepared after the previous run of this environment (a workspace,
  // its uid slot and a warm sandbox waiting in it, see one-shot-warm.ts) is taken whole.
  const prepared = network.mode === 'none' ? manager.oneShotWarm.take(environment) : null;
  const slot = prepared?.slot ?? await reserveSlot(manager);
  const { dir, workspace } = prepared ?? newOneShotPlace(manager.layout.oneshot);
  const runId = path.basename(dir);
  // Mode none keeps bwrap's own private loopback-only namespace: nothing to share with.
  const networkKey = network.mode === 'none' ? null : `oneshot-${runId}`;
  try {
    const identity = prepared ? prepared.identity : manager.identityForSlot(slot);
    if (!prepared) await manager.newOneShotWorkspace(dir, identity);
    for (const f of input.files) {
      await writeFileSafe(workspace, f.path, f.content, { owner: identity ?? undefined, mkdirs: true });
    }
    const net = networkKey === null ? null : await manager.openOneShotNetwork(networkKey, network, identity);
    const request = net === null ? input.request : { ...input.request, env: withNetworkEnv(input.request.env, net) };
    const result = await executeInWorkspace(manager.executorDeps(), { environment, workspaceDir: workspace, volumes: [], identity, netnsPath: net?.netnsPath }, request);

    const outputs: OutputFile[] = [];
    const omitted: string[] = [];
    for (const p of [...result.files.created, ...result.files.modified].sort()) {
      if (outputs.length >= config.maxOutputFiles) {
        omitted.push(p);
        continue;
      }
      try {
        const opened = await readFileSafe(workspace, p);
        try {
          if (opened.size > config.maxOutputFileBytes) {
            omitted.push(p);
            continue;
          }
          // Never past the size checked above, whatever the file does meanwhile (exact-length-read.ts).
          const content = await readUpTo(opened.handle, opened.size);
          outputs.push({ path: p, size: content.length, content_base64: content.toString('base64') });
        } finally {
          await opened.handle.close();
        }
      } catch {
        omitted.push(p); // no longer a regular file reachable without links
      }
    }
    return { ...result, files: { ...result.files, outputs, outputs_omitted: omitted } };
  } finally {
    if (networkKey !== null) await manager.closeOneShotNetwork(networkKey);
    // The answer does not wait while the workspace goes (unmounting its quota image takes tens of
    // milliseconds); its uid slot stays taken until it is gone, and shutdown waits for it.
    manager.removeOneShotWorkspaceThenRelease(dir, slot);
    // The next run of this environment most likely looks like this one; prepared after the answer.
    if (network.mode === 'none') setImmediate(() => manager.oneShotWarm.prepare(environment, input.request.limits));
  }
}

/** A uid slot for the run; when all are taken, a prepared place gives its slot back first. */
async function reserveSlot(manager: SessionManager): Promise<number> {
  try {
    return manager.reserveTemporarySlot();
  } catch (err) {
    if (err instanceof BusyError && await manager.oneShotWarm.releaseOne()) return manager.reserveTemporarySlot();
    throw err;
  }
}
