// The network policy API without traffic: the shapes a session or one-shot execution may ask for,
// PATCH /v1/sessions/{id}/network, idempotent re-create, persistence of the record, and /readyz.
// The policies at work (egress through the proxy, isolation) are in network-sandbox.test.ts.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { createSession, expectError, type SessionInfoBody } from '../helpers/http.js';

const t = useTestApp();

const patch = (id: string, body: unknown) => t.app.inject({ method: 'PATCH', url: `/v1/sessions/${id}/network`, payload: body as Record<string, unknown> });
const getSession = async (id: string) => (await t.app.inject({ method: 'GET', url: `/v1/sessions/${id}` })).json<SessionInfoBody>();
const storedNetwork = (id: string): unknown => (JSON.parse(fs.readFileSync(path.join(t.workspaceDir, 'sessions', id, 'meta.json'), 'utf8')) as { network: unknown }).network;

describe('create with a network', () => {
  it('absent means mode none; SessionInfo carries the network as given, mode filled in, both lists for allowlist', async () => {
    expect((await createSession(t.app, { session_id: 'n-default' })).network).toEqual({ mode: 'none' });
    expect((await createSession(t.app, { session_id: 'n-none', network: { mode: 'none' } })).network).toEqual({ mode: 'none' });
    const a = await createSession(t.app, { session_id: 'n-allow', network: { mode: 'allowlist', allow: ['pypi.org', '*.pythonhosted.org', 'api.example.com:443'] } });
    expect(a.network).toEqual({ mode: 'allowlist', allow: ['pypi.org', '*.pythonhosted.org', 'api.example.com:443'], deny: [] });
    expect(storedNetwork('n-allow')).toEqual(a.network);
    expect((await getSession('n-allow')).network).toEqual(a.network);
    const listed = (await t.app.inject({ method: 'GET', url: '/v1/sessions' })).json<{ sessions: SessionInfoBody[] }>().sessions;
    expect(listed.find((s) => s.session_id === 'n-allow')?.network).toEqual(a.network);
  });

  it('the same id with the same network is the same session (200); with another network 409 SESSION_CONFLICT', async () => {
    const body = { session_id: 'n-idem', network: { mode: 'allowlist', allow: ['pypi.org'] } };
    await createSession(t.app, body);
    const again = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: body });
    expect(again.statusCode, again.body).toBe(200);
    for (const network of [{ mode: 'none' }, { mode: 'allowlist', allow: ['pypi.org', 'files.pythonhosted.org'] }, { mode: 'allowlist', allow: ['pypi.org'], deny: ['x.pypi.org'] }]) {
      expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { ...body, network } }), 409, 'SESSION_CONFLICT');
    }
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'n-idem' } }), 409, 'SESSION_CONFLICT');
  });

  it.each([
    ['an unknown mode', { mode: 'internet' }, 'network.mode'],
    ['no mode', { allow: ['pypi.org'] }, 'network.mode'],
    ['allow with mode none', { mode: 'none', allow: ['pypi.org'] }, 'network.mode'],
    ['deny with mode outbound', { mode: 'outbound', deny: ['pypi.org'] }, 'network.mode'],
    ['an unknown field', { mode: 'none', ports: [80] }, 'network'],
    ['allow not a list', { mode: 'allowlist', allow: 'pypi.org' }, 'network.allow'],
    ['an empty pattern', { mode: 'allowlist', allow: [''] }, 'network.allow.0'],
    ['1000 patterns', { mode: 'allowlist', allow: Array.from({ length: 1000 }, (_, i) => `h${i}.example.com`) }, 'network.allow'],
  ])('%s is 400 FST_ERR_VALIDATION naming the field; nothing is created', async (_name, network, field) => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'n-bad-shape', network } });
    expect(expectError(res, 400, 'FST_ERR_VALIDATION').message).toContain(field);
    expect(fs.existsSync(path.join(t.workspaceDir, 'sessions', 'n-bad-shape'))).toBe(false);
  });

  it.each([
    ['a scheme', 'https://pypi.org', 'network.allow.1', 'scheme'],
    ['a path', 'pypi.org/simple', 'network.allow.1', 'path'],
    ['a wildcard in the middle', 'files.*.org', 'network.allow.1', 'wildcard'],
    ['a bad port', 'pypi.org:70000', 'network.allow.1', 'port'],
  ])('a pattern with %s is 400 INVALID_NETWORK_POLICY naming the field and why; nothing is created', async (_name, bad, field, why) => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'n-bad-pattern', network: { mode: 'allowlist', allow: ['pypi.org', bad] } } });
    const err = expectError(res, 400, 'INVALID_NETWORK_POLICY');
    expect(err.message).toContain(field);
    expect(err.message).toContain(why);
    expect(fs.existsSync(path.join(t.workspaceDir, 'sessions', 'n-bad-pattern'))).toBe(false);
    const deny = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'n-bad-pattern', network: { mode: 'allowlist', deny: [bad] } } });
    expect(expectError(deny, 400, 'INVALID_NETWORK_POLICY').message).toContain('network.deny.0');
  });

  it('a mode the host cannot provide is 422 NETWORK_MODE_UNAVAILABLE and nothing is created', async () => {
    const avail = t.sessions.networks.available;
    const saved = { ...avail.unavailable };
    avail.unavailable.outbound = 'slirp4netns not installed (test)';
    try {
      const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'n-unavail', network: { mode: 'outbound' } } });
      expect(expectError(res, 422, 'NETWORK_MODE_UNAVAILABLE').message).toContain('slirp4netns not installed (test)');
      expect(fs.existsSync(path.join(t.workspaceDir, 'sessions', 'n-unavail'))).toBe(false);
      const oneShot = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { command: 'true', network: { mode: 'outbound' } } });
      expectError(oneShot, 422, 'NETWORK_MODE_UNAVAILABLE');
      expect(fs.readdirSync(path.join(t.workspaceDir, 'oneshot'))).toEqual([]);
    } finally {
      avail.unavailable = saved;
    }
  });
});

describe('PATCH /v1/sessions/{id}/network', () => {
  it('replaces the lists given, keeps the one left out, answers SessionInfo and writes the record', async () => {
    await createSession(t.app, { session_id: 'p-1', network: { mode: 'allowlist', allow: ['pypi.org'], deny: ['evil.pypi.org'] } });
    const res = await patch('p-1', { allow: ['example.com:8443', '10.1.2.3'] });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<SessionInfoBody>().network).toEqual({ mode: 'allowlist', allow: ['example.com:8443', '10.1.2.3'], deny: ['evil.pypi.org'] });
    expect(storedNetwork('p-1')).toEqual({ mode: 'allowlist', allow: ['example.com:8443', '10.1.2.3'], deny: ['evil.pypi.org'] });
    const denied = await patch('p-1', { deny: [] });
    expect(denied.json<SessionInfoBody>().network).toEqual({ mode: 'allowlist', allow: ['example.com:8443', '10.1.2.3'], deny: [] });
    expect((await getSession('p-1')).network).toEqual({ mode: 'allowlist', allow: ['example.com:8443', '10.1.2.3'], deny: [] });
    // An empty body changes nothing and is still 200.
    expect((await patch('p-1', {})).json<SessionInfoBody>().network).toEqual({ mode: 'allowlist', allow: ['example.com:8443', '10.1.2.3'], deny: [] });
  });

  it('a bad pattern anywhere is 400 naming the field, and neither list changes (memory nor disk)', async () => {
    await createSession(t.app, { session_id: 'p-2', network: { mode: 'allowlist', allow: ['pypi.org'] } });
    const before = storedNetwork('p-2');
    for (const [body, field] of [
      [{ allow: ['ok.example.com'], deny: ['http://x.example.com'] }, 'deny.0'],
      [{ allow: ['ok.example.com', 'a.*.example.com'] }, 'allow.1'],
      [{ deny: ['example.com/path'] }, 'deny.0'],
    ] as const) {
      expect(expectError(await patch('p-2', body), 400, 'INVALID_NETWORK_POLICY').message).toContain(field);
    }
    expect(expectError(await patch('p-2', { allow: Array.from({ length: 1000 }, (_, i) => `h${i}.example.com`) }), 400, 'FST_ERR_VALIDATION').message).toContain('allow');
    expect(expectError(await patch('p-2', { mode: 'outbound' }), 400, 'FST_ERR_VALIDATION').message).toMatch(/mode|unrecognized/i);
    expect((await getSession('p-2')).network).toEqual({ mode: 'allowlist', allow: ['pypi.org'], deny: [] });
    expect(storedNetwork('p-2')).toEqual(before);
  });

  it('a session of another mode is 409 NETWORK_MODE_MISMATCH; an unknown one 404', async () => {
    await createSession(t.app, { session_id: 'p-none' });
    expect(expectError(await patch('p-none', { allow: ['pypi.org'] }), 409, 'NETWORK_MODE_MISMATCH').message).toContain('none');
    expect((await getSession('p-none')).network).toEqual({ mode: 'none' });
    expect(storedNetwork('p-none')).toEqual({ mode: 'none' });
    expectError(await patch('p-nobody', { allow: ['pypi.org'] }), 404, 'SESSION_NOT_FOUND');
  });
});

describe('one-shot with a network', () => {
  it('checks the network like a session create: shape 400, pattern 400 naming the field, nothing run', async () => {
    const shape = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { command: 'echo ran', network: { mode: 'none', allow: ['pypi.org'] } } });
    expectError(shape, 400, 'FST_ERR_VALIDATION');
    const pattern = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { command: 'echo ran', network: { mode: 'allowlist', allow: ['ftp://pypi.org'] } } });
    expect(expectError(pattern, 400, 'INVALID_NETWORK_POLICY').message).toContain('network.allow.0');
    const streamed = await t.app.inject({ method: 'POST', url: '/v1/execute', headers: { accept: 'application/x-ndjson' }, payload: { command: 'echo ran', network: { mode: 'allowlist', allow: ['ftp://pypi.org'] } } });
    expectError(streamed, 400, 'INVALID_NETWORK_POLICY');
  });
});

describe('/readyz', () => {
  it('lists the network modes this host provides, with a reason for each one it does not', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/readyz' });
    const network = res.json<{ checks: { network: { modes: string[]; unavailable: Record<string, string> } } }>().checks.network;
    expect(network.modes).toContain('none');
    // This test host runs as root with python3 and nsenter: allowlist is there.
    expect(network.modes).toContain('allowlist');
    for (const mode of ['none', 'allowlist', 'outbound']) expect(network.modes.includes(mode) !== mode in network.unavailable, mode).toBe(true);
    expect(network).toEqual({ modes: t.sessions.networks.available.modes, unavailable: t.sessions.networks.available.unavailable });
  });
});
