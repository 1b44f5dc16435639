// The E2B wire formats through app.inject, below what the SDK tests reach: E2B path mapping, the
// Connect envelope and end-of-stream frame, E2B's error shapes for bad input, and the REST API's
// own parsing left as it was.
import { describe, expect, it } from 'vitest';
import { workspaceParts } from '../../src/protocols/e2b/e2b-paths.js';
import { useTestApp } from '../helpers/app.js';
import { expectError } from '../helpers/http.js';

const ENVD = { 'e2b-sandbox-port': '49983', 'connect-protocol-version': '1' };

function envelope(message: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(message));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
}

/** The frames of a Connect server-stream body: [flags, message]. */
function frames(body: Buffer): [number, Record<string, unknown>][] {
  const out: [number, Record<string, unknown>][] = [];
  for (let at = 0; at < body.length;) {
    const len = body.readUInt32BE(at + 1);
    out.push([body.readUInt8(at), JSON.parse(body.subarray(at + 5, at + 5 + len).toString()) as Record<string, unknown>]);
    at += 5 + len;
  }
  return out;
}

describe('E2B paths', () => {
  it('map /home/user and relative paths into the workspace, and refuse everything else', () => {
    expect(workspaceParts('/home/user')).toEqual([]);
    expect(workspaceParts('/home/user/')).toEqual([]);
    expect(workspaceParts('/home/user/a/b.txt')).toEqual(['a', 'b.txt']);
    expect(workspaceParts('a/b.txt')).toEqual(['a', 'b.txt']);
    expect(workspaceParts('~/a')).toEqual(['a']);
    for (const p of ['/etc/passwd', '/', '/home/username/x', '/home/user/../x', 'a/../../x', '/home/user/a\\b', '/home/user/a\0b']) {
      expect(() => workspaceParts(p), p).toThrow(expect.objectContaining({ connectCode: 'invalid_argument', statusCode: 400 }) as Error);
    }
  });
});

describe('E2B wire', () => {
  const t = useTestApp();
  const session = async () => (await t.app.inject({ method: 'POST', url: '/v2/sandboxes', payload: { templateID: 'bare' } })).json<{ sandboxID: string }>().sandboxID;

  it('a process stream is framed: start, data in base64, end with the exit code, then the end-of-stream frame', async () => {
    const id = await session();
    const res = await t.app.inject({
      method: 'POST', url: '/process.Process/Start', headers: { ...ENVD, 'e2b-sandbox-id': id, 'content-type': 'application/connect+json' },
      payload: envelope({ process: { cmd: '/bin/sh', args: ['-c', 'printf hi; exit 3'] } }),
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/connect+json');
    const got = frames(res.rawPayload);
    expect(got[0]).toEqual([0, { event: { start: { pid: expect.any(Number) as unknown } } }]);
    const data = got.filter(([, m]) => (m.event as { data?: unknown } | undefined)?.data !== undefined).map(([, m]) => (m.event as { data: { stdout: string } }).data.stdout);
    expect(Buffer.from(data.join(''), 'base64').toString()).toBe('hi');
    expect(got.at(-2)).toEqual([0, { event: { end: { exitCode: 3, exited: true, status: 'exit status 3' } } }]);
    expect(got.at(-1)).toEqual([2, {}]);
  });

  it('a process can be selected by the tag it was started with', async () => {
    const id = await session();
    const headers = { ...ENVD, 'e2b-sandbox-id': id };
    await t.app.inject({ method: 'POST', url: '/process.Process/Start', headers: { ...headers, 'content-type': 'application/connect+json' }, payload: envelope({ process: { cmd: '/bin/true' }, tag: 't1' }) });
    const signal = (tag: string) => t.app.inject({ method: 'POST', url: '/process.Process/SendSignal', headers: { ...headers, 'content-type': 'application/json' }, payload: { process: { tag }, signal: 'SIGNAL_SIGTERM' } });
    const ended = await signal('t1');
    expect(ended.statusCode).toBe(404);
    expect(ended.json()).toEqual({ code: 'not_found', message: 'the process has already ended' });
    expect((await signal('nope')).json()).toEqual({ code: 'not_found', message: "process with tag 'nope' not found" });
  });

  it('bad input answers each E2B shape: control plane {code: 400}, Connect invalid_argument, a stream\'s error frame', async () => {
    const create = await t.app.inject({ method: 'POST', url: '/v2/sandboxes', payload: { templateID: 'bare', timeout: -1 } });
    expect(create.statusCode).toBe(400);
    expect(create.json()).toEqual({ code: 400, message: expect.stringContaining('timeout') as unknown });

    const id = await session();
    const unary = await t.app.inject({ method: 'POST', url: '/filesystem.Filesystem/Stat', headers: { ...ENVD, 'e2b-sandbox-id': id, 'content-type': 'application/json' }, payload: '{"path": 7}' });
    expect(unary.statusCode).toBe(400);
    expect(unary.json()).toEqual({ code: 'invalid_argument', message: expect.stringContaining('path') as unknown });

    const broken = await t.app.inject({ method: 'POST', url: '/process.Process/Start', headers: { ...ENVD, 'e2b-sandbox-id': id, 'content-type': 'application/connect+json' }, payload: Buffer.from([0, 0, 0, 0, 9, 1]) });
    expect(broken.statusCode).toBe(200);
    expect(frames(broken.rawPayload)).toEqual([[2, { error: { code: 'invalid_argument', message: expect.any(String) as unknown } }]]);

    const both = await t.app.inject({ method: 'POST', url: '/execute', headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': '49999' }, payload: { code: '1', context_id: 'c', language: 'python' } });
    expect(both.statusCode).toBe(400);
    expect(both.body).toMatch(/context_id or language/);

    const port = await t.app.inject({ method: 'GET', url: '/anything', headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': '3000' } });
    expect(port.statusCode).toBe(404);
    expect(port.json()).toEqual({ code: 404, message: expect.stringContaining('not served') as unknown });
  });

  it('leaves the REST API\'s parsing alone: Connect\'s content type is not parsed on /v1, JSON still is', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: { 'content-type': 'application/connect+json' }, payload: envelope({ session_id: 'x' }) });
    expectError(res, 415);
    const ok = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'rest-still-json' } });
    expect(ok.statusCode).toBe(201);
    // And a REST session is an E2B sandbox too (same id), visible on the control plane.
    const listed = (await t.app.inject({ method: 'GET', url: '/v2/sandboxes' })).json<{ sandboxID: string }[]>();
    expect(listed.map((s) => s.sandboxID)).toContain('rest-still-json');
  });
});
