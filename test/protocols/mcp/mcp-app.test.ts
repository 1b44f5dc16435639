// /mcp through app.inject: the tool descriptions carry this server's configured limits, and the
// input bounds follow them; without an API key configured, no key is asked for.
import { describe, expect, test } from 'vitest';
import { useTestApp } from '../../helpers/app.js';

const t = useTestApp({ MAX_EXECUTION_TIMEOUT_SECONDS: '77', EXECUTION_TIMEOUT_SECONDS: '7', MAX_OUTPUT_CHARS: '5000', MAX_UPLOAD_SIZE_BYTES: '4096', MEMORY_LIMIT_BYTES: String(256 * 2 ** 20) });

async function rpc(method: string, params: unknown): Promise<Record<string, unknown>> {
  const res = await t.app.inject({
    method: 'POST', url: '/mcp', payload: { jsonrpc: '2.0', id: 1, method, params },
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
  });
  expect(res.statusCode, res.body).toBe(200);
  const data = res.body.split('\n').find((l) => l.startsWith('data: '));
  return JSON.parse(data?.slice('data: '.length) ?? 'null') as Record<string, unknown>;
}

describe('descriptions and bounds follow the configuration', () => {
  test('the limits in the descriptions are this server\'s', async () => {
    const { result } = await rpc('tools/list', {}) as { result: { tools: { name: string; description: string; inputSchema: { properties: Record<string, { maximum?: number }> } }[] } };
    const byName = Object.fromEntries(result.tools.map((tool) => [tool.name, tool]));
    for (const name of ['execute', 'run_code']) {
      expect(byName[name]?.description).toContain('timeout default 7 s, at most 77 s');
      expect(byName[name]?.description).toContain('256 MiB memory');
      expect(byName[name]?.description).toContain('cut to 5000 characters per stream');
      expect(byName[name]?.inputSchema.properties.timeout_seconds?.maximum).toBe(77);
    }
    expect(byName.write_file?.description).toContain('At most 4096 bytes');
  });

  test('a timeout over the maximum and a file over the upload limit are refused as tool errors', async () => {
    await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'bounds' } });
    const slow = await rpc('tools/call', { name: 'execute', arguments: { session_id: 'bounds', command: 'true', timeout_seconds: 78 } }) as { result: { isError: boolean; content: { text: string }[] } };
    expect(slow.result.isError).toBe(true);
    expect(slow.result.content[0]?.text).toMatch(/Input validation error.*timeout_seconds/s);
    const big = await rpc('tools/call', { name: 'write_file', arguments: { session_id: 'bounds', path: 'big.txt', text: 'x'.repeat(4097) } }) as { result: { isError: boolean; content: { text: string }[] } };
    expect(big.result).toMatchObject({ isError: true });
    expect(big.result.content[0]?.text).toMatch(/^UPLOAD_TOO_LARGE: /);
    const fits = await rpc('tools/call', { name: 'write_file', arguments: { session_id: 'bounds', path: 'fits.txt', text: 'x'.repeat(4096) } }) as { result: { isError?: boolean } };
    expect(fits.result.isError).toBeFalsy();
  });

  test('a body over the limit is refused in JSON-RPC\'s shape, with its status and code', async () => {
    const res = await t.app.inject({
      method: 'POST', url: '/mcp', payload: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'write_file', arguments: { text: 'x'.repeat(3 * 2 ** 20) } } }),
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: -32000, data: { statusCode: 413, code: 'FST_ERR_CTP_BODY_TOO_LARGE' } } });
  });
});
