// Issue 10, resource amplification: a sandbox decides how many files it makes and how long their
// paths are, so the change lists of an execution result (execute, one-shot, run_code, streamed)
// and each page of the file listing are capped in paths and bytes (MAX_CHANGED_FILES*,
// MAX_LIST_*). Real sandbox, through app.inject.
import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import {
  EXECUTION_RESULT_KEYS, RUN_CODE_RESULT_KEYS, createSession, execute, expectError,
  type ExecutionResultBody, type FileListBody, type OneShotResultBody, type RunCodeResultBody,
} from '../helpers/http.js';

const bytes = (paths: string[]): number => paths.reduce((n, p) => n + Buffer.byteLength(p), 0);
const changed = (r: ExecutionResultBody): string[] => [...r.files.created, ...r.files.modified, ...r.files.deleted];
const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));
const sorted = (paths: string[]): string[] => [...paths].sort(byteOrder);
/** `n` empty files dir/f001.txt ... */
const makeFiles = (dir: string, n: number) => ({ command: `mkdir -p ${dir} && for i in $(seq -w 001 ${n}); do : > ${dir}/f$i.txt; done` });
const names = (dir: string, from: number, to: number): string[] =>
  Array.from({ length: to - from + 1 }, (_, i) => `${dir}/f${String(from + i).padStart(3, '0')}.txt`);

/** Follows `next` until null; every page is checked against the page caps. */
async function listAll(app: FastifyInstance, id: string, caps: { files: number; bytes: number }, query = ''): Promise<{ paths: string[]; pages: number }> {
  const paths: string[] = [];
  let pages = 0;
  let cursor: string | null = null;
  do {
    const sep = query === '' ? '?' : `?${query}&`;
    const url: string = `/v1/sessions/${id}/files${cursor === null ? (query === '' ? '' : `?${query}`) : `${sep}cursor=${encodeURIComponent(cursor)}`}`;
    const res = await app.inject({ method: 'GET', url });
    expect(res.statusCode, res.body).toBe(200);
    const page = res.json<FileListBody>();
    expect(Object.keys(page).sort()).toEqual(['files', 'next']);
    expect(page.files.length).toBeLessThanOrEqual(caps.files);
    expect(bytes(page.files.map((f) => f.path))).toBeLessThanOrEqual(caps.bytes);
    if (page.next !== null) expect(page.files.length).toBeGreaterThan(0);
    paths.push(...page.files.map((f) => f.path));
    cursor = page.next;
    pages += 1;
    expect(pages).toBeLessThan(1000);
  } while (cursor !== null);
  return { paths, pages };
}

// Changes are learnt from the kernel (fanotify, when the host allows it) or by scanning: both are capped.
describe.each(['auto', 'off'])('small caps: MAX_CHANGED_FILES=50, MAX_LIST_FILES=40 (CHANGE_TRACKING=%s)', (tracking) => {
  const t = useTestApp({ MAX_CHANGED_FILES: '50', MAX_LIST_FILES: '40', MAX_OUTPUT_FILES: '5', CHANGE_TRACKING: tracking });

  it('an execution that creates more files lists the first 50 in byte order and says files_truncated', async () => {
    await createSession(t.app, { session_id: 'caps-create' });
    const r = await execute(t.app, 'caps-create', makeFiles('d', 200));
    expect(r.status).toBe('ok');
    expect(Object.keys(r).sort()).toEqual(EXECUTION_RESULT_KEYS);
    expect(r.files_truncated).toBe(true);
    expect(r.files).toEqual({ created: names('d', 1, 50), modified: [], deleted: [] });
  });

  it('an execution under the caps says files_truncated false', async () => {
    await createSession(t.app, { session_id: 'caps-under' });
    const r = await execute(t.app, 'caps-under', makeFiles('d', 50));
    expect(r.files_truncated).toBe(false);
    expect(r.files.created).toEqual(names('d', 1, 50));
    const none = await execute(t.app, 'caps-under', { command: 'true' });
    expect(none.files_truncated).toBe(false);
    expect(changed(none)).toEqual([]);
  });

  it('created, modified and deleted count together: the first 50 changed paths, each in its list', async () => {
    await createSession(t.app, { session_id: 'caps-mixed' });
    await execute(t.app, 'caps-mixed', makeFiles('d', 60));
    // deleted d/f001..020, modified d/f021..040, created d/g001..040: 80 changes in all
    const r = await execute(t.app, 'caps-mixed', {
      command: 'rm d/f00?.txt d/f01?.txt d/f020.txt && for i in $(seq -w 021 040); do echo more >> d/f$i.txt; done; for i in $(seq -w 001 040); do : > d/g$i.txt; done',
    });
    expect(r.status, r.stderr).toBe('ok');
    expect(r.files_truncated).toBe(true);
    expect(r.files.deleted).toEqual(names('d', 1, 20));
    expect(r.files.modified).toEqual(names('d', 21, 40));
    expect(r.files.created).toEqual(Array.from({ length: 10 }, (_, i) => `d/g${String(i + 1).padStart(3, '0')}.txt`));
  });

  it('deleted files are capped too', async () => {
    await createSession(t.app, { session_id: 'caps-delete' });
    await execute(t.app, 'caps-delete', makeFiles('d', 200));
    const r = await execute(t.app, 'caps-delete', { command: 'rm -r d' });
    expect(r.files_truncated).toBe(true);
    expect(r.files).toEqual({ created: [], modified: [], deleted: names('d', 1, 50) });
  });

  it('run_code results are capped', async () => {
    await createSession(t.app, { session_id: 'caps-kernel' });
    const res = await t.app.inject({
      method: 'POST', url: '/v1/sessions/caps-kernel/run_code',
      payload: { code: 'import os\nos.makedirs("k")\nfor i in range(1, 101):\n    open(f"k/f{i:03d}.txt", "w").close()' },
    });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<RunCodeResultBody>();
    expect(Object.keys(r).sort()).toEqual(RUN_CODE_RESULT_KEYS);
    expect(r.status).toBe('ok');
    expect(r.files_truncated).toBe(true);
    expect(r.files).toEqual({ created: names('k', 1, 50), modified: [], deleted: [] });
  });

  it('one-shot results are capped, and so are outputs and outputs_omitted', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: makeFiles('d', 300) });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<OneShotResultBody>();
    expect(r.files_truncated).toBe(true);
    expect(r.files.created).toEqual(names('d', 1, 50));
    expect(r.files.outputs.length).toBe(5);
    expect(r.files.outputs_omitted.length).toBe(45);
    expect(sorted([...r.files.outputs.map((o) => o.path), ...r.files.outputs_omitted])).toEqual(names('d', 1, 50));
  });

  it('the streamed result is capped like the plain one', async () => {
    await createSession(t.app, { session_id: 'caps-stream' });
    const res = await t.app.inject({
      method: 'POST', url: '/v1/sessions/caps-stream/execute', headers: { accept: 'application/x-ndjson' }, payload: makeFiles('d', 200),
    });
    expect(res.statusCode, res.body).toBe(200);
    const last = res.body.trim().split('\n').pop() ?? '';
    const result = JSON.parse(last) as ExecutionResultBody & { type: string };
    expect(result.type).toBe('result');
    expect(result.files_truncated).toBe(true);
    expect(result.files).toEqual({ created: names('d', 1, 50), modified: [], deleted: [] });
  });

  it('the listing pages through every file exactly once, in byte order', async () => {
    await createSession(t.app, { session_id: 'caps-list' });
    await execute(t.app, 'caps-list', makeFiles('d', 200));
    await execute(t.app, 'caps-list', makeFiles('a/b', 3));
    const all = [...names('a/b', 1, 3), ...names('d', 1, 200)];

    const full = await listAll(t.app, 'caps-list', { files: 40, bytes: 1 << 20 });
    expect(full.paths).toEqual(all);
    expect(full.pages).toBe(Math.ceil(all.length / 40));

    const small = await listAll(t.app, 'caps-list', { files: 7, bytes: 1 << 20 }, 'limit=7');
    expect(small.paths).toEqual(all);
    expect(small.pages).toBe(Math.ceil(all.length / 7));

    // a limit above MAX_LIST_FILES is served as MAX_LIST_FILES
    const big = (await t.app.inject({ method: 'GET', url: '/v1/sessions/caps-list/files?limit=100000' })).json<FileListBody>();
    expect(big.files.length).toBe(40);
    expect(big.next).not.toBeNull();
  });

  it('a page that ends exactly at the last file has next null', async () => {
    await createSession(t.app, { session_id: 'caps-exact' });
    await execute(t.app, 'caps-exact', makeFiles('d', 80));
    const first = (await t.app.inject({ method: 'GET', url: '/v1/sessions/caps-exact/files' })).json<FileListBody>();
    expect(first.files.map((f) => f.path)).toEqual(names('d', 1, 40));
    expect(first.next).not.toBeNull();
    const second = (await t.app.inject({ method: 'GET', url: `/v1/sessions/caps-exact/files?cursor=${first.next ?? ''}` })).json<FileListBody>();
    expect(second.files.map((f) => f.path)).toEqual(names('d', 41, 80));
    expect(second.next).toBeNull();
  });

  it('a cursor still resumes after its path once that file is gone', async () => {
    await createSession(t.app, { session_id: 'caps-gone' });
    await execute(t.app, 'caps-gone', makeFiles('d', 60));
    const first = (await t.app.inject({ method: 'GET', url: '/v1/sessions/caps-gone/files?limit=10' })).json<FileListBody>();
    expect(first.files.map((f) => f.path)).toEqual(names('d', 1, 10));
    await execute(t.app, 'caps-gone', { command: 'rm d/f010.txt d/f011.txt' });
    const next = (await t.app.inject({ method: 'GET', url: `/v1/sessions/caps-gone/files?limit=10&cursor=${first.next ?? ''}` })).json<FileListBody>();
    expect(next.files.map((f) => f.path)).toEqual(names('d', 12, 21));
  });

  it('a bad cursor or limit is 400', async () => {
    await createSession(t.app, { session_id: 'caps-bad' });
    const url = '/v1/sessions/caps-bad/files';
    const b64 = (s: string) => Buffer.from(s).toString('base64url');
    for (const cursor of ['!!!', '', 'a b', b64('../etc/passwd'), b64('/abs'), b64('a//b'), `${b64('ok.txt')}=`, Buffer.from([0xff, 0xfe]).toString('base64url')]) {
      const body = expectError(await t.app.inject({ method: 'GET', url: `${url}?cursor=${encodeURIComponent(cursor)}` }), 400, 'INVALID_CURSOR');
      expect(body.message).toMatch(/cursor/);
    }
    expectError(await t.app.inject({ method: 'GET', url: `${url}?cursor=${'a'.repeat(3000)}` }), 400);
    expectError(await t.app.inject({ method: 'GET', url: `${url}?limit=0` }), 400, 'FST_ERR_VALIDATION');
    expectError(await t.app.inject({ method: 'GET', url: `${url}?limit=x` }), 400, 'FST_ERR_VALIDATION');
    expectError(await t.app.inject({ method: 'GET', url: `${url}?page=2` }), 400, 'FST_ERR_VALIDATION');
  });
});

describe('byte caps with long paths (default MAX_CHANGED_FILES_BYTES of 256 KiB, MAX_LIST_BYTES=64 KiB)', () => {
  const t = useTestApp({ MAX_LIST_BYTES: String(64 * 1024) });
  const COUNT = 3000;
  // Three 250-byte directories and a 145-byte name: 898-byte paths.
  const DIR = ['a', 'b', 'c'].map((c) => c.repeat(250)).join('/');
  const PATH_BYTES = DIR.length + 1 + 145;
  const all = Array.from({ length: COUNT }, (_, i) => `${DIR}/${String(i).padStart(5, '0')}${'x'.repeat(140)}`);
  const script = `import os\nd = ${JSON.stringify(DIR)}\nos.makedirs(d)\nfor i in range(${COUNT}):\n    open(f"{d}/{i:05d}" + "x" * 140, "w").close()\n`;

  it(`creating ${COUNT} files with ${PATH_BYTES}-byte paths lists as many as fit in 256 KiB`, async () => {
    await createSession(t.app, { session_id: 'long' });
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/long/execute', payload: { script } });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<ExecutionResultBody>();
    expect(r.status, r.stderr).toBe('ok');
    expect(r.files_truncated).toBe(true);
    expect(r.files.created).toEqual(all.slice(0, Math.floor((256 * 1024) / PATH_BYTES)));
    expect(bytes(changed(r))).toBeLessThanOrEqual(256 * 1024);
    expect(res.body.length).toBeLessThan(256 * 1024 + 8 * 1024);
  });

  it('the listing of them pages within 64 KiB of paths per page and covers every file once', async () => {
    const { paths, pages } = await listAll(t.app, 'long', { files: 1000, bytes: 64 * 1024 });
    expect(paths).toEqual(all);
    expect(pages).toBe(Math.ceil(COUNT / Math.floor((64 * 1024) / PATH_BYTES)));
  });

  it('deleting them lists as many as fit in 256 KiB', async () => {
    const r = await execute(t.app, 'long', { command: 'rm -r aaa*' });
    expect(r.files_truncated).toBe(true);
    expect(r.files.deleted).toEqual(all.slice(0, Math.floor((256 * 1024) / PATH_BYTES)));
    expect(r.files.created).toEqual([]);
  });
});
