// Uploads against a sandbox that changes the workspace under them, through the HTTP route with the
// real sandbox and real quota images: a full quota and a racing sandbox give a 4xx, never a 5xx,
// and a refused request leaves none of its files behind.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { createSession, execute, expectError, upload } from '../helpers/http.js';
import { IS_ROOT } from '../helpers/sandbox.js';

const MiB = 1024 * 1024;
const t = useTestApp({ WORKSPACE_QUOTA_BYTES: String(8 * MiB), WORKSPACE_POOL_SIZE: '0', MAX_UPLOAD_SIZE_BYTES: String(4 * MiB) });

/** Fills the session's quota image to the last block: dd stops at ENOSPC, the second one with the last few KiB. */
async function fillWorkspace(id: string, leaveFree = ''): Promise<void> {
  const free = leaveFree === '' ? '' : `; truncate -s -${leaveFree} fill.bin`;
  const r = await execute(t.app, id, { command: `dd if=/dev/zero of=fill.bin bs=64k 2>/dev/null; dd if=/dev/zero of=fill.bin bs=1k oflag=append conv=notrunc 2>/dev/null${free}; df -k .` });
  expect(r.status, r.stderr).toBe('ok');
  if (leaveFree === '') expect(r.stdout).toMatch(/ 0 +100% /);
}

describe.skipIf(!IS_ROOT)('upload into a full workspace', () => {
  it('413 WORKSPACE_FULL when the file does not fit, and when a directory cannot be made; nothing kept', async () => {
    expect(t.sessions.quota.enabled, 'quota images are needed for this test').toBe(true);
    await createSession(t.app, { session_id: 'full' });
    await fillWorkspace('full');
    const ws = t.sessions.workspaceDir('full');
    expectError(await upload(t.app, 'full', [{ name: 'a.txt', content: Buffer.alloc(64 * 1024, 'a') }]), 413, 'WORKSPACE_FULL');
    expectError(await upload(t.app, 'full', [{ name: 'b.txt', content: 'b' }], '?dir=new/deeper'), 413, 'WORKSPACE_FULL');
    expect(fs.readdirSync(ws).sort()).toEqual(['fill.bin']);
  });

  it('a request whose second file does not fit keeps neither file', async () => {
    await createSession(t.app, { session_id: 'half' });
    await fillWorkspace('half', '256K');
    const ws = t.sessions.workspaceDir('half');
    const res = await upload(t.app, 'half', [
      { name: 'small.txt', content: 'fits' },
      { name: 'big.txt', content: Buffer.alloc(2 * MiB, 'b') },
    ], '?dir=in');
    expectError(res, 413, 'WORKSPACE_FULL');
    expect(fs.readdirSync(ws).sort()).toEqual(['fill.bin']);
    // The space is free again: the same small file alone goes in.
    expect((await upload(t.app, 'half', [{ name: 'small.txt', content: 'fits' }], '?dir=in')).statusCode).toBe(201);
  });
});

describe('upload onto states the sandbox made', () => {
  it('a request with one file in the way keeps none of its files (400, the other file not kept)', async () => {
    await createSession(t.app, { session_id: 'inway' });
    await execute(t.app, 'inway', { command: 'mkdir -p in/b.txt' });
    expectError(await upload(t.app, 'inway', [{ name: 'a.txt', content: 'a' }, { name: 'b.txt', content: 'b' }], '?dir=in'), 400, 'INVALID_PATH');
    expect(fs.readdirSync(path.join(t.sessions.workspaceDir('inway'), 'in'))).toEqual(['b.txt']);
  });

  it('downloads and deletes of directories, FIFOs, sockets and chmod 000 files answer 4xx or succeed, never 5xx', async () => {
    await createSession(t.app, { session_id: 'odd' });
    const r = await execute(t.app, 'odd', {
      command: "mkdir dir; mkfifo fifo; python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('sock')\"; echo s > locked; chmod 000 locked; mkdir shut; echo x > shut/f; chmod 000 shut",
    });
    expect(r.status, r.stderr).toBe('ok');
    const get = (p: string) => t.app.inject({ method: 'GET', url: `/v1/sessions/odd/files/${p}` });
    const del = (p: string) => t.app.inject({ method: 'DELETE', url: `/v1/sessions/odd/files/${p}` });
    for (const p of ['dir', 'fifo', 'sock']) expectError(await get(p), 404, 'FILE_NOT_FOUND');
    // The service is root: a mode the sandbox set does not lock it out.
    expect((await get('locked')).body).toBe('s\n');
    expect((await get('shut/f')).body).toBe('x\n');
    expectError(await del('dir'), 400, 'INVALID_PATH');
    for (const p of ['fifo', 'sock', 'locked', 'shut/f']) expect((await del(p)).statusCode).toBe(204);
    expect(fs.readdirSync(t.sessions.workspaceDir('odd')).sort()).toEqual(['dir', 'shut']);
  });
});

const SWAPPER = String.raw`
import os, shutil, threading, time
stop = False
def swap():
    kinds = ('dir', 'link', 'file', 'fifo', 'none', 'dir', 'dir')
    i = 0
    while not stop:
        try:
            if os.path.isdir('d') and not os.path.islink('d'):
                shutil.rmtree('d', ignore_errors=True)
            elif os.path.lexists('d'):
                os.unlink('d')
            kind = kinds[i % len(kinds)]
            i += 1
            if kind == 'dir':
                os.mkdir('d')
            elif kind == 'link':
                os.symlink('/etc', 'd')
            elif kind == 'file':
                open('d', 'w').close()
            elif kind == 'fifo':
                os.mkfifo('d')
        except OSError:
            pass
        time.sleep(0.003 if kind == 'dir' else 0.0005)
threading.Thread(target=swap, daemon=True).start()
`;

describe('upload against a sandbox swapping the target directory', () => {
  it('every answer is 201 or a 4xx, never a 5xx, and nothing lands outside the workspace', async () => {
    await createSession(t.app, { session_id: 'race' });
    const started = await t.app.inject({ method: 'POST', url: '/v1/sessions/race/run_code', payload: { code: SWAPPER } });
    expect(started.statusCode, started.body).toBe(200);
    const etcBefore = fs.readdirSync('/etc');
    const statuses = new Map<string, number>();
    try {
      for (let i = 0; i < 300; i++) {
        const dir = i % 3 === 0 ? 'd/sub' : 'd';
        const files = i % 5 === 0 ? [{ name: `a${i}.txt`, content: 'a' }, { name: `b${i}.txt`, content: 'b' }] : [{ name: `f${i}.txt`, content: 'x' }];
        const res = await upload(t.app, 'race', files, `?dir=${dir}`);
        const key = res.statusCode === 201 ? '201' : `${res.statusCode} ${res.json<{ code: string }>().code}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
        expect(res.statusCode, `upload ${i} into ${dir}: ${res.body}`).toBeLessThan(500);
        if (res.statusCode !== 201) expectError(res, res.statusCode);
      }
    } finally {
      await t.app.inject({ method: 'POST', url: '/v1/sessions/race/run_code', payload: { code: 'stop = True' } });
    }
    // The race really ran: the swapper was seen from both sides.
    expect(statuses.get('201') ?? 0, JSON.stringify([...statuses])).toBeGreaterThan(0);
    expect([...statuses.keys()].filter((k) => k !== '201').length, JSON.stringify([...statuses])).toBeGreaterThan(0);
    expect(fs.readdirSync('/etc')).toEqual(etcBefore);
    // No temp name of an upload is left in the workspace.
    const leftovers = fs.readdirSync(t.sessions.workspaceDir('race'), { recursive: true }).map(String).filter((n) => path.basename(n).startsWith('.bubble-'));
    expect(leftovers).toEqual([]);
  }, 120_000);
});
