// Every route against bad input, as a table: always a 4xx (never a 5xx), always the contract's
// error shape, the field named where there is one, and never a host path in the message.
import fs from 'node:fs';
import path from 'node:path';
import type { InjectOptions } from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import { useTestApp, multipartBody } from '../helpers/app.js';
import { createSession, expectError, upload } from '../helpers/http.js';

interface Row {
  name: string;
  opts: InjectOptions;
  /** The exact status the contract calls for, or just "some 4xx" where several are fair. */
  status: number | '4xx';
  code?: string;
  /** A word the message must contain (the field at fault). */
  field?: string;
}

const MiB = 1024 * 1024;
const t = useTestApp({ MAX_UPLOAD_SIZE_BYTES: '1000' });
beforeAll(async () => {
  await createSession(t.app, { session_id: 's' });
  expect((await upload(t.app, 's', [{ name: 'f.txt', content: 'keep me' }])).statusCode).toBe(201);
  // A directory whose name looks like a file, for the rows that aim a file operation at a directory.
  expect((await upload(t.app, 's', [{ name: 'inner.txt', content: 'x' }], '?dir=folder.txt')).statusCode).toBe(201);
});

const json = (method: 'POST' | 'GET' | 'DELETE', url: string, payload: unknown): InjectOptions => ({ method, url, payload: payload as NonNullable<InjectOptions['payload']> });
const raw = (url: string, payload: string, contentType = 'application/json'): InjectOptions => ({ method: 'POST', url, payload, headers: { 'content-type': contentType } });
const get = (url: string): InjectOptions => ({ method: 'GET', url });
const del = (url: string): InjectOptions => ({ method: 'DELETE', url });
const mp = (url: string, files: { name: string; content: string }[]): InjectOptions => {
  const body = multipartBody(files);
  return { method: 'POST', url, payload: body.payload, headers: body.headers };
};
const exec = (payload: unknown): InjectOptions => json('POST', '/v1/sessions/s/execute', payload);
const oneshot = (payload: unknown): InjectOptions => json('POST', '/v1/execute', payload);

const rows: Row[] = [
  // POST /v1/sessions
  { name: 'create: malformed JSON', opts: raw('/v1/sessions', '{"session_id":'), status: 400 },
  { name: 'create: JSON array body', opts: raw('/v1/sessions', '[]'), status: 400 },
  { name: 'create: JSON string body', opts: raw('/v1/sessions', '"x"'), status: 400 },
  { name: 'create: session_id of the wrong type', opts: json('POST', '/v1/sessions', { session_id: 123 }), status: 400, field: 'session_id' },
  { name: 'create: session_id of 65 characters', opts: json('POST', '/v1/sessions', { session_id: 'a'.repeat(65) }), status: 400, field: 'session_id' },
  { name: 'create: empty session_id', opts: json('POST', '/v1/sessions', { session_id: '' }), status: 400, field: 'session_id' },
  { name: 'create: traversal in session_id', opts: json('POST', '/v1/sessions', { session_id: '../etc' }), status: 400, field: 'session_id' },
  { name: 'create: NUL in session_id', opts: json('POST', '/v1/sessions', { session_id: 'a\u0000b' }), status: 400, field: 'session_id' },
  { name: 'create: environment of the wrong type', opts: json('POST', '/v1/sessions', { environment: 5 }), status: 400, field: 'environment' },
  { name: 'create: traversal in environment', opts: json('POST', '/v1/sessions', { environment: '../bare' }), status: 400, field: 'environment' },
  { name: 'create: over-long environment', opts: json('POST', '/v1/sessions', { environment: 'e'.repeat(300) }), status: 400, field: 'environment' },
  { name: 'create: unknown environment', opts: json('POST', '/v1/sessions', { environment: 'no-such-env' }), status: 404, code: 'ENVIRONMENT_NOT_FOUND' },
  { name: 'create: volumes not an object', opts: json('POST', '/v1/sessions', { volumes: 'ro' }), status: 400, field: 'volumes' },
  { name: 'create: invalid volume name', opts: json('POST', '/v1/sessions', { volumes: { 'bad name': 'ro' } }), status: 400, field: 'volumes' },
  { name: 'create: traversal in volume name', opts: json('POST', '/v1/sessions', { volumes: { '../x': 'rw' } }), status: 400, field: 'volumes' },
  { name: 'create: invalid volume mode', opts: json('POST', '/v1/sessions', { volumes: { data: 'rx' } }), status: 400, field: 'volumes' },
  { name: 'create: unknown field', opts: json('POST', '/v1/sessions', { bogus_field: 1 }), status: 400, field: 'bogus_field' },
  { name: 'create: body over the limit', opts: json('POST', '/v1/sessions', { session_id: 'big', pad: 'a'.repeat(2 * MiB) }), status: 413 },
  { name: 'create: not JSON', opts: raw('/v1/sessions', 'session_id=x', 'text/plain'), status: '4xx' },

  // GET/DELETE /v1/sessions/{id}
  { name: 'get session: ..', opts: get('/v1/sessions/..'), status: '4xx' },
  { name: 'get session: %2e%2e', opts: get('/v1/sessions/%2e%2e'), status: '4xx' },
  { name: 'get session: ..%2f..%2fetc', opts: get('/v1/sessions/..%2f..%2fetc'), status: 400, field: 'id' },
  { name: 'get session: NUL in id', opts: get('/v1/sessions/s%00'), status: 400, field: 'id' },
  { name: 'get session: id of 65 characters', opts: get(`/v1/sessions/${'a'.repeat(65)}`), status: 400, field: 'id' },
  { name: 'get session: dot in id', opts: get('/v1/sessions/a.b'), status: 400, field: 'id' },
  { name: 'get session: unknown', opts: get('/v1/sessions/unknown-session'), status: 404, code: 'SESSION_NOT_FOUND' },
  { name: 'delete session: bad clear_data', opts: del('/v1/sessions/s?clear_data=maybe'), status: 400, field: 'clear_data' },
  { name: 'delete session: unknown query field', opts: del('/v1/sessions/s?wipe=1'), status: 400, field: 'wipe' },
  { name: 'delete session: NUL in id', opts: del('/v1/sessions/s%00'), status: 400, field: 'id' },
  { name: 'delete session: traversal in id', opts: del('/v1/sessions/..%2Fs'), status: 400, field: 'id' },
  { name: 'delete session: unknown', opts: del('/v1/sessions/unknown-session'), status: 404, code: 'SESSION_NOT_FOUND' },

  // Files: list, download, delete
  { name: 'list files: unknown session', opts: get('/v1/sessions/unknown-session/files'), status: 404, code: 'SESSION_NOT_FOUND' },
  { name: 'list files: NUL in id', opts: get('/v1/sessions/s%00/files'), status: 400, field: 'id' },
  { name: 'download: ..%2F traversal', opts: get('/v1/sessions/s/files/..%2F..%2Fmeta.json'), status: 400, code: 'INVALID_PATH' },
  { name: 'download: %2e%2e component', opts: get('/v1/sessions/s/files/sub/%2e%2e/%2e%2e/meta.json'), status: '4xx' },
  { name: 'download: encoded absolute path', opts: get('/v1/sessions/s/files/%2Fetc%2Fpasswd'), status: 400, code: 'INVALID_PATH' },
  { name: 'download: NUL in path', opts: get('/v1/sessions/s/files/f.txt%00.csv'), status: 400, code: 'INVALID_PATH' },
  { name: 'download: backslash in path', opts: get('/v1/sessions/s/files/..%5C..%5Cmeta.json'), status: 400, code: 'INVALID_PATH' },
  { name: 'download: empty component', opts: get('/v1/sessions/s/files/a//f.txt'), status: '4xx' },
  { name: 'download: over-long path', opts: get(`/v1/sessions/s/files/${'p'.repeat(1500)}.txt`), status: 400 },
  { name: 'download: malformed percent-encoding', opts: get('/v1/sessions/s/files/%E0%A4%A'), status: 400 },
  { name: 'download: invalid UTF-8 escape', opts: get('/v1/sessions/s/files/%ED%A0%80.txt'), status: '4xx' },
  { name: 'download: a directory', opts: get('/v1/sessions/s/files/folder.txt'), status: '4xx' },
  { name: 'download: through a file', opts: get('/v1/sessions/s/files/f.txt/x.txt'), status: '4xx' },
  { name: 'download: empty path', opts: get('/v1/sessions/s/files/'), status: '4xx' },
  { name: 'download: id over the router limit', opts: get(`/v1/sessions/${'a'.repeat(3000)}/files/f.txt`), status: '4xx' },
  { name: 'download: unknown file', opts: get('/v1/sessions/s/files/missing.txt'), status: 404, code: 'FILE_NOT_FOUND' },
  { name: 'download: unknown session', opts: get('/v1/sessions/unknown-session/files/f.txt'), status: 404, code: 'SESSION_NOT_FOUND' },
  { name: 'download: traversal in id', opts: get('/v1/sessions/..%2Fs/files/f.txt'), status: 400, field: 'id' },
  { name: 'delete file: ..%2F traversal', opts: del('/v1/sessions/s/files/..%2Fmeta.json'), status: 400, code: 'INVALID_PATH' },
  { name: 'delete file: NUL in path', opts: del('/v1/sessions/s/files/f.txt%00'), status: 400, code: 'INVALID_PATH' },
  { name: 'delete file: a directory', opts: del('/v1/sessions/s/files/folder.txt'), status: '4xx' },
  { name: 'delete file: unknown file', opts: del('/v1/sessions/s/files/missing.txt'), status: 404, code: 'FILE_NOT_FOUND' },
  { name: 'delete file: unknown session', opts: del('/v1/sessions/unknown-session/files/f.txt'), status: 404, code: 'SESSION_NOT_FOUND' },

  // Files: upload
  { name: 'upload: traversal in dir', opts: mp('/v1/sessions/s/files?dir=..%2F..', [{ name: 'a.txt', content: 'a' }]), status: 400, code: 'INVALID_PATH', field: 'dir' },
  { name: 'upload: absolute dir', opts: mp('/v1/sessions/s/files?dir=%2Ftmp', [{ name: 'a.txt', content: 'a' }]), status: 400, code: 'INVALID_PATH', field: 'dir' },
  { name: 'upload: NUL in dir', opts: mp('/v1/sessions/s/files?dir=a%00b', [{ name: 'a.txt', content: 'a' }]), status: 400, field: 'dir' },
  { name: 'upload: empty dir', opts: mp('/v1/sessions/s/files?dir=', [{ name: 'a.txt', content: 'a' }]), status: 400, field: 'dir' },
  { name: 'upload: unknown query field', opts: mp('/v1/sessions/s/files?path=x', [{ name: 'a.txt', content: 'a' }]), status: 400, field: 'path' },
  { name: 'upload: NUL in file name', opts: mp('/v1/sessions/s/files', [{ name: 'a\u0000.txt', content: 'a' }]), status: 400 },
  { name: 'upload: file name ..', opts: mp('/v1/sessions/s/files', [{ name: '..', content: 'a' }]), status: 400 },
  { name: 'upload: dir through an existing file', opts: mp('/v1/sessions/s/files?dir=f.txt', [{ name: 'a.txt', content: 'a' }]), status: '4xx' },
  { name: 'upload: file name of an existing directory', opts: mp('/v1/sessions/s/files', [{ name: 'folder.txt', content: 'a' }]), status: '4xx' },
  { name: 'upload: multipart without a boundary', opts: raw('/v1/sessions/s/files', 'x', 'multipart/form-data'), status: '4xx' },
  { name: 'upload: truncated multipart body', opts: raw('/v1/sessions/s/files', '--b\r\nContent-Disposition: form-data; name="file"; filename="t.txt"\r\n\r\nabc', 'multipart/form-data; boundary=b'), status: '4xx' },
  { name: 'upload: over the limit', opts: mp('/v1/sessions/s/files', [{ name: 'a.txt', content: 'a'.repeat(1001) }]), status: 413, code: 'UPLOAD_TOO_LARGE' },
  { name: 'upload: JSON instead of multipart', opts: json('POST', '/v1/sessions/s/files', { files: [] }), status: '4xx' },
  { name: 'upload: unknown session', opts: mp('/v1/sessions/unknown-session/files', [{ name: 'a.txt', content: 'a' }]), status: 404, code: 'SESSION_NOT_FOUND' },

  // POST /v1/sessions/{id}/execute
  { name: 'execute: malformed JSON', opts: raw('/v1/sessions/s/execute', '{"command": "true"'), status: 400 },
  { name: 'execute: script of the wrong type', opts: exec({ script: 5 }), status: 400, field: 'script' },
  { name: 'execute: argv as a string', opts: exec({ argv: 'ls -la' }), status: 400, field: 'argv' },
  { name: 'execute: empty argv', opts: exec({ argv: [] }), status: 400, field: 'argv' },
  { name: 'execute: argv with a number', opts: exec({ argv: ['/bin/echo', 1] }), status: 400, field: 'argv' },
  { name: 'execute: invalid env var name', opts: exec({ command: 'true', env: { '1BAD': 'x' } }), status: 400, field: 'env' },
  { name: 'execute: env var name with =', opts: exec({ command: 'true', env: { 'A=B': 'x' } }), status: 400, field: 'env' },
  { name: 'execute: over-long env var name', opts: exec({ command: 'true', env: { ['V'.repeat(300)]: 'x' } }), status: 400, field: 'env' },
  { name: 'execute: env value of the wrong type', opts: exec({ command: 'true', env: { A: 5 } }), status: 400, field: 'env' },
  { name: 'execute: NUL in env value', opts: exec({ command: 'true', env: { A: 'a\u0000b' } }), status: 400, field: 'env' },
  { name: 'execute: too many env vars', opts: exec({ command: 'true', env: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`V${i}`, 'x'])) }), status: 400, field: 'env' },
  { name: 'execute: timeout_seconds as a string', opts: exec({ command: 'true', timeout_seconds: '5' }), status: 400, field: 'timeout_seconds' },
  { name: 'execute: negative timeout_seconds', opts: exec({ command: 'true', timeout_seconds: -1 }), status: 400, field: 'timeout_seconds' },
  { name: 'execute: timeout_seconds above the maximum', opts: exec({ command: 'true', timeout_seconds: 1e9 }), status: 400, field: 'timeout_seconds' },
  { name: 'execute: limits of the wrong type', opts: exec({ command: 'true', limits: { memory_bytes: 'lots' } }), status: 400, field: 'memory_bytes' },
  { name: 'execute: limits above the configured ones', opts: exec({ command: 'true', limits: { memory_bytes: 1e15 } }), status: 400, field: 'memory_bytes' },
  { name: 'execute: unknown field', opts: exec({ command: 'true', workdir: '/' }), status: 400, field: 'workdir' },
  { name: 'execute: stdin of the wrong type', opts: exec({ command: 'cat', stdin: 5 }), status: 400, field: 'stdin' },
  { name: 'execute: NUL in command', opts: exec({ command: 'echo a\u0000b' }), status: 400, field: 'command' },
  { name: 'execute: two programs', opts: exec({ command: 'true', script: 'pass' }), status: 400, field: 'script' },
  { name: 'execute: no program', opts: exec({}), status: 400, field: 'script' },
  { name: 'execute: body over the limit', opts: exec({ command: 'true', stdin: 'x'.repeat(17 * MiB) }), status: 413 },
  { name: 'execute: unknown session', opts: json('POST', '/v1/sessions/unknown-session/execute', { command: 'true' }), status: 404, code: 'SESSION_NOT_FOUND' },
  { name: 'execute: NUL in id', opts: json('POST', '/v1/sessions/s%00/execute', { command: 'true' }), status: 400, field: 'id' },

  // POST /v1/execute
  { name: 'one-shot: malformed JSON', opts: raw('/v1/execute', '{'), status: 400 },
  { name: 'one-shot: traversal in a file path', opts: oneshot({ command: 'true', files: [{ path: '../x.csv', content_base64: 'eA==' }] }), status: 400, code: 'INVALID_PATH', field: 'files' },
  { name: 'one-shot: absolute file path', opts: oneshot({ command: 'true', files: [{ path: '/etc/x.csv', content_base64: 'eA==' }] }), status: 400, code: 'INVALID_PATH', field: 'files' },
  { name: 'one-shot: NUL in a file path', opts: oneshot({ command: 'true', files: [{ path: 'a\u0000.csv', content_base64: 'eA==' }] }), status: 400, field: 'files' },
  { name: 'one-shot: empty file path', opts: oneshot({ command: 'true', files: [{ path: '', content_base64: 'eA==' }] }), status: 400, field: 'path' },
  { name: 'one-shot: content not base64', opts: oneshot({ command: 'true', files: [{ path: 'a.csv', content_base64: '!!not base64!!' }] }), status: 400, field: 'content_base64' },
  { name: 'one-shot: unknown field in a file', opts: oneshot({ command: 'true', files: [{ path: 'a.csv', content_base64: 'eA==', mode: 493 }] }), status: 400, field: 'mode' },
  { name: 'one-shot: files not an array', opts: oneshot({ command: 'true', files: 'a.csv' }), status: 400, field: 'files' },
  { name: 'one-shot: traversal in environment', opts: oneshot({ command: 'true', environment: '../bare' }), status: 400, field: 'environment' },
  { name: 'one-shot: unknown environment', opts: oneshot({ command: 'true', environment: 'no-such-env' }), status: 404, code: 'ENVIRONMENT_NOT_FOUND' },
  { name: 'one-shot: disallowed extension', opts: oneshot({ command: 'true', files: [{ path: 'x.exe', content_base64: 'eA==' }] }), status: 415, code: 'EXTENSION_NOT_ALLOWED' },
  { name: 'one-shot: files over the upload limit', opts: oneshot({ command: 'true', files: [{ path: 'a.csv', content_base64: Buffer.alloc(1001).toString('base64') }] }), status: 413, code: 'UPLOAD_TOO_LARGE' },
  { name: 'one-shot: no program', opts: oneshot({ environment: 'bare' }), status: 400, field: 'script' },
  { name: 'one-shot: unknown field', opts: oneshot({ command: 'true', session_id: 's' }), status: 400, field: 'session_id' },
  { name: 'one-shot: body over the limit', opts: oneshot({ command: 'true', stdin: 'x'.repeat(19 * MiB) }), status: 413 },
];

describe('bad input on every route', () => {
  it.each(rows)('$name', async (row) => {
    const res = await t.app.inject(row.opts);
    expect(res.statusCode, res.body).toBeGreaterThanOrEqual(400);
    expect(res.statusCode, res.body).toBeLessThan(500);
    if (row.status !== '4xx') expect(res.statusCode, res.body).toBe(row.status);
    expect(String(res.headers['content-type'])).toContain('application/json');
    const body = expectError(res, res.statusCode, row.code);
    if (row.field !== undefined) expect(body.message).toContain(row.field);
    expect(body.message).not.toContain(t.workspaceDir);
    expect(body.message).not.toContain('/tmp/');
    expect(body.message).not.toContain(path.dirname(t.workspaceDir));
  });

  it('leaves the session, its file and its metadata intact', async () => {
    const s = await t.app.inject({ method: 'GET', url: '/v1/sessions/s' });
    expect(s.statusCode).toBe(200);
    const f = await t.app.inject({ method: 'GET', url: '/v1/sessions/s/files/f.txt' });
    expect(f.statusCode).toBe(200);
    expect(f.body).toBe('keep me');
    expect(fs.existsSync(path.join(t.workspaceDir, 'sessions', 's', 'meta.json'))).toBe(true);
    const sessions = (await t.app.inject({ method: 'GET', url: '/v1/sessions' })).json<{ sessions: { session_id: string }[] }>().sessions;
    expect(sessions.map((x) => x.session_id)).toEqual(['s']);
    expect(fs.readdirSync(path.join(t.workspaceDir, 'staging'))).toEqual([]);
    expect(fs.readdirSync(path.join(t.workspaceDir, 'oneshot'))).toEqual([]);
  });
});
