// The Python side of notebooks/execute (notebook-runner.py beside this module, run as a script in
// the session's sandbox) and the reading of what it reports on stdout: one `<nonce>cell <JSON>`
// line per executed code cell, then `<nonce>done <JSON>`. Lines are checked, since code in the
// notebook runs beside the runner and could write lines of its own.
import fs from 'node:fs';

export const NOTEBOOK_RUNNER_SOURCE = fs.readFileSync(new URL('./notebook-runner.py', import.meta.url), 'utf8');

export interface NotebookCellError {
  ename: string;
  evalue: string;
  traceback: string[];
}

export interface NotebookCellResult {
  /** Position of the cell in the notebook's `cells` (markdown and raw cells are not listed). */
  index: number;
  status: 'ok' | 'error' | 'skipped';
  execution_count: number | null;
  error: NotebookCellError | null;
}

export interface NotebookRunReport {
  cells: NotebookCellResult[];
  /** null when the runner did not finish (killed by the overall timeout, or died). */
  done: { status: 'ok' | 'error' | 'timeout'; error: NotebookCellError | null } | null;
}

const str = (v: unknown, max: number): string => (typeof v === 'string' ? v.slice(0, max) : '');

function cellErrorOf(v: unknown, max: number): NotebookCellError | null {
  if (v === null || typeof v !== 'object') return null;
  const e = v as Record<string, unknown>;
  return {
    ename: str(e.ename, 200),
    evalue: str(e.evalue, max),
    traceback: Array.isArray(e.traceback) ? e.traceback.slice(0, 200).map((l) => str(l, max)) : [],
  };
}

/** The runner's report from its stdout; maxChars bounds each text taken from it. */
export function readNotebookReport(stdout: string, nonce: string, maxChars: number): NotebookRunReport {
  const cells: NotebookCellResult[] = [];
  let done: NotebookRunReport['done'] = null;
  for (const line of stdout.split('\n')) {
    if (!line.startsWith(nonce) || done) continue;
    const rest = line.slice(nonce.length);
    const space = rest.indexOf(' ');
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(rest.slice(space + 1)) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (body === null || typeof body !== 'object') continue;
    const kind = rest.slice(0, space);
    if (kind === 'cell' && typeof body.index === 'number' && (body.status === 'ok' || body.status === 'error')) {
      if (cells.some((c) => c.index >= (body.index as number))) continue; // in order, once each
      cells.push({
        index: body.index, status: body.status,
        execution_count: typeof body.execution_count === 'number' ? body.execution_count : null,
        error: body.status === 'error' ? cellErrorOf(body.error, maxChars) : null,
      });
    } else if (kind === 'done' && (body.status === 'ok' || body.status === 'error' || body.status === 'timeout')) {
      done = { status: body.status, error: cellErrorOf(body.error, maxChars) };
    }
  }
  return { cells, done };
}
