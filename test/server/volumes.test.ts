// Shared volumes through the HTTP routes with real quota images: the MAX_VOLUMES cap at session
// create, GET /v1/volumes, and DELETE /v1/volumes/{name} (unmount, loop device released, files gone).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import type { VolumeListSchema } from '../../src/server/schemas.js';
import { useTestApp } from '../helpers/app.js';
import { createSession, execute, expectError } from '../helpers/http.js';
import { expectQuotaMount, loopBackingFiles, mountsUnder } from '../helpers/mounts.js';
import { IS_ROOT } from '../helpers/sandbox.js';

type VolumeListBody = z.infer<typeof VolumeListSchema>;
const MiB = 1024 * 1024;

describe.skipIf(!IS_ROOT)('volumes with quota images, MAX_VOLUMES=2', () => {
  const t = useTestApp({ MAX_VOLUMES: '2', VOLUME_QUOTA_BYTES: String(4 * MiB), WORKSPACE_QUOTA_BYTES: String(4 * MiB), WORKSPACE_POOL_SIZE: '0' });
  const volumeDir = (name: string) => path.join(fs.realpathSync(t.workspaceDir), 'volumes', name);
  const imageDir = (name: string) => path.join(fs.realpathSync(t.workspaceDir), 'volume-images', name);
  const create = (body: Record<string, unknown>) => t.app.inject({ method: 'POST', url: '/v1/sessions', payload: body });
  const list = async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/volumes' });
    expect(res.statusCode, res.body).toBe(200);
    return res.json<VolumeListBody>();
  };
  const remove = (name: string) => t.app.inject({ method: 'DELETE', url: `/v1/volumes/${name}` });

  it('a create naming a new volume past the cap is 429 MAX_VOLUMES and makes nothing; existing volumes stay usable', async () => {
    expect(t.sessions.quota.enabled).toBe(true);
    await createSession(t.app, { session_id: 's1', volumes: { v1: 'rw' } });
    await createSession(t.app, { session_id: 's2', volumes: { v2: 'ro' } });
    for (const volumes of [{ v3: 'rw' }, { v1: 'rw', v3: 'ro' }]) {
      const body = expectError(await create({ session_id: 's3', volumes }), 429, 'MAX_VOLUMES');
      expect(body.message).toContain('2');
    }
    expectError(await t.app.inject({ method: 'GET', url: '/v1/sessions/s3' }), 404, 'SESSION_NOT_FOUND');
    expect(fs.existsSync(path.join(t.workspaceDir, 'sessions', 's3'))).toBe(false);
    expect(fs.readdirSync(path.join(t.workspaceDir, 'volumes')).sort()).toEqual(['v1', 'v2']);
    expect(fs.readdirSync(path.join(t.workspaceDir, 'volume-images')).sort()).toEqual(['v1', 'v2']);
    await createSession(t.app, { session_id: 's4', volumes: { v1: 'ro', v2: 'rw' } });
  });

  it('GET /v1/volumes lists each volume with the sessions naming it and its quota image', async () => {
    const r = await execute(t.app, 's1', { command: 'head -c 300000 /dev/zero > /volumes/v1/data.bin' });
    expect(r.status, r.stderr).toBe('ok');
    const body = await list();
    expect(body.max_volumes).toBe(2);
    expect(body.volumes.map((v) => [v.name, v.in_use, v.sessions, v.quota_bytes])).toEqual([
      ['v1', true, ['s1', 's4'], 4 * MiB],
      ['v2', true, ['s2', 's4'], 4 * MiB],
    ]);
    const [v1, v2] = body.volumes;
    expect(v1?.used_bytes).toBeGreaterThan(300_000);
    expect(v1?.used_bytes).toBeGreaterThan((v2?.used_bytes ?? 0) + 290_000);
  });

  it('DELETE of a volume a session names is 409 VOLUME_IN_USE; unknown is 404; a bad name is 400', async () => {
    const body = expectError(await remove('v1'), 409, 'VOLUME_IN_USE');
    expect(body.message).toContain('s1');
    expectQuotaMount(volumeDir('v1'));
    expectError(await remove('nope'), 404, 'VOLUME_NOT_FOUND');
    expectError(await remove('a.b'), 400);
  });

  it('DELETE of an unused volume is 204: unmounted, loop device released, files gone, and the cap frees a slot', async () => {
    const r = await execute(t.app, 's2', { command: 'ls /volumes/v2' });
    expect(r.status, r.stderr).toBe('ok');
    const w = await execute(t.app, 's4', { command: 'mkdir -p /volumes/v2/d && echo x > /volumes/v2/d/f.txt && ln -s /etc /volumes/v2/etc' });
    expect(w.status, w.stderr).toBe('ok');
    const image = path.join(imageDir('v2'), 'workspace.img');
    expect(loopBackingFiles()).toContain(image);
    for (const id of ['s2', 's4']) expect((await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}` })).statusCode).toBe(204);
    expect((await list()).volumes.find((v) => v.name === 'v2')).toMatchObject({ in_use: false, sessions: [] });

    const res = await remove('v2');
    expect(res.statusCode, res.body).toBe(204);
    expect(fs.existsSync(volumeDir('v2'))).toBe(false);
    expect(fs.existsSync(imageDir('v2'))).toBe(false);
    expect(mountsUnder(volumeDir('v2'))).toEqual([]);
    expect(loopBackingFiles().filter((f) => f.startsWith(image))).toEqual([]);
    expect(fs.existsSync('/etc/passwd')).toBe(true);
    expect((await list()).volumes.map((v) => v.name)).toEqual(['v1']);
    expectError(await remove('v2'), 404, 'VOLUME_NOT_FOUND');

    // The slot is free again, and a volume made anew under the old name starts empty.
    await createSession(t.app, { session_id: 's5', volumes: { v3: 'rw' } });
    await createSession(t.app, { session_id: 's6', volumes: { v1: 'rw' } });
    expectError(await create({ session_id: 's7', volumes: { v2: 'rw' } }), 429, 'MAX_VOLUMES');
    expectQuotaMount(volumeDir('v3'));
  });

  it('a delete racing a create that names the volume never leaves a session without its volume', async () => {
    await createSession(t.app, { session_id: 'r0', volumes: { v3: 'rw' } });
    expect((await t.app.inject({ method: 'DELETE', url: '/v1/sessions/r0' })).statusCode).toBe(204);
    expect((await t.app.inject({ method: 'DELETE', url: '/v1/sessions/s5' })).statusCode).toBe(204);
    for (let i = 0; i < 3; i++) {
      const [created, deleted] = await Promise.all([create({ session_id: `race${i}`, volumes: { v3: 'rw' } }), remove('v3')]);
      expect(created.statusCode, created.body).toBe(201);
      expect([204, 409]).toContain(deleted.statusCode);
      expectQuotaMount(volumeDir('v3'));
      const r = await execute(t.app, `race${i}`, { command: 'echo ok > /volumes/v3/probe.txt && cat /volumes/v3/probe.txt' });
      expect(r.stdout).toBe('ok\n');
      expect((await t.app.inject({ method: 'DELETE', url: `/v1/sessions/race${i}` })).statusCode).toBe(204);
    }
  });
});

describe('MAX_VOLUMES=0, with an API key', () => {
  const KEY = 'volumes-test-key-0123456789';
  const t = useTestApp({ MAX_VOLUMES: '0', API_KEY: KEY, WORKSPACE_POOL_SIZE: '0' });
  const auth = { authorization: `Bearer ${KEY}` };

  it('no volume may be created; sessions without volumes still are', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: auth, payload: { session_id: 'z', volumes: { v: 'rw' } } });
    expectError(res, 429, 'MAX_VOLUMES');
    expect(fs.readdirSync(path.join(t.workspaceDir, 'volumes'))).toEqual([]);
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: auth, payload: { session_id: 'z' } })).statusCode).toBe(201);
    const listed = await t.app.inject({ method: 'GET', url: '/v1/volumes', headers: auth });
    expect(listed.json()).toEqual({ volumes: [], max_volumes: 0 });
  });

  it('the volume routes need the API key like every /v1 route', async () => {
    expectError(await t.app.inject({ method: 'GET', url: '/v1/volumes' }), 401, 'UNAUTHORIZED');
    expectError(await t.app.inject({ method: 'DELETE', url: '/v1/volumes/v' }), 401, 'UNAUTHORIZED');
    expectError(await t.app.inject({ method: 'DELETE', url: '/v1/volumes/v', headers: auth }), 404, 'VOLUME_NOT_FOUND');
  });

  it('the OpenAPI document describes both routes', async () => {
    const doc = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json<{ paths: Record<string, Record<string, { summary?: string; responses: Record<string, unknown> }>> }>();
    expect(doc.paths['/v1/volumes']?.get?.summary).toBe('List shared volumes');
    expect(Object.keys(doc.paths['/v1/volumes/{name}']?.delete?.responses ?? {})).toEqual(expect.arrayContaining(['204', '404', '409']));
    expect(Object.keys(doc.paths['/v1/sessions/{id}/files']?.post?.responses ?? {})).toEqual(expect.arrayContaining(['409', '413']));
  });
});
