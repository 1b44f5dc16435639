// Session lifecycle through the HTTP routes, with the real sandbox and a hand-moved clock.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createTestApp, useTestApp } from '../helpers/app.js';
import {
  ISO_UTC, createSession, expectError, fakeClock, listPaths, upload, type SessionInfoBody,
} from '../helpers/http.js';

const IDLE = 100;
const clock = fakeClock();
// The background sweep is pushed far out so only explicit sweep() calls expire sessions.
const t = useTestApp({ SESSION_IDLE_TIMEOUT_SECONDS: String(IDLE), SWEEP_INTERVAL_SECONDS: '86400' }, { now: clock.now });

describe('POST /v1/sessions', () => {
  it('creates a session: 201 with SessionInfo, ISO times and expires_at = last_activity + idle timeout', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'info-1', environment: 'bare' } });
    expect(res.statusCode).toBe(201);
    const s = res.json<SessionInfoBody>();
    expect(Object.keys(s).sort()).toEqual(['created_at', 'environment', 'expires_at', 'last_activity', 'network', 'session_id', 'volumes', 'writable_root']);
    expect(s.network).toEqual({ mode: 'none' });
    expect((s as unknown as { writable_root: boolean }).writable_root).toBe(false);
    expect(s.session_id).toBe('info-1');
    expect(s.environment).toBe('bare');
    expect(s.volumes).toEqual({});
    for (const k of ['created_at', 'last_activity', 'expires_at'] as const) expect(s[k]).toMatch(ISO_UTC);
    expect(s.created_at).toBe(clock.iso());
    expect(s.last_activity).toBe(clock.iso());
    expect(Date.parse(s.expires_at) - Date.parse(s.last_activity)).toBe(IDLE * 1000);
    expect(fs.statSync(t.sessions.workspaceDir('info-1')).isDirectory()).toBe(true);
  });

  it('defaults to the bare environment and makes a random id when none is given', async () => {
    const a = await createSession(t.app);
    const b = await createSession(t.app);
    expect(a.session_id).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(b.session_id).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(a.session_id).not.toBe(b.session_id);
    expect(a.environment).toBe('bare');
  });

  it('accepts a request without any body', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions' });
    expect(res.statusCode).toBe(201);
    expect(res.json<SessionInfoBody>().environment).toBe('bare');
  });

  it('is idempotent: the same id and configuration answer 200 with the same session', async () => {
    const first = await createSession(t.app, { session_id: 'idem', volumes: { 'shared-a': 'ro' } });
    clock.advance(5);
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'idem', environment: 'bare', volumes: { 'shared-a': 'ro' } } });
    expect(res.statusCode).toBe(200);
    const again = res.json<SessionInfoBody>();
    expect(again.session_id).toBe('idem');
    expect(again.created_at).toBe(first.created_at);
    expect(again.volumes).toEqual({ 'shared-a': 'ro' });
    const listed = t.app.inject({ method: 'GET', url: '/v1/sessions' });
    expect((await listed).json<{ sessions: SessionInfoBody[] }>().sessions.filter((s) => s.session_id === 'idem')).toHaveLength(1);
  });

  it('answers 409 SESSION_CONFLICT for the same id with another environment or other volumes', async () => {
    await createSession(t.app, { session_id: 'conflict' });
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'conflict', environment: 'pandas-exec' } }), 409, 'SESSION_CONFLICT');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'conflict', volumes: { v1: 'rw' } } }), 409, 'SESSION_CONFLICT');
    await createSession(t.app, { session_id: 'conflict-vol', volumes: { v1: 'ro' } });
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'conflict-vol', volumes: { v1: 'rw' } } }), 409, 'SESSION_CONFLICT');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'conflict-vol' } }), 409, 'SESSION_CONFLICT');
    // The original session is unchanged.
    const got = await t.app.inject({ method: 'GET', url: '/v1/sessions/conflict' });
    expect(got.json<SessionInfoBody>().environment).toBe('bare');
  });

  it('answers 404 ENVIRONMENT_NOT_FOUND for an unknown environment and 400 for an invalid name', async () => {
    const missing = expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'env-x', environment: 'no-such-env' } }), 404, 'ENVIRONMENT_NOT_FOUND');
    expect(missing.message).toContain('no-such-env');
    const bad = expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'env-y', environment: '../bare' } }), 400);
    expect(bad.message).toContain('environment');
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/env-x' }), 404, 'SESSION_NOT_FOUND');
    expect(fs.existsSync(t.sessions.workspaceDir('env-x'))).toBe(false);
  });
});

describe('GET /v1/sessions and /v1/sessions/{id}', () => {
  it('lists the sessions that exist', async () => {
    await createSession(t.app, { session_id: 'list-a' });
    await createSession(t.app, { session_id: 'list-b', environment: 'pandas-exec' });
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions' });
    expect(res.statusCode).toBe(200);
    const { sessions } = res.json<{ sessions: SessionInfoBody[] }>();
    const byId = new Map(sessions.map((s) => [s.session_id, s]));
    expect(byId.get('list-a')?.environment).toBe('bare');
    expect(byId.get('list-b')?.environment).toBe('pandas-exec');
    expect(sessions.length).toBe(t.sessions.count);
    for (const s of sessions) expect(s.expires_at).toMatch(ISO_UTC);
  });

  it('GET one refreshes last_activity and expires_at', async () => {
    const created = await createSession(t.app, { session_id: 'refresh' });
    clock.advance(42);
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions/refresh' });
    expect(res.statusCode).toBe(200);
    const s = res.json<SessionInfoBody>();
    expect(s.created_at).toBe(created.created_at);
    expect(s.last_activity).toBe(clock.iso());
    expect(Date.parse(s.last_activity) - Date.parse(created.last_activity)).toBe(42_000);
    expect(Date.parse(s.expires_at)).toBe(clock.now() + IDLE * 1000);
    const listed = (await t.app.inject({ method: 'GET', url: '/v1/sessions' })).json<{ sessions: SessionInfoBody[] }>().sessions;
    expect(listed.find((x) => x.session_id === 'refresh')?.last_activity).toBe(clock.iso());
  });

  it('answers 404 SESSION_NOT_FOUND for an unknown id', async () => {
    const body = expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/does-not-exist' }), 404, 'SESSION_NOT_FOUND');
    expect(body.message).toContain('does-not-exist');
  });
});

describe('DELETE /v1/sessions/{id}', () => {
  it('answers 204 and removes the workspace from disk', async () => {
    await createSession(t.app, { session_id: 'del-1' });
    expect((await upload(t.app, 'del-1', [{ name: 'a.txt', content: 'hello' }])).statusCode).toBe(201);
    const dir = t.sessions.workspaceDir('del-1');
    expect(fs.existsSync(dir)).toBe(true);
    const res = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/del-1' });
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.existsSync(path.dirname(dir))).toBe(false); // nothing of the session is left, quota image included
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/del-1' }), 404, 'SESSION_NOT_FOUND');
    expectError(await t.app.inject({ method: 'DELETE', url: '/v1/sessions/del-1' }), 404, 'SESSION_NOT_FOUND');
  });

  it('clear_data=false keeps the files on disk and a re-create with the same id re-attaches them', async () => {
    await createSession(t.app, { session_id: 'keep' });
    expect((await upload(t.app, 'keep', [{ name: 'kept.csv', content: 'a,b\n1,2\n' }])).statusCode).toBe(201);
    const res = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/keep?clear_data=false' });
    expect(res.statusCode).toBe(204);
    const dir = t.sessions.workspaceDir('keep');
    // Kept on disk: as plain files, or inside the session's quota image when quotas are on.
    const keptPlain = fs.existsSync(path.join(dir, 'kept.csv'));
    const keptImage = fs.existsSync(path.join(path.dirname(dir), 'workspace.img'));
    expect(keptPlain || keptImage).toBe(true);
    if (keptPlain) expect(fs.readFileSync(path.join(dir, 'kept.csv'), 'utf8')).toBe('a,b\n1,2\n');
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/keep' }), 404, 'SESSION_NOT_FOUND');
    const listed = (await t.app.inject({ method: 'GET', url: '/v1/sessions' })).json<{ sessions: SessionInfoBody[] }>().sessions;
    expect(listed.map((s) => s.session_id)).not.toContain('keep');

    const again = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'keep' } });
    expect(again.statusCode).toBe(201);
    expect(await listPaths(t.app, 'keep')).toEqual(['kept.csv']);
    const dl = await t.app.inject({ method: 'GET', url: '/v1/sessions/keep/files/kept.csv' });
    expect(dl.body).toBe('a,b\n1,2\n');
  });

  it('a kept workspace without a live session can still be deleted (clear_data=true)', async () => {
    await createSession(t.app, { session_id: 'keep-2' });
    await t.app.inject({ method: 'DELETE', url: '/v1/sessions/keep-2?clear_data=false' });
    const dir = t.sessions.workspaceDir('keep-2');
    expect(fs.existsSync(dir)).toBe(true);
    expect((await t.app.inject({ method: 'DELETE', url: '/v1/sessions/keep-2' })).statusCode).toBe(204);
    expect(fs.existsSync(path.dirname(dir))).toBe(false);
  });
});

describe('idle sweep', () => {
  it('removes a session idle past the timeout with its data and keeps one touched recently', async () => {
    await createSession(t.app, { session_id: 'idle-old' });
    await createSession(t.app, { session_id: 'idle-fresh' });
    expect((await upload(t.app, 'idle-old', [{ name: 'x.txt', content: 'x' }])).statusCode).toBe(201);
    clock.advance(IDLE - 10);
    expect((await t.app.inject({ method: 'GET', url: '/v1/sessions/idle-fresh' })).statusCode).toBe(200);
    clock.advance(20); // idle-old: IDLE + 10 s idle; idle-fresh: 20 s
    const removed = await t.sessions.sweep();
    expect(removed).toContain('idle-old');
    expect(removed).not.toContain('idle-fresh');
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/idle-old' }), 404, 'SESSION_NOT_FOUND');
    expect(fs.existsSync(path.dirname(t.sessions.workspaceDir('idle-old')))).toBe(false);
    expect((await t.app.inject({ method: 'GET', url: '/v1/sessions/idle-fresh' })).statusCode).toBe(200);
    expect(fs.existsSync(t.sessions.workspaceDir('idle-fresh'))).toBe(true);
  });

  it('an execution counts as activity', async () => {
    await createSession(t.app, { session_id: 'idle-exec' });
    clock.advance(IDLE - 10);
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/idle-exec/execute', payload: { command: 'true' } });
    expect(res.statusCode).toBe(200);
    clock.advance(20);
    expect(await t.sessions.sweep()).not.toContain('idle-exec');
    expect((await t.app.inject({ method: 'GET', url: '/v1/sessions/idle-exec' })).statusCode).toBe(200);
  });
});

describe('limits and settings', () => {
  it('MAX_SESSIONS=2: a third session is 429 MAX_SESSIONS with Retry-After; an idempotent re-create still answers 200', async () => {
    const m = await createTestApp({ MAX_SESSIONS: '2' });
    try {
      await createSession(m.app, { session_id: 'one' });
      await createSession(m.app, { session_id: 'two' });
      const third = await m.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'three' } });
      expectError(third, 429, 'MAX_SESSIONS');
      expect(Number(third.headers['retry-after'])).toBeGreaterThan(0);
      const random = await m.app.inject({ method: 'POST', url: '/v1/sessions', payload: {} });
      expectError(random, 429, 'MAX_SESSIONS');
      expect(fs.existsSync(m.sessions.workspaceDir('three'))).toBe(false);
      const again = await m.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'one' } });
      expect(again.statusCode).toBe(200);
      expect(again.json<SessionInfoBody>().session_id).toBe('one');
      // Freeing a slot lets a new session in.
      expect((await m.app.inject({ method: 'DELETE', url: '/v1/sessions/two' })).statusCode).toBe(204);
      expect((await m.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'three' } })).statusCode).toBe(201);
    } finally {
      await m.close();
    }
  });

  it('ALLOW_PERSISTENT_SESSIONS=false: clear_data=false is 403 PERSISTENT_SESSIONS_DISABLED and the session stays', async () => {
    const p = await createTestApp({ ALLOW_PERSISTENT_SESSIONS: 'false' });
    try {
      await createSession(p.app, { session_id: 'nokeep' });
      expectError(await p.app.inject({ method: 'DELETE', url: '/v1/sessions/nokeep?clear_data=false' }), 403, 'PERSISTENT_SESSIONS_DISABLED');
      expect((await p.app.inject({ method: 'GET', url: '/v1/sessions/nokeep' })).statusCode).toBe(200);
      expect((await p.app.inject({ method: 'DELETE', url: '/v1/sessions/nokeep?clear_data=true' })).statusCode).toBe(204);
      expect(fs.existsSync(p.sessions.workspaceDir('nokeep'))).toBe(false);
    } finally {
      await p.close();
    }
  });
});

describe('restart', () => {
  it('sessions and their files survive a restart of the service', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-restart-'));
    try {
      const first = await createTestApp({}, { workspaceDir: dir });
      let created: SessionInfoBody;
      try {
        created = await createSession(first.app, { session_id: 'survivor', environment: 'pandas-exec' });
        expect((await upload(first.app, 'survivor', [{ name: 'kept.txt', content: 'still here' }])).statusCode).toBe(201);
      } finally {
        await first.close();
      }
      const second = await createTestApp({}, { workspaceDir: dir });
      try {
        const got = await second.app.inject({ method: 'GET', url: '/v1/sessions/survivor' });
        expect(got.statusCode).toBe(200);
        expect(got.json<SessionInfoBody>()).toMatchObject({ session_id: 'survivor', environment: 'pandas-exec', created_at: created.created_at });
        expect((await second.app.inject({ method: 'GET', url: '/v1/sessions/survivor/files/kept.txt' })).body).toBe('still here');
        const r = await second.app.inject({ method: 'POST', url: '/v1/sessions/survivor/execute', payload: { command: 'cat kept.txt' } });
        expect(r.json<{ stdout: string }>().stdout).toBe('still here');
      } finally {
        await second.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('GET /v1/environments', () => {
  it('lists the built environments sorted by name with description and dependencies', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/environments' });
    expect(res.statusCode).toBe(200);
    const { environments } = res.json<{ environments: { name: string; description: string; dependencies: string[] }[] }>();
    const names = environments.map((e) => e.name);
    expect(names).toEqual([...names].sort());
    expect(environments.find((e) => e.name === 'bare')).toEqual({ name: 'bare', description: 'Python standard library only', dependencies: [], kind: 'venv', python: true, preload: [] });
    expect(environments.find((e) => e.name === 'pandas-exec')).toMatchObject({ dependencies: ['pandas', 'matplotlib'], preload: ['pandas', 'numpy', 'matplotlib'] });
  });
});
