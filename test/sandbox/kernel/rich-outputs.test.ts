// Rich outputs of the persistent interpreter, through the real sandbox with the pandas-exec
// environment: display(), the _repr_*_ protocol, DataFrames as HTML, figures as PNG, the order of
// text and displays, and the size bound.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Environment } from '../../../src/sandbox/environments.js';
import type { KernelRunOptions, PythonKernel, RichOutput } from '../../../src/sandbox/kernel/kernel.js';
import { createKernelFixture, type KernelFixture } from './helpers.js';

let fx: KernelFixture;
let pandas: Environment;
let k: PythonKernel;

const opts = (extra: Partial<KernelRunOptions> = {}): KernelRunOptions => ({ timeoutMs: 60_000, maxOutputChars: 100_000, ...extra });

beforeAll(async () => {
  fx = await createKernelFixture();
  pandas = await fx.environment('pandas-exec');
  k = fx.kernel({ environment: pandas, env: { MPLBACKEND: 'Agg' } });
}, 60_000);
afterAll(async () => fx.dispose());

/** Width and height from a PNG's IHDR, after checking the signature. */
function pngSize(base64: string): { width: number; height: number } {
  const png = Buffer.from(base64, 'base64');
  expect(png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
  expect(png.subarray(12, 16).toString('latin1')).toBe('IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

describe('rich outputs', () => {
  it('a DataFrame as the last expression is an execute_result with an HTML table; result stays its repr', async () => {
    const r = await k.run("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})\ndf", opts());
    expect(r.status, r.stderr).toBe('ok');
    expect(r.outputs).toHaveLength(1);
    const [out] = r.outputs as [RichOutput];
    expect(out.type).toBe('execute_result');
    expect(out.data['text/html']).toMatch(/<table[\s\S]*<td>x<\/td>[\s\S]*<\/table>/);
    expect(out.data['text/plain']).toBe(r.result);
    expect(r.result).toContain('a  b');
    expect(r.outputs_truncated).toBe(false);
  }, 60_000);

  it('display() needs no import; a plain value gives text/plain only', async () => {
    const r = await k.run('display(41 + 1)\nNone', opts());
    expect(r.status, r.stderr).toBe('ok');
    expect(r.outputs).toEqual([{ type: 'display_data', data: { 'text/plain': '42' } }]);
    expect(r.result).toBeNull();
  }, 60_000);

  it('a figure shown and one left open each give a PNG that decodes, and are still saved as workspace files', async () => {
    const code = [
      'import matplotlib.pyplot as plt',
      'plt.figure(figsize=(4, 3), dpi=50); plt.plot([1, 2, 3])',
      'plt.show()',
      'plt.figure(figsize=(2, 2), dpi=50); plt.bar([1], [2])',
    ].join('\n');
    const r = await k.run(code, opts());
    expect(r.status, r.stderr).toBe('ok');
    const pngs = r.outputs.filter((o) => typeof o.data['image/png'] === 'string');
    expect(pngs.map((o) => o.type)).toEqual(['display_data', 'display_data']);
    expect(pngSize(pngs[0]?.data['image/png'] as string)).toEqual({ width: 200, height: 150 });
    expect(pngSize(pngs[1]?.data['image/png'] as string)).toEqual({ width: 100, height: 100 });
    // Decoded by Python's zlib too: the image data is a valid PNG stream, not just a header.
    const check = spawnSync('/usr/bin/python3', ['-c', [
      'import base64, sys, zlib, struct',
      'png = base64.b64decode(sys.stdin.read()); i = 8; idat = b""',
      'while i < len(png):',
      '    n, t = struct.unpack(">I4s", png[i:i + 8]); idat += png[i + 8:i + 8 + n] if t == b"IDAT" else b""; i += 12 + n',
      'print(len(zlib.decompress(idat)))',
    ].join('\n')], { input: pngs[0]?.data['image/png'] as string, encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
    expect(Number(check.stdout)).toBe(150 * (1 + 200 * 4));
    const files = fs.readdirSync(fx.workspaceOf(k)).filter((f) => f.startsWith('figure-')).sort();
    expect(files).toHaveLength(2);
    const saved = fs.readFileSync(path.join(fx.workspaceOf(k), files[0] as string)).toString('base64');
    expect([pngs[0]?.data['image/png'], pngs[1]?.data['image/png']]).toContain(saved);
  }, 60_000);

  it('objects offering _repr_svg_, _repr_json_, _repr_markdown_, _repr_latex_, _repr_png_ give those types', async () => {
    const code = [
      'class Shape:',
      '    def _repr_svg_(self): return "<svg xmlns=\'http://www.w3.org/2000/svg\'/>"',
      'class Doc:',
      '    def _repr_json_(self): return {"k": [1, 2]}',
      '    def _repr_markdown_(self): return "# title"',
      '    def _repr_latex_(self): return "$x^2$"',
      '    def __repr__(self): return "Doc()"',
      'class Raw:',
      '    def _repr_png_(self): return b"\\x89PNG"',
      'display(Shape(), Doc())',
      'Raw()',
    ].join('\n');
    const r = await k.run(code, opts());
    expect(r.status, r.stderr).toBe('ok');
    expect(r.outputs).toHaveLength(3);
    expect(r.outputs[0]?.data['image/svg+xml']).toBe("<svg xmlns='http://www.w3.org/2000/svg'/>");
    expect(r.outputs[1]?.data).toEqual({ 'application/json': { k: [1, 2] }, 'text/markdown': '# title', 'text/latex': '$x^2$', 'text/plain': 'Doc()' });
    expect(r.outputs[2]?.type).toBe('execute_result');
    expect(r.outputs[2]?.data['image/png']).toBe(Buffer.from('\x89PNG', 'latin1').toString('base64'));
  }, 60_000);

  it('a representation that is not strict JSON (NaN) is left out; the interpreter lives on', async () => {
    const r = await k.run("class J:\n    def _repr_json_(self): return {'x': float('nan')}\n    def __repr__(self): return 'J()'\ndisplay(J())\nkeep = 5", opts());
    expect(r.status, r.stderr).toBe('ok');
    expect(r.outputs).toEqual([{ type: 'display_data', data: { 'text/plain': 'J()' } }]);
    expect((await k.run('keep', opts())).result).toBe('5');
  }, 60_000);

  it('print and display keep their order as they are streamed, across stdout and stderr', async () => {
    const events: string[] = [];
    const code = [
      'import sys',
      'for i in range(3):',
      '    print("out", i)',
      '    display({"n": i}, raw=False)',
      '    print("err", i, file=sys.stderr)',
      'print("last")',
      '"done"',
    ].join('\n');
    const r = await k.run(code, opts({
      onOutput: (stream, text) => events.push(`${stream}:${text}`),
      onDisplay: (o) => events.push(`${o.type}:${String(o.data['text/plain'])}`),
    }));
    expect(r.status, r.stderr).toBe('ok');
    // Each stream in order with the displays (stdout and stderr between two displays may
    // interleave either way, as they always could). Text comes in chunks of any size (every
    // write goes through unbuffered): neighbouring chunks of one stream are joined.
    const seen = (stream: string) => {
      const kept = events.filter((e) => !e.startsWith(stream === 'stdout' ? 'stderr:' : 'stdout:'));
      const joined: string[] = [];
      for (const e of kept) {
        const last = joined[joined.length - 1];
        if (last?.startsWith(`${stream}:`) && e.startsWith(`${stream}:`)) joined[joined.length - 1] = last + e.slice(stream.length + 1);
        else joined.push(e);
      }
      return joined.join('|');
    };
    expect(seen('stdout')).toBe("stdout:out 0\n|display_data:{'n': 0}|stdout:out 1\n|display_data:{'n': 1}|stdout:out 2\n|display_data:{'n': 2}|stdout:last\n|execute_result:'done'");
    expect(seen('stderr')).toBe("display_data:{'n': 0}|stderr:err 0\n|display_data:{'n': 1}|stderr:err 1\n|display_data:{'n': 2}|stderr:err 2\n|execute_result:'done'");
    expect(r.stdout).toBe('out 0\nout 1\nout 2\nlast\n');
  }, 60_000);

  it('outputs past MAX_OUTPUT_CHARS in all are dropped with outputs_truncated, the earlier ones kept', async () => {
    const r = await k.run('for i in range(10):\n    display({"text/html": "x" * 3000}, raw=True)\nprint("after")', opts({ maxOutputChars: 10_000 }));
    expect(r.status, r.stderr).toBe('ok');
    expect(r.outputs).toHaveLength(3);
    expect(r.outputs_truncated).toBe(true);
    expect(r.stdout).toBe('after\n');
    const next = await k.run('display("small")', opts({ maxOutputChars: 10_000 }));
    expect(next.outputs).toHaveLength(1);
    expect(next.outputs_truncated).toBe(false);
  }, 60_000);

  it('outputs made before an error are kept; a broken _repr_html_ falls back to text', async () => {
    const code = 'class Bad:\n    def _repr_html_(self): raise ValueError("no")\n    def __repr__(self): return "Bad()"\ndisplay(Bad())\n1 / 0';
    const r = await k.run(code, opts());
    expect(r.status).toBe('error');
    expect(r.outputs).toEqual([{ type: 'display_data', data: { 'text/plain': 'Bad()' } }]);
    expect(r.stderr).toContain('_repr_html_ failed');
  }, 60_000);

  it('IPython.display (in the jupyter environment) makes rich outputs instead of printing repr', async () => {
    const jk = fx.kernel({ environment: await fx.environment('jupyter') });
    const r = await jk.run("from IPython.display import display, HTML, Markdown\ndisplay(HTML('<b>bold</b>'), Markdown('*it*'))", opts());
    expect(r.status, r.stderr).toBe('ok');
    expect(r.stdout).toBe('');
    expect(r.outputs.map((o) => [o.data['text/html'], o.data['text/markdown']])).toEqual([['<b>bold</b>', undefined], [undefined, '*it*']]);
  }, 60_000);
});
