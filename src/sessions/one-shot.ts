// POST /v1/execute: one execution in a throw-away workspace (from the workspace pool when one is
// ready). Input files are written in, changed files come back inline (bounded), and the
// workspace is gone before the answer.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Config } from '../config.js';
import type { ExecutionRequest, ExecutionResult } from './executor.js';
import { executeInWorkspace } from './executor.js';
import type { NetworkInput, SessionManager } from './session-manager.js';
import { withNetworkEnv } from './session-executions.js';
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

export async function runOneShot(
  manager: SessionManager,
  config: Config,
  input: { environment: string; files: { path: string; content: Buffer }[]; request: ExecutionRequest; network?: NetworkInput | undefined },
): Promise<OneShotResult> {
  const network = manager.checkOneShotNetwork(input.network);
  const environment = await manager.resolveEnvironment(input.environment);
  const slot = manager.reserveTemporarySlot();
  const runId = randomBytes(12).toString('hex');
  const dir = path.join(manager.layout.oneshot, runId);
  const workspace = path.join(dir, 'workspace');
  // Mode none keeps bwrap's own private loopback-only namespace: nothing to share with.
  const networkKey = network.mode === 'none' ? null : `oneshot-${runId}`;
  try {
    const identity = manager.identityForSlot(slot);
    await manager.newOneShotWorkspace(dir, identity);
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
    manager.releaseTemporarySlot(slot);
    await manager.removeOneShotWorkspace(dir);
  }
}
