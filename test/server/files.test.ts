// Files in a session through the HTTP routes: upload (staged, all or nothing), list, download,
// delete, and links/FIFOs that code in the sandbox planted.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { useTestApp, multipartBody } from '../helpers/app.js';
import {
  ISO_UTC, createSession, execute, expectError, listPaths, upload, type FileListBody,
} from '../helpers/http.js';

const MAX_UPLOAD = 1000;
const t = useTestApp({ MAX_UPLOAD_SIZE_BYTES: String(MAX_UPLOAD) });

function stagingEntries(): string[] {
  return fs.readdirSync(path.join(t.workspaceDir, 'staging'));
}

describe('upload', () => {
  it('stores one file: 201 with its path and size, bytes on disk', async () => {
    await createSession(t.app, { session_id: 'up-1' });
    const res = await upload(t.app, 'up-1', [{ name: 'data.csv', content: 'a,b\n1,2\n' }]);
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json()).toEqual({ files: [{ path: 'data.csv', size: 8 }] });
    expect(fs.readFileSync(path.join(t.sessions.workspaceDir('up-1'), 'data.csv'), 'utf8')).toBe('a,b\n1,2\n');
    // The staging directory of a successful request is cleaned up just after the answer.
    await vi.waitFor(() => expect(stagingEntries()).toEqual([]), { timeout: 2000 });
  });

  it('stores several files of one request', async () => {
    await createSession(t.app, { session_id: 'up-many' });
    const res = await upload(t.app, 'up-many', [
      { name: 'one.txt', content: '1' },
      { name: 'two.json', content: '{"a":2}' },
      { name: 'three.md', content: '# three\n' },
    ]);
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json()).toEqual({ files: [{ path: 'one.txt', size: 1 }, { path: 'two.json', size: 7 }, { path: 'three.md', size: 8 }] });
    expect(await listPaths(t.app, 'up-many')).toEqual(['one.txt', 'three.md', 'two.json']);
  });

  it('puts files under the `dir` query, creating it', async () => {
    await createSession(t.app, { session_id: 'up-dir' });
    const res = await upload(t.app, 'up-dir', [{ name: 'x.csv', content: 'x\n' }], '?dir=in/raw');
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json()).toEqual({ files: [{ path: 'in/raw/x.csv', size: 2 }] });
    const ws = t.sessions.workspaceDir('up-dir');
    expect(fs.statSync(path.join(ws, 'in', 'raw')).isDirectory()).toBe(true);
    expect(fs.readFileSync(path.join(ws, 'in', 'raw', 'x.csv'), 'utf8')).toBe('x\n');
    // The sandbox can use what the host created.
    const r = await execute(t.app, 'up-dir', { command: 'cat in/raw/x.csv && echo y > in/raw/y.txt && cat in/raw/y.txt' });
    expect(r.stdout).toBe('x\ny\n');
  });

  it('stores a file by the basename of its filename, whatever separators it has', async () => {
    await createSession(t.app, { session_id: 'up-base' });
    const res = await upload(t.app, 'up-base', [
      { name: 'a/b/c.csv', content: 'c' },
      { name: '..\\..\\x.csv', content: 'x' },
      { name: '../../../../etc/y.txt', content: 'y' },
    ]);
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json<{ files: { path: string }[] }>().files.map((f) => f.path)).toEqual(['c.csv', 'x.csv', 'y.txt']);
    expect(await listPaths(t.app, 'up-base')).toEqual(['c.csv', 'x.csv', 'y.txt']);
    const ws = t.sessions.workspaceDir('up-base');
    expect(fs.readdirSync(ws).sort()).toEqual(['c.csv', 'x.csv', 'y.txt']);
    expect(fs.existsSync(path.join(ws, '..', 'x.csv'))).toBe(false);
    expect(fs.existsSync(path.resolve(ws, '../../../../etc/y.txt'))).toBe(false);
  });

  it('compares the extension case-insensitively', async () => {
    await createSession(t.app, { session_id: 'up-case' });
    const res = await upload(t.app, 'up-case', [{ name: 'DATA.CSV', content: '1' }, { name: 'notes.Md', content: '2' }]);
    expect(res.statusCode, res.body).toBe(201);
    expect(await listPaths(t.app, 'up-case')).toEqual(['DATA.CSV', 'notes.Md']);
  });

  it('replaces an existing file of the same name', async () => {
    await createSession(t.app, { session_id: 'up-replace' });
    expect((await upload(t.app, 'up-replace', [{ name: 'r.txt', content: 'old content' }])).statusCode).toBe(201);
    expect((await upload(t.app, 'up-replace', [{ name: 'r.txt', content: 'new' }])).statusCode).toBe(201);
    expect((await t.app.inject({ method: 'GET', url: '/v1/sessions/up-replace/files/r.txt' })).body).toBe('new');
  });

  it('413 UPLOAD_TOO_LARGE when the request total exceeds the limit, and neither file is kept', async () => {
    await createSession(t.app, { session_id: 'up-big' });
    expect((await upload(t.app, 'up-big', [{ name: 'before.txt', content: 'b' }])).statusCode).toBe(201);
    const res = await upload(t.app, 'up-big', [
      { name: 'first.csv', content: 'a'.repeat(600) },
      { name: 'second.csv', content: 'b'.repeat(600) },
    ]);
    const body = expectError(res, 413, 'UPLOAD_TOO_LARGE');
    expect(body.message).toContain(String(MAX_UPLOAD));
    expect(await listPaths(t.app, 'up-big')).toEqual(['before.txt']);
    expect(fs.readdirSync(t.sessions.workspaceDir('up-big'))).toEqual(['before.txt']);
    expect(stagingEntries()).toEqual([]);
    // One file over the limit on its own, too.
    expectError(await upload(t.app, 'up-big', [{ name: 'huge.csv', content: 'c'.repeat(MAX_UPLOAD + 1) }]), 413, 'UPLOAD_TOO_LARGE');
    expect(await listPaths(t.app, 'up-big')).toEqual(['before.txt']);
    expect(stagingEntries()).toEqual([]);
    // Exactly the limit is fine.
    const ok = await upload(t.app, 'up-big', [{ name: 'p1.csv', content: 'a'.repeat(500) }, { name: 'p2.csv', content: 'a'.repeat(500) }]);
    expect(ok.statusCode, ok.body).toBe(201);
  });

  it('415 EXTENSION_NOT_ALLOWED for a disallowed extension next to an allowed one, nothing kept', async () => {
    await createSession(t.app, { session_id: 'up-ext' });
    const res = await upload(t.app, 'up-ext', [{ name: 'good.csv', content: 'ok' }, { name: 'evil.sh', content: 'rm -rf /' }]);
    const body = expectError(res, 415, 'EXTENSION_NOT_ALLOWED');
    expect(body.message).toContain('evil.sh');
    expect(await listPaths(t.app, 'up-ext')).toEqual([]);
    expect(stagingEntries()).toEqual([]);
    for (const name of ['noext', '.csv', 'archive.csv.exe', 'x.CSVX']) {
      expectError(await upload(t.app, 'up-ext', [{ name, content: 'z' }]), 415, 'EXTENSION_NOT_ALLOWED');
    }
    expect(await listPaths(t.app, 'up-ext')).toEqual([]);
  });

  it('400 INVALID_PATH for a `dir` that escapes or is absolute, nothing written', async () => {
    await createSession(t.app, { session_id: 'up-baddir' });
    for (const dir of ['../x', '/abs', 'a/../../b', 'a\\b', '..']) {
      // (That the message names `dir` is checked in bad-input.test.ts.)
      const body = expectError(await upload(t.app, 'up-baddir', [{ name: 'f.csv', content: 'f' }], `?dir=${encodeURIComponent(dir)}`), 400, 'INVALID_PATH');
      expect(body.message).not.toContain(t.workspaceDir);
    }
    expect(fs.existsSync(path.join(t.sessions.workspaceDir('up-baddir'), '..', 'x'))).toBe(false);
    expect(fs.existsSync('/abs')).toBe(false);
    expect(await listPaths(t.app, 'up-baddir')).toEqual([]);
  });

  it('400 when the multipart request has no file part', async () => {
    await createSession(t.app, { session_id: 'up-nofile' });
    const boundary = 'xyzzy';
    const payload = `--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\njust a field\r\n--${boundary}--\r\n`;
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/up-nofile/files', payload, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } });
    expectError(res, 400);
    const empty = await t.app.inject({ method: 'POST', url: '/v1/sessions/up-nofile/files', payload: `--${boundary}--\r\n`, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } });
    expectError(empty, 400);
    expect(await listPaths(t.app, 'up-nofile')).toEqual([]);
  });

  it('404 SESSION_NOT_FOUND for an upload to an unknown session', async () => {
    expectError(await upload(t.app, 'no-such-session', [{ name: 'a.csv', content: 'a' }]), 404, 'SESSION_NOT_FOUND');
  });
});

describe('list, download, delete', () => {
  beforeAll(async () => {
    await createSession(t.app, { session_id: 'fs' });
    expect((await upload(t.app, 'fs', [{ name: 'b.csv', content: 'bb' }, { name: 'a.txt', content: 'a' }])).statusCode).toBe(201);
    expect((await upload(t.app, 'fs', [{ name: 'z.json', content: '{}' }], '?dir=sub')).statusCode).toBe(201);
    expect((await upload(t.app, 'fs', [{ name: 'c.md', content: 'ccc' }], '?dir=sub/deeper')).statusCode).toBe(201);
  });

  it('lists every regular file recursively, sorted by path, with size and modified_at', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions/fs/files' });
    expect(res.statusCode).toBe(200);
    const { files } = res.json<FileListBody>();
    expect(files.map((f) => [f.path, f.size])).toEqual([
      ['a.txt', 1], ['b.csv', 2], ['sub/deeper/c.md', 3], ['sub/z.json', 2],
    ]);
    for (const f of files) {
      expect(f.modified_at).toMatch(ISO_UTC);
      expect(Math.abs(Date.parse(f.modified_at) - Date.now())).toBeLessThan(60_000);
    }
  });

  it('lists files written by code in the sandbox', async () => {
    await execute(t.app, 'fs', { command: 'mkdir -p gen && printf 12345 > gen/out.bin' });
    const { files } = (await t.app.inject({ method: 'GET', url: '/v1/sessions/fs/files' })).json<FileListBody>();
    expect(files.find((f) => f.path === 'gen/out.bin')?.size).toBe(5);
  });

  it('downloads the exact bytes as an attachment', async () => {
    await createSession(t.app, { session_id: 'dl' });
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    expect((await upload(t.app, 'dl', [{ name: 'all-bytes.txt', content: bytes }], '?dir=bin')).statusCode).toBe(201);
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions/dl/files/bin/all-bytes.txt' });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(bytes)).toBe(true);
    expect(res.headers['content-type']).toBe('application/octet-stream');
    expect(String(res.headers['content-disposition'])).toMatch(/^attachment;/);
    expect(String(res.headers['content-disposition'])).toContain('all-bytes.txt');
    expect(Number(res.headers['content-length'])).toBe(256);
  });

  it('uploads and downloads a file whose name has spaces and non-ASCII characters', async () => {
    await createSession(t.app, { session_id: 'dl-name' });
    const name = 'my data ü.csv';
    expect((await upload(t.app, 'dl-name', [{ name, content: 'ü,1\n' }])).statusCode).toBe(201);
    expect(await listPaths(t.app, 'dl-name')).toEqual([name]);
    const res = await t.app.inject({ method: 'GET', url: `/v1/sessions/dl-name/files/${encodeURIComponent(name)}` });
    expect(res.statusCode).toBe(200);
    expect(res.body).toBe('ü,1\n');
    expect(String(res.headers['content-disposition'])).toMatch(/^attachment;/);
    expect(String(res.headers['content-disposition'])).toContain(encodeURIComponent(name));
  });

  it('downloads a file written by the sandbox', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions/fs/files/gen/out.bin' });
    expect(res.statusCode).toBe(200);
    expect(res.body).toBe('12345');
  });

  it('404 FILE_NOT_FOUND for a missing file and for a directory', async () => {
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/fs/files/nope.txt' }), 404, 'FILE_NOT_FOUND');
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/fs/files/missing/dir/nope.txt' }), 404, 'FILE_NOT_FOUND');
    const dir = await t.app.inject({ method: 'GET', url: '/v1/sessions/fs/files/sub' });
    expect([400, 404]).toContain(dir.statusCode);
    expectError(dir, dir.statusCode);
  });

  it('deletes a file: 204, then 404 FILE_NOT_FOUND', async () => {
    const res = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/fs/files/sub/z.json' });
    expect(res.statusCode).toBe(204);
    expect(fs.existsSync(path.join(t.sessions.workspaceDir('fs'), 'sub', 'z.json'))).toBe(false);
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/fs/files/sub/z.json' }), 404, 'FILE_NOT_FOUND');
    expectError(await t.app.inject({ method: 'DELETE', url: '/v1/sessions/fs/files/sub/z.json' }), 404, 'FILE_NOT_FOUND');
    expect(await listPaths(t.app, 'fs')).not.toContain('sub/z.json');
    expect(await listPaths(t.app, 'fs')).toContain('sub/deeper/c.md');
  });

  it('404 SESSION_NOT_FOUND for files of an unknown session', async () => {
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/ghost/files' }), 404, 'SESSION_NOT_FOUND');
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/ghost/files/a.txt' }), 404, 'SESSION_NOT_FOUND');
    expectError(await t.app.inject({ method: 'DELETE', url: '/v1/sessions/ghost/files/a.txt' }), 404, 'SESSION_NOT_FOUND');
  });
});

describe('links and special files planted by the sandbox', () => {
  // Writes and deletes that a bug could send through a link aim at a host temp dir, never at
  // /etc; only reads and uniquely named uploads (cleaned up below) go through the /etc link.
  const marker = `bubble-probe-${randomBytes(6).toString('hex')}.txt`;
  const markerDir = `bubble-probe-dir-${randomBytes(6).toString('hex')}`;
  let victimDir: string;
  let victim: string;
  let shadowBefore: Buffer;

  beforeAll(async () => {
    victimDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-victim-'));
    victim = path.join(victimDir, 'victim.txt');
    fs.writeFileSync(victim, 'host secret\n');
    shadowBefore = fs.readFileSync('/etc/shadow');
    await createSession(t.app, { session_id: 'links' });
    const r = await execute(t.app, 'links', {
      command: `ln -s /etc/shadow leak.txt; ln -s /etc d; mkfifo pipe.txt; ln -s ${victim} victim.txt; ln -s ${victimDir} vd; echo fine > real.txt`,
    });
    expect(r.status, r.stderr).toBe('ok');
  });
  afterAll(() => {
    fs.rmSync(victimDir, { recursive: true, force: true });
    fs.rmSync(path.join('/etc', marker), { force: true });
    fs.rmSync(path.join('/etc', markerDir), { recursive: true, force: true });
  });

  it('never serves the target of a planted link', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions/links/files/leak.txt' });
    expectError(res, 404, 'FILE_NOT_FOUND');
    expect(res.body).not.toContain('root:');
    const victimRes = await t.app.inject({ method: 'GET', url: '/v1/sessions/links/files/victim.txt' });
    expectError(victimRes, 404, 'FILE_NOT_FOUND');
    expect(victimRes.body).not.toContain('host secret');
  });

  it('never walks through a planted directory link', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions/links/files/d/passwd' });
    expectError(res, 404, 'FILE_NOT_FOUND');
    expect(res.body).not.toContain('root:');
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/links/files/vd/victim.txt' }), 404, 'FILE_NOT_FOUND');
  });

  it('answers a download of a FIFO promptly with 404', async () => {
    const started = Date.now();
    const res = await Promise.race([
      t.app.inject({ method: 'GET', url: '/v1/sessions/links/files/pipe.txt' }),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('download of a FIFO hung')), 5000)),
    ]);
    expectError(res, 404, 'FILE_NOT_FOUND');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('lists neither links, FIFOs nor anything behind a directory link', async () => {
    const paths = await listPaths(t.app, 'links');
    expect(paths).toEqual(['real.txt']);
    expect(paths.some((p) => p.startsWith('d/') || p.startsWith('vd/'))).toBe(false);
  });

  it('refuses an upload into a directory link (400) and writes nothing to its target', async () => {
    const etcBefore = new Set(fs.readdirSync('/etc'));
    const res = await upload(t.app, 'links', [{ name: marker, content: 'owned' }], '?dir=d');
    expectError(res, 400);
    const nested = await upload(t.app, 'links', [{ name: marker, content: 'owned' }], `?dir=d/${markerDir}`);
    expectError(nested, 400);
    expect(fs.existsSync(path.join('/etc', marker))).toBe(false);
    expect(fs.existsSync(path.join('/etc', markerDir))).toBe(false);
    expect([...fs.readdirSync('/etc')].filter((n) => !etcBefore.has(n))).toEqual([]);
    const toVictimDir = await upload(t.app, 'links', [{ name: 'planted.txt', content: 'owned' }], '?dir=vd');
    expectError(toVictimDir, 400);
    expect(fs.readdirSync(victimDir)).toEqual(['victim.txt']);
  });

  it('an upload over a file link replaces the link, never writes its target', async () => {
    const res = await upload(t.app, 'links', [{ name: 'victim.txt', content: 'overwritten?' }]);
    expect(res.statusCode, res.body).toBe(201);
    expect(fs.readFileSync(victim, 'utf8')).toBe('host secret\n');
    const st = fs.lstatSync(path.join(t.sessions.workspaceDir('links'), 'victim.txt'));
    expect(st.isFile()).toBe(true);
    expect((await t.app.inject({ method: 'GET', url: '/v1/sessions/links/files/victim.txt' })).body).toBe('overwritten?');
  });

  it('deleting a link removes the link only', async () => {
    const res = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/links/files/leak.txt' });
    expect(res.statusCode).toBe(204);
    expect(fs.existsSync(path.join(t.sessions.workspaceDir('links'), 'leak.txt'))).toBe(false);
    expect(fs.lstatSync(path.join(t.sessions.workspaceDir('links'), 'd')).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync('/etc/shadow').equals(shadowBefore)).toBe(true);
    expectError(await t.app.inject({ method: 'DELETE', url: '/v1/sessions/links/files/vd/victim.txt' }), 404, 'FILE_NOT_FOUND');
    expect(fs.readFileSync(victim, 'utf8')).toBe('host secret\n');
    expect(fs.readdirSync(victimDir)).toEqual(['victim.txt']);
    // A link to a directory is removed as a link.
    expect((await t.app.inject({ method: 'DELETE', url: '/v1/sessions/links/files/d' })).statusCode).toBe(204);
    expect(fs.existsSync(path.join(t.sessions.workspaceDir('links'), 'd'))).toBe(false);
    expect(fs.existsSync('/etc/passwd')).toBe(true);
  });

  it('deleting the session removes planted links without touching their targets', async () => {
    expect((await t.app.inject({ method: 'DELETE', url: '/v1/sessions/links' })).statusCode).toBe(204);
    expect(fs.existsSync(t.sessions.workspaceDir('links'))).toBe(false);
    expect(fs.readFileSync('/etc/shadow').equals(shadowBefore)).toBe(true);
    expect(fs.readFileSync(victim, 'utf8')).toBe('host secret\n');
    expect(fs.existsSync('/etc/passwd')).toBe(true);
  });
});

describe('multipart edge cases', () => {
  it('ignores non-file fields next to file parts', async () => {
    await createSession(t.app, { session_id: 'mp-fields' });
    const boundary = 'b0undary';
    const file = multipartBody([{ name: 'f.txt', content: 'file' }], boundary).payload.toString();
    const payload = `--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n${file}`;
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/mp-fields/files', payload, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } });
    expect(res.statusCode, res.body).toBe(201);
    expect(await listPaths(t.app, 'mp-fields')).toEqual(['f.txt']);
  });
});
