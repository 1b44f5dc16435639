// Rich outputs and notebooks (issue 15), against the real service:
// - run_code on a warm interpreter whose final value is a 100-row DataFrame, interleaved with
//   `1 + 1` on the same interpreter: the server-side duration_ms p50 of the DataFrame call
//   (target under 10 ms) with pandas' default display options (as Jupyter shows it: 10 of the
//   100 rows, since display.max_rows is 60), and with every row in the HTML (max_rows 200).
//   Most of the time is pandas' own: repr() for `result` and _repr_html_() for text/html; the
//   phase also times that work inside the interpreter (pandas_own) to tell it from the service's.
// - notebooks/execute of a notebook whose cells sleep a known time: the overhead over the cells'
//   own time (kernel start, nbclient, the sandbox), p50 of a few runs.
// Runs alone with `npx tsx bench/lib/phase-rich.ts` (starts a service of its own; `npm run build`
// first: the service runs from dist/).
import { BenchClient, createSession, deleteSession, executeIn } from './http.js';
import { notMeasuredRow, runIfMain, type PhaseInput } from './phase-kit.js';
import { fmt, verdict, type Row } from './report.js';
import { now, round, summarize, type Summary } from './stats.js';

export const RICH_TARGETS = { dataFrameHtmlP50Ms: 10 } as const;

const NOTEBOOK_CELLS = 5;
const CELL_SLEEP_SECONDS = 0.2;
const NOTEBOOK_RUNS = 5;

export type RichResult =
  | {
    error: null;
    dataframe_html: { reported: Summary; round_trip: Summary; html_chars: number };
    dataframe_html_all_rows: { reported: Summary; round_trip: Summary; html_chars: number };
    /** repr(df) + df._repr_html_() timed inside the interpreter, pandas defaults. */
    pandas_own: Summary;
    plain_value: { reported: Summary; round_trip: Summary };
    notebook: { runs: number; cells: number; cells_own_ms: number; duration: Summary; overhead: Summary };
  }
  | { error: string };

async function runCode(client: BenchClient, session: string, code: string): Promise<{ ms: number; reported: number; body: Record<string, unknown> }> {
  const t0 = now();
  const res = await client.json('POST', `/v1/sessions/${session}/run_code`, { code });
  const ms = now() - t0;
  const body = JSON.parse(res.text) as Record<string, unknown>;
  if (res.status !== 200 || body.status !== 'ok') throw new Error(`run_code: ${res.status} ${res.text.slice(0, 300)}`);
  return { ms, reported: Number(body.duration_ms), body };
}

async function measureDataFrame(client: BenchClient, n: number, warmup: number) {
  const session = 'bench-rich';
  await createSession(client, session, 'pandas-exec');
  try {
    await runCode(client, session, [
      'import pandas as pd',
      "df = pd.DataFrame({'n': range(100), 'square': [i * i for i in range(100)], 'label': ['row %d' % i for i in range(100)]})",
    ].join('\n'));
    const series = { defaults: [] as number[][], all: [] as number[][], plain: [] as number[][], own: [] as number[] };
    const chars = { defaults: 0, all: 0 };
    const frame = async (kind: 'defaults' | 'all', i: number) => {
      // set_option is a dict write; the rows shown are what differs.
      const d = await runCode(client, session, `pd.set_option('display.max_rows', ${kind === 'all' ? 200 : 60})\ndf`);
      const out = (d.body.outputs as { data: Record<string, unknown> }[] | undefined)?.[0]?.data['text/html'];
      const rows = typeof out === 'string' ? (out.match(/<tr>/g) ?? []).length : 0;
      if (typeof out !== 'string' || rows < (kind === 'all' ? 100 : 10)) throw new Error(`the DataFrame did not come back as an HTML table (${rows} rows)`);
      chars[kind] = out.length;
      if (i >= 0) series[kind].push([d.reported, d.ms]);
    };
    for (let i = -warmup; i < n; i++) {
      await frame('defaults', i);
      await frame('all', i);
      const p = await runCode(client, session, '1 + 1');
      if (i >= 0) series.plain.push([p.reported, p.ms]);
      const own = await runCode(client, session, "pd.set_option('display.max_rows', 60)\nimport time\n_t = time.perf_counter(); repr(df); df._repr_html_()\n(time.perf_counter() - _t) * 1000");
      if (i >= 0) series.own.push(Number(own.body.result));
    }
    const sum = (s: number[][], k: 0 | 1) => summarize(s.map((v) => v[k] as number));
    return {
      dataframe_html: { reported: sum(series.defaults, 0), round_trip: sum(series.defaults, 1), html_chars: chars.defaults },
      dataframe_html_all_rows: { reported: sum(series.all, 0), round_trip: sum(series.all, 1), html_chars: chars.all },
      plain_value: { reported: sum(series.plain, 0), round_trip: sum(series.plain, 1) },
      pandas_own: summarize(series.own),
    };
  } finally {
    await deleteSession(client, session);
  }
}

async function measureNotebook(client: BenchClient) {
  const session = 'bench-notebook';
  await createSession(client, session, 'jupyter');
  try {
    const made = await executeIn(client, session, {
      script: [
        'import nbformat',
        'nb = nbformat.v4.new_notebook()',
        `nb.cells = [nbformat.v4.new_code_cell('import time\\ntime.sleep(${CELL_SLEEP_SECONDS})') for _ in range(${NOTEBOOK_CELLS})]`,
        "nbformat.write(nb, 'bench.ipynb')",
      ].join('\n'),
    });
    if (made.result?.status !== 'ok') throw new Error(`making the notebook: ${made.text.slice(0, 300)}`);
    const ownMs = NOTEBOOK_CELLS * CELL_SLEEP_SECONDS * 1000;
    const durations: number[] = [];
    for (let i = 0; i < NOTEBOOK_RUNS; i++) {
      const res = await client.json('POST', `/v1/sessions/${session}/notebooks/execute`, { path: 'bench.ipynb', timeout_seconds: 120, cell_timeout_seconds: 60 });
      const body = JSON.parse(res.text) as { status?: string; duration_ms?: number };
      if (res.status !== 200 || body.status !== 'ok') throw new Error(`notebooks/execute: ${res.status} ${res.text.slice(0, 300)}`);
      durations.push(Number(body.duration_ms));
    }
    return {
      runs: NOTEBOOK_RUNS, cells: NOTEBOOK_CELLS, cells_own_ms: ownMs,
      duration: summarize(durations), overhead: summarize(durations.map((d) => round(d - ownMs))),
    };
  } finally {
    await deleteSession(client, session);
  }
}

export async function measureRich(input: PhaseInput): Promise<RichResult> {
  const { client, log } = input;
  const n = Math.max(20, Math.floor(input.n / 2));
  try {
    log(`rich: run_code of a 100-row DataFrame as HTML, ${n} runs interleaved with 1 + 1`);
    const frames = await measureDataFrame(client, n, Math.min(input.warmup, 10));
    log(`rich: notebooks/execute of ${NOTEBOOK_CELLS} cells sleeping ${CELL_SLEEP_SECONDS} s, ${NOTEBOOK_RUNS} runs`);
    const notebook = await measureNotebook(client);
    return { error: null, ...frames, notebook };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

export function richRows(r: RichResult): Row[] {
  if (r.error !== null) return [notMeasuredRow('run_code 100-row DataFrame HTML p50 ms (server-side)', `< ${RICH_TARGETS.dataFrameHtmlP50Ms} ms`, r.error)];
  const d = r.dataframe_html;
  const all = r.dataframe_html_all_rows;
  return [
    {
      metric: `run_code 100-row DataFrame → text/html p50 ms (server-side duration_ms, pandas defaults, ${d.reported.n} runs; baseline 1 + 1)`,
      service: fmt(d.reported.p50), baseline: fmt(r.plain_value.reported.p50), ratio: fmt(d.reported.p50 / r.plain_value.reported.p50),
      target: `< ${RICH_TARGETS.dataFrameHtmlP50Ms} ms`, result: verdict(d.reported.p50 < RICH_TARGETS.dataFrameHtmlP50Ms),
    },
    {
      metric: `run_code 100-row DataFrame, all 100 rows in the HTML (${all.html_chars} chars): p50 / p90 ms server-side`,
      service: `${fmt(all.reported.p50)} / ${fmt(all.reported.p90)}`, baseline: fmt(r.plain_value.reported.p50), ratio: fmt(all.reported.p50 / r.plain_value.reported.p50),
      target: `< ${RICH_TARGETS.dataFrameHtmlP50Ms} ms`, result: verdict(all.reported.p50 < RICH_TARGETS.dataFrameHtmlP50Ms),
    },
    {
      metric: 'run_code DataFrame → text/html p50 ms (pandas defaults) against pandas\' own repr() + _repr_html_() timed in the interpreter',
      service: fmt(d.reported.p50), baseline: fmt(r.pandas_own.p50), ratio: fmt(d.reported.p50 / r.pandas_own.p50), target: '-', result: 'info',
    },
    { metric: 'run_code DataFrame HTML round trip p50 / p90 ms (baseline: 1 + 1)', service: `${fmt(d.round_trip.p50)} / ${fmt(d.round_trip.p90)}`, baseline: fmt(r.plain_value.round_trip.p50), ratio: '-', target: '-', result: 'info' },
    {
      metric: `notebooks/execute overhead p50 ms over the cells' own ${r.notebook.cells_own_ms} ms (${r.notebook.cells} cells, ${r.notebook.runs} runs)`,
      service: fmt(r.notebook.overhead.p50), baseline: fmt(r.notebook.cells_own_ms), ratio: fmt(r.notebook.duration.p50 / r.notebook.cells_own_ms), target: '-', result: 'info',
    },
  ];
}

runIfMain(import.meta.url, 'rich', measureRich, richRows);
