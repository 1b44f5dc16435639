// notebooks/execute: a notebook of the workspace run with a real Jupyter kernel inside the
// session's sandbox, as one execution of the session (queued behind its other work, same
// workspace, network namespace, uid and limits). The runner (src/sandbox/kernel/notebook-runner.py)
// is the sandbox's main process: when it ends, its PID namespace ends with it, and the overall
// timeout kills the whole sandbox, so no kernel outlives the answer.
import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { EnvironmentUnavailableError, InvalidNotebookError, NotebookTooLargeError } from '../errors.js';
import type { Environment } from '../sandbox/environments.js';
import { NOTEBOOK_RUNNER_SOURCE, readNotebookReport, type NotebookCellError, type NotebookCellResult } from '../sandbox/kernel/notebook-runner.js';
import type { ResourceLimits } from '../sandbox/types.js';
import { readFileSafe } from '../workspace/workspace-fs.js';
import { validateRelativePath } from '../workspace/safe-open.js';
import type { ExecutionRequest, ExecutionResult } from './executor.js';

export type { NotebookCellError, NotebookCellResult } from '../sandbox/kernel/notebook-runner.js';

export interface NotebookRequest {
  /** Workspace path of the .ipynb. */
  path: string;
  /** Where the executed notebook is written; default `<name>.out.ipynb` beside it. */
  outputPath?: string | undefined;
  /** The whole run, the kernel's start included. */
  timeoutSeconds: number;
  /** Each cell, and the kernel's start (whole seconds, at least 1: nbclient's unit). */
  cellTimeoutSeconds: number;
  signal?: AbortSignal | undefined;
}

export interface NotebookResult extends Pick<ExecutionResult, 'files' | 'files_truncated' | 'duration_ms'> {
  status: 'ok' | 'error' | 'timeout';
  cells: NotebookCellResult[];
  output_path: string;
  /** A failure outside the cells (the kernel did not start, the runner was killed), else null. */
  error: NotebookCellError | null;
}

export interface NotebookHost {
  readonly config: Config;
  readonly defaultLimits: ResourceLimits;
  workspaceDir(id: string): string;
  environmentOf(id: string): Promise<Environment>;
  execute(id: string, req: ExecutionRequest): Promise<ExecutionResult>;
}

const NEEDS = ['nbclient', 'ipykernel'];

export function defaultOutputPath(path: string): string {
  return `${path.replace(/\.ipynb$/i, '')}.out.ipynb`;
}

/** The indexes of the notebook's code cells; InvalidNotebookError when it is not an nbformat 4 notebook. */
export function codeCellsOf(text: string): number[] {
  let nb: unknown;
  try {
    nb = JSON.parse(text);
  } catch (err) {
    throw new InvalidNotebookError(`not JSON (${(err as Error).message.slice(0, 200)})`);
  }
  if (nb === null || typeof nb !== 'object' || Array.isArray(nb)) throw new InvalidNotebookError('not a JSON object');
  const o = nb as Record<string, unknown>;
  if (o.nbformat !== 4) throw new InvalidNotebookError(`nbformat is ${JSON.stringify(o.nbformat) ?? 'missing'}, only 4 is supported`);
  if (!Array.isArray(o.cells)) throw new InvalidNotebookError('it has no "cells" list');
  const code: number[] = [];
  o.cells.forEach((c: unknown, i) => {
    if (c === null || typeof c !== 'object') throw new InvalidNotebookError(`cell ${i} is not an object`);
    if ((c as Record<string, unknown>).cell_type === 'code') code.push(i);
  });
  return code;
}

async function readNotebook(workspaceDir: string, path: string, maxBytes: number): Promise<string> {
  const opened = await readFileSafe(workspaceDir, path);
  try {
    if (opened.size > maxBytes) throw new NotebookTooLargeError(maxBytes);
    const bytes = Buffer.alloc(opened.size);
    const { bytesRead } = await opened.handle.read(bytes, 0, opened.size, 0);
    return bytes.subarray(0, bytesRead).toString('utf8');
  } finally {
    await opened.handle.close();
  }
}

export async function executeNotebook(host: NotebookHost, id: string, req: NotebookRequest): Promise<NotebookResult> {
  validateRelativePath(req.path);
  const outputPath = req.outputPath ?? defaultOutputPath(req.path);
  validateRelativePath(outputPath);
  const environment = await host.environmentOf(id);
  const missing = NEEDS.filter((n) => !environment.dependencies.some((d) => d.split(/[<>=!~;[ ]/)[0]?.toLowerCase() === n));
  if (missing.length > 0) {
    throw new EnvironmentUnavailableError(environment.name, `it does not ship ${missing.join(' and ')}; run notebooks in a session of the jupyter environment`);
  }
  const codeCells = codeCellsOf(await readNotebook(host.workspaceDir(id), req.path, host.config.maxUploadSizeBytes));

  const nonce = `\x1e${randomBytes(16).toString('hex')}:`;
  const maxChars = host.config.maxOutputChars;
  const run = await host.execute(id, {
    program: { kind: 'script', source: NOTEBOOK_RUNNER_SOURCE },
    stdin: JSON.stringify({ input: req.path, output: outputPath, cell_timeout: req.cellTimeoutSeconds, nonce, max_error_chars: Math.floor(maxChars / 4) }),
    timeoutSeconds: req.timeoutSeconds,
    limits: host.defaultLimits,
    signal: req.signal,
  });
  const report = readNotebookReport(run.stdout, nonce, maxChars);

  let status: NotebookResult['status'];
  let error: NotebookCellError | null;
  if (report.done) {
    status = report.done.status;
    error = report.done.error;
  } else if (run.status === 'timeout') {
    status = 'timeout';
    error = { ename: 'TimeoutError', evalue: `the notebook ran longer than timeout_seconds (${req.timeoutSeconds} s) and was stopped`, traceback: [] };
  } else {
    status = 'error';
    error = { ename: 'RunnerError', evalue: `the notebook run ended with status ${run.status}${run.signal ? ` (${run.signal})` : ''}`, traceback: [] };
  }
  const reported = new Map(report.cells.map((c) => [c.index, c]));
  let cutShort = !report.done && run.status === 'timeout';
  const cells = codeCells.map((index): NotebookCellResult => {
    const cell = reported.get(index);
    if (cell) return cell;
    if (cutShort && !report.cells.some((c) => c.status === 'error')) {
      cutShort = false; // the cell running when the overall time ran out
      return { index, status: 'error', execution_count: null, error };
    }
    return { index, status: 'skipped', execution_count: null, error: null };
  });
  return { status, cells, output_path: outputPath, files: run.files, files_truncated: run.files_truncated, duration_ms: run.duration_ms, error };
}
