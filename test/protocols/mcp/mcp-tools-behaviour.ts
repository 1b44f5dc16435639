// What an agent does with the tools, the same over every transport: the HTTP and stdio test files
// run these against their own connection.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { expect, test } from 'vitest';
import { waitForNoProcess, waitForSleep } from '../../helpers/host-processes.js';
import { TOOL_NAMES, call, imagesOf, textOf } from './mcp-kit.js';

const PNG_MAGIC_BASE64 = 'iVBORw0KGgo';

/** `cancels`: whether the transport ends a call on notifications/cancelled (all three do; kept for a transport that cannot). */
export function toolBehaviour(client: () => Client, prefix: string, opts: { cancels: boolean }): void {
  test('lists the tools, each with a description that names its limits', async () => {
    const { tools } = await client().listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(TOOL_NAMES);
    const execute = tools.find((t) => t.name === 'execute');
    expect(execute?.description).toMatch(/at most \d+(\.\d+)? s/);
    expect(execute?.description).toContain('characters per stream');
    expect(execute?.inputSchema.properties).toHaveProperty('argv');
    expect(tools.find((t) => t.name === 'write_file')?.description).toMatch(/At most \d+ bytes/);
  });

  test('list_environments names the environments', async () => {
    const r = await call(client(), 'list_environments');
    expect(r.isError).toBeFalsy();
    expect(textOf(r)).toMatch(/^bare: /m);
  });

  test('create a session, execute a command, a script and argv, delete it', async () => {
    const id = `${prefix}-exec`;
    const created = await call(client(), 'create_session', { session_id: id });
    expect(created.isError, textOf(created)).toBeFalsy();
    expect(created.structuredContent).toMatchObject({ session_id: id, environment: 'bare' });
    const cmd = await call(client(), 'execute', { session_id: id, command: 'echo hello from $0; echo oops >&2; exit 3' });
    expect(cmd.isError).toBeFalsy();
    expect(textOf(cmd)).toContain('hello from /bin/sh');
    expect(textOf(cmd)).toContain('--- stderr ---\noops');
    expect(cmd.structuredContent).toMatchObject({ status: 'error', exit_code: 3 });
    const script = await call(client(), 'execute', { session_id: id, script: 'print(6 * 7)' });
    expect(script.structuredContent).toMatchObject({ status: 'ok', stdout: '42\n' });
    const argv = await call(client(), 'execute', { session_id: id, argv: ['cat'], stdin: 'piped' });
    expect(argv.structuredContent).toMatchObject({ status: 'ok', stdout: 'piped' });
    expect(textOf(await call(client(), 'delete_session', { session_id: id }))).toContain('deleted');
    const gone = await call(client(), 'execute', { session_id: id, command: 'true' });
    expect(gone.isError).toBe(true);
    expect(textOf(gone)).toMatch(/^SESSION_NOT_FOUND: /);
  }, 60_000);

  test('run_code keeps state across calls and reports errors with a traceback', async () => {
    const id = `${prefix}-state`;
    await call(client(), 'create_session', { session_id: id });
    expect((await call(client(), 'run_code', { session_id: id, code: 'x = 41\ndef double(n):\n    return 2 * n' })).isError).toBeFalsy();
    const next = await call(client(), 'run_code', { session_id: id, code: 'double(x + 1)' });
    expect(next.structuredContent).toMatchObject({ status: 'ok', result: '84' });
    expect(textOf(next)).toContain('--- result ---\n84');
    const failed = await call(client(), 'run_code', { session_id: id, code: 'undefined_name' });
    expect(failed.isError).toBeFalsy(); // the call ran; the Python error is its result
    expect(textOf(failed)).toContain("NameError: name 'undefined_name' is not defined");
    await call(client(), 'delete_session', { session_id: id });
  }, 60_000);

  test('write_file (text and base64), read_file, list_files', async () => {
    const id = `${prefix}-files`;
    await call(client(), 'create_session', { session_id: id });
    const wrote = await call(client(), 'write_file', { session_id: id, path: 'data/notes.txt', text: 'héllo\nworld\n' });
    expect(textOf(wrote), textOf(wrote)).toContain('wrote 13 bytes to data/notes.txt');
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    expect((await call(client(), 'write_file', { session_id: id, path: 'blob.json', base64: bytes.toString('base64') })).isError).toBeFalsy();
    expect(textOf(await call(client(), 'read_file', { session_id: id, path: 'data/notes.txt' }))).toBe('héllo\nworld\n');
    expect(textOf(await call(client(), 'read_file', { session_id: id, path: 'blob.json' }))).toBe(`base64 (5 bytes):\n${bytes.toString('base64')}`);
    // The sandbox sees what was written, and what it writes can be read back.
    const seen = await call(client(), 'execute', { session_id: id, command: 'cat data/notes.txt | wc -l; echo made > out.txt' });
    expect(seen.structuredContent).toMatchObject({ stdout: '2\n', files: { created: ['out.txt'] } });
    expect(textOf(await call(client(), 'read_file', { session_id: id, path: 'out.txt' }))).toBe('made\n');
    expect(textOf(await call(client(), 'list_files', { session_id: id }))).toBe('blob.json\t5\ndata/notes.txt\t13\nout.txt\t5');
    const after = await call(client(), 'list_files', { session_id: id, after: 'blob.json' });
    expect(after.structuredContent).toMatchObject({ files: [{ path: 'data/notes.txt' }, { path: 'out.txt' }], next_after: null });
    await call(client(), 'delete_session', { session_id: id });
  }, 60_000);

  test('a matplotlib figure from run_code comes back as PNG image content', async () => {
    const id = `${prefix}-plot`;
    const created = await call(client(), 'create_session', { session_id: id, environment: 'pandas-exec' });
    expect(created.isError, textOf(created)).toBeFalsy();
    const r = await call(client(), 'run_code', {
      session_id: id, timeout_seconds: 120,
      code: 'import matplotlib\nmatplotlib.use("Agg")\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\nprint("plotted")',
    });
    expect(textOf(r), textOf(r)).toContain('plotted');
    const images = imagesOf(r);
    expect(images.length, textOf(r)).toBe(1);
    expect(images[0]?.mimeType).toBe('image/png');
    expect(images[0]?.data.startsWith(PNG_MAGIC_BASE64)).toBe(true);
    // The same figure is a workspace file, which read_file returns as an image too.
    const png = ((r.structuredContent as { files: { created: string[] } }).files.created).find((p) => p.endsWith('.png'));
    expect(png).toBeDefined();
    expect(imagesOf(await call(client(), 'read_file', { session_id: id, path: png ?? '' }))[0]?.data).toBe(images[0]?.data);
    await call(client(), 'delete_session', { session_id: id });
  }, 120_000);

  test('read_file never follows a link planted by sandboxed code', async () => {
    const id = `${prefix}-links`;
    await call(client(), 'create_session', { session_id: id });
    const planted = await call(client(), 'execute', { session_id: id, command: 'ln -s /etc/passwd leak.txt && ln -s / root.txt' });
    expect(planted.structuredContent).toMatchObject({ status: 'ok' });
    for (const path of ['leak.txt', 'root.txt/etc/passwd']) {
      const leak = await call(client(), 'read_file', { session_id: id, path });
      expect(leak.isError, path).toBe(true);
      expect(textOf(leak)).toMatch(/^(FILE_NOT_FOUND|INVALID_PATH): /);
      expect(textOf(leak)).not.toContain('root:');
    }
    await call(client(), 'delete_session', { session_id: id });
  }, 60_000);

  if (opts.cancels) test('a call the client cancels (notifications/cancelled) ends its execution', async () => {
    const id = `${prefix}-cancel`;
    await call(client(), 'create_session', { session_id: id });
    const marker = `34.${prefix.length}${prefix.charCodeAt(0)}`;
    const ac = new AbortController();
    const pending = client().callTool({ name: 'execute', arguments: { session_id: id, command: `sleep ${marker}`, timeout_seconds: 60 } }, undefined, { signal: ac.signal });
    await waitForSleep(marker);
    ac.abort();
    await expect(pending).rejects.toThrow();
    expect(await waitForNoProcess(`sleep ${marker}`, 3000)).toEqual([]);
    expect((await call(client(), 'execute', { session_id: id, command: 'echo after' })).structuredContent).toMatchObject({ stdout: 'after\n' });
    await call(client(), 'delete_session', { session_id: id });
  }, 60_000);

  test('bad input gets MCP\'s error shapes: isError results naming the problem, JSON-RPC errors for protocol errors', async () => {
    const id = `${prefix}-bad`;
    await call(client(), 'create_session', { session_id: id });
    const two = await call(client(), 'execute', { session_id: id, script: 'print(1)', command: 'true' });
    expect(two).toMatchObject({ isError: true });
    expect(textOf(two)).toContain('exactly one of script, command or argv');
    const missing = await call(client(), 'execute', { command: 'true' });
    expect(missing.isError).toBe(true);
    expect(textOf(missing)).toMatch(/Input validation error.*session_id/s);
    const tooLong = await call(client(), 'execute', { session_id: id, command: 'true', timeout_seconds: 1e9 });
    expect(tooLong.isError).toBe(true);
    expect(textOf(tooLong)).toContain('timeout_seconds');
    const escape = await call(client(), 'read_file', { session_id: id, path: '../../etc/passwd' });
    expect(escape.isError).toBe(true);
    expect(textOf(escape)).toMatch(/^INVALID_PATH: /);
    const ext = await call(client(), 'write_file', { session_id: id, path: 'run.sh', text: 'x' });
    expect(textOf(ext)).toMatch(/^EXTENSION_NOT_ALLOWED: /);
    const absent = await call(client(), 'read_file', { session_id: id, path: 'nope.txt' });
    expect(textOf(absent)).toMatch(/^FILE_NOT_FOUND: /);
    await expect(call(client(), 'no_such_tool')).resolves.toMatchObject({ isError: true });
    await expect(client().request({ method: 'no/such_method', params: {} }, (await import('@modelcontextprotocol/sdk/types.js')).EmptyResultSchema))
      .rejects.toMatchObject({ code: -32601 });
    // The service is still there.
    expect((await call(client(), 'execute', { session_id: id, command: 'echo fine' })).structuredContent).toMatchObject({ stdout: 'fine\n' });
    await call(client(), 'delete_session', { session_id: id });
  }, 60_000);
}
