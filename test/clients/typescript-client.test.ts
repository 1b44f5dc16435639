// clients/typescript against the real service: its generated types match the service's OpenAPI
// document (regenerated into a temp file and compared: this fails when a route or schema changes
// and `npm run generate` was not run), the client works end to end, and so does its example.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BubbleSandboxError, createBubbleSandboxClient, type BubbleSandboxClient } from '../../clients/typescript/src/index.js';
import { PROJECT_ROOT, makeTempDir, removeTempDir } from '../helpers/host-env.js';
import { startServer, useWorkspaceDir, type ServerProcess } from '../helpers/server-process.js';

const KEY = 'client-test-key-0123456789abcdef';
const CLIENT_DIR = path.join(PROJECT_ROOT, 'clients', 'typescript');
const run = promisify(execFile);

const workspaceDir = useWorkspaceDir('bs-ts-client-', 'all');
let server: ServerProcess;
let client: BubbleSandboxClient;
let tmp: string;

beforeAll(async () => {
  const base = 2_000_000 + (process.pid % 20_000) * 128;
  server = await startServer({
    workspaceDir: workspaceDir.path,
    env: { BUBBLE_SANDBOX_API_KEY: KEY, BUBBLE_SANDBOX_SANDBOX_UID_BASE: String(base), BUBBLE_SANDBOX_SANDBOX_UID_COUNT: '128', BUBBLE_SANDBOX_MAX_SESSIONS: '16', BUBBLE_SANDBOX_MAX_QUEUED_EXECUTIONS: '16' },
  });
  client = createBubbleSandboxClient({ baseUrl: server.baseUrl, apiKey: KEY });
  tmp = makeTempDir('bs-ts-client-gen-');
});
afterAll(() => removeTempDir(tmp));

describe('generated types', () => {
  test('clients/typescript/src/schema.d.ts is what `npm run generate` makes from the service\'s document', async () => {
    const out = path.join(tmp, 'schema.d.ts');
    await run(process.execPath, [path.join(CLIENT_DIR, 'scripts', 'generate.mjs'), '--url', `${server.baseUrl}/openapi.json`, '--out', out], { cwd: CLIENT_DIR });
    const committed = fs.readFileSync(path.join(CLIENT_DIR, 'src', 'schema.d.ts'), 'utf8');
    // On a mismatch: run `npm run generate` in clients/typescript against a service of this tree.
    expect(fs.readFileSync(out, 'utf8') === committed, 'the generated types drifted from the service: run `npm run generate` in clients/typescript').toBe(true);
    expect(committed).toContain('operations["executeInSession"]');
  }, 60_000);
});

describe('the client against the service', () => {
  test('typed calls, upload, download, streams and errors', async () => {
    const { data: session, response } = await client.api.POST('/v1/sessions', { body: { session_id: 'ts-client' } });
    expect(response.status).toBe(201);
    expect(session?.session_id).toBe('ts-client');
    const id = 'ts-client';

    const { data: run1 } = await client.api.POST('/v1/sessions/{id}/execute', { params: { path: { id } }, body: { argv: ['cat'], stdin: 'typed' } });
    expect(run1).toMatchObject({ status: 'ok', stdout: 'typed' });
    await client.api.POST('/v1/sessions/{id}/run_code', { params: { path: { id } }, body: { code: 'x = 20' } });
    const { data: cell } = await client.api.POST('/v1/sessions/{id}/run_code', { params: { path: { id } }, body: { code: 'x + 1' } });
    expect(cell?.result).toBe('21');

    const bytes = new Uint8Array([0, 1, 2, 200, 255]);
    const up = await client.uploadFiles(id, [{ name: 'a.txt', content: 'alpha\n' }, { name: 'b.json', content: bytes }], { dir: 'in/deep' });
    expect(up.files).toEqual([{ path: 'in/deep/a.txt', size: 6 }, { path: 'in/deep/b.json', size: 5 }]);
    expect(await client.downloadFile(id, 'in/deep/b.json')).toEqual(bytes);
    const { data: listing } = await client.api.GET('/v1/sessions/{id}/files', { params: { path: { id } } });
    expect(listing?.files.map((f) => f.path)).toEqual(['in/deep/a.txt', 'in/deep/b.json']);

    const events = [];
    for await (const e of await client.streamExecute(id, { command: 'echo one; echo two >&2; exit 4' })) events.push(e);
    expect(events.filter((e) => e.type === 'stdout').map((e) => (e as { data: string }).data).join('')).toBe('one\n');
    expect(events.at(-1)).toMatchObject({ type: 'result', status: 'error', exit_code: 4 });
    const cells = [];
    for await (const e of await client.streamRunCode(id, { code: 'print(x)' })) cells.push(e);
    expect(cells.at(-1)).toMatchObject({ type: 'result', status: 'ok' });
    const oneShot = [];
    for await (const e of await client.streamOneShot({ command: 'cat in.txt', files: [{ path: 'in.txt', content_base64: Buffer.from('inline').toString('base64') }] })) oneShot.push(e);
    expect(oneShot.at(-1)).toMatchObject({ type: 'result', status: 'ok' });

    await expect(client.downloadFile(id, 'missing.txt')).rejects.toMatchObject({ status: 404, code: 'FILE_NOT_FOUND' });
    await expect(client.streamExecute('no-such-session', { command: 'true' })).rejects.toBeInstanceOf(BubbleSandboxError);
    const { error } = await client.api.GET('/v1/sessions/{id}', { params: { path: { id: 'no-such-session' } } });
    expect(error).toMatchObject({ statusCode: 404, code: 'SESSION_NOT_FOUND' });
    const wrongKey = createBubbleSandboxClient({ baseUrl: server.baseUrl, apiKey: 'wrong-key-0123456789abcdef' });
    expect((await wrongKey.api.GET('/v1/sessions')).response.status).toBe(401);

    const { response: deleted } = await client.api.DELETE('/v1/sessions/{id}', { params: { path: { id }, query: { clear_data: 'true' } } });
    expect(deleted.status).toBe(204);
  }, 60_000);

  test('the example program runs against it', async () => {
    const { stdout } = await run(process.execPath, [path.join(PROJECT_ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), path.join(CLIENT_DIR, 'examples', 'quickstart.ts')], {
      cwd: PROJECT_ROOT, env: { ...process.env, BUBBLE_SANDBOX_URL: server.baseUrl, BUBBLE_SANDBOX_API_KEY: KEY },
    });
    expect(stdout).toMatch(/^session [0-9a-f]+\nexecute: ok hello from Linux\nrun_code: 90\ndownload: 6\nstream: tick 1\nstream: tick 2\nstream: tick 3\nstream result: ok, exit 0\nerror: 404 FILE_NOT_FOUND\ndeleted\n$/);
  }, 60_000);
});
