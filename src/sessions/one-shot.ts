// POST /v1/execute: one execution in a throw-away workspace (from the workspace pool when one is
// ready). Input files are written in, changed files come back inline (bounded), and the
// workspace is gone before the answer.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Config } from '../config.js';
import type { ExecutionRequest, ExecutionResult } from './executor.js';
import { executeInWorkspace } from './executor.js';
import type { SessionManager } from './session-manager.js';
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
  input: { environment: string; files: { path: string; content: Buffer }[]; request: ExecutionRequest },
): Promise<OneShotResult> {
  const environment = await manager.resolveEnvironment(input.environment);
  const slot = manager.reserveTemporarySlot();
  const dir = path.join(manager.layout.oneshot, randomBytes(12).toString('hex'));
  const workspace = path.join(dir, 'workspace');
  try {
    const identity = manager.identityForSlot(slot);
    await manager.newOneShotWorkspace(dir, identity);
    for (const f of input.files) {
      await writeFileSafe(workspace, f.path, f.content, { owner: identity ?? undefined, mkdirs: true });
    }
    const result = await executeInWorkspace(manager.executorDeps(), { environment, workspaceDir: workspace, volumes: [], identity }, input.request);

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
    manager.releaseTemporarySlot(slot);
    await manager.removeOneShotWorkspace(dir);
  }
}
