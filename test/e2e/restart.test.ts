// Sessions and their files survive a restart of the real process; idle sessions expire while the
// service is down; what a crash leaves (staging, one-shot dirs, sandboxes) is cleaned up.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { hostProcessesMatching, waitForNoProcess, waitForSleep } from '../helpers/host-processes.js';
import {
  api, downloadFile, sleep, startServer, uploadFiles, useWorkspaceDir, type ExecResult,
} from '../helpers/server-process.js';

interface SessionInfo {
  session_id: string;
  environment: string;
  created_at: string;
  last_activity: string;
}

const workspaceDir = useWorkspaceDir('bs-e2e-restart-');

describe('restart', () => {
  test('sessions, uploads and execution outputs survive a SIGTERM restart', async () => {
    // Binary-ish content (not valid UTF-8) must come back byte for byte.
    const blobA = Buffer.concat([Buffer.from('head\n'), randomBytes(4096), Buffer.from([0xff, 0xfe, 0x00, 0x80])]);
    const csvB = 'x,y\n1,2\n';

    const first = await startServer({ workspaceDir: workspaceDir.path });
    const a = await api<SessionInfo>(first.baseUrl, 'POST', '/v1/sessions', { session_id: 'keep-a' });
    const b = await api<SessionInfo>(first.baseUrl, 'POST', '/v1/sessions', { session_id: 'keep-b', environment: 'pandas-exec' });
    expect(a.status).toBe(201);
    expect(b.status).toBe(201);
    expect((await uploadFiles(first.baseUrl, 'keep-a', [{ name: 'blob.txt', content: blobA }])).status).toBe(201);
    expect((await uploadFiles(first.baseUrl, 'keep-b', [{ name: 'table.csv', content: csvB }], 'in')).status).toBe(201);
    const out = await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/keep-a/execute', {
      command: 'mkdir -p out && sha256sum blob.txt | cut -d" " -f1 > out/digest.txt && echo written',
    });
    expect(out.body).toMatchObject({ status: 'ok', stdout: 'written\n' });
    expect(out.body.files.created).toEqual(['out/digest.txt']);
    const digestBefore = (await downloadFile(first.baseUrl, 'keep-a', 'out/digest.txt')).bytes;
    const filesBefore = {
      a: (await api<{ files: { path: string; size: number }[] }>(first.baseUrl, 'GET', '/v1/sessions/keep-a/files')).body.files,
      b: (await api<{ files: { path: string; size: number }[] }>(first.baseUrl, 'GET', '/v1/sessions/keep-b/files')).body.files,
    };

    expect(await first.stop('SIGTERM')).toEqual({ code: 0, signal: null });

    const second = await startServer({ workspaceDir: workspaceDir.path });
    const listed = await api<{ sessions: SessionInfo[] }>(second.baseUrl, 'GET', '/v1/sessions');
    expect(listed.status).toBe(200);
    const byId = new Map(listed.body.sessions.map((s) => [s.session_id, s]));
    expect([...byId.keys()].sort()).toEqual(['keep-a', 'keep-b']);
    expect(byId.get('keep-a')).toMatchObject({ environment: 'bare', created_at: a.body.created_at });
    expect(byId.get('keep-b')).toMatchObject({ environment: 'pandas-exec', created_at: b.body.created_at });

    const filesA = (await api<{ files: { path: string; size: number }[] }>(second.baseUrl, 'GET', '/v1/sessions/keep-a/files')).body.files;
    const filesB = (await api<{ files: { path: string; size: number }[] }>(second.baseUrl, 'GET', '/v1/sessions/keep-b/files')).body.files;
    expect(filesA.map((f) => [f.path, f.size])).toEqual(filesBefore.a.map((f) => [f.path, f.size]));
    expect(filesB.map((f) => [f.path, f.size])).toEqual([['in/table.csv', csvB.length]]);
    expect(filesA.map((f) => f.path)).toEqual(['blob.txt', 'out/digest.txt']);

    const blobAfter = await downloadFile(second.baseUrl, 'keep-a', 'blob.txt');
    expect(blobAfter.status).toBe(200);
    expect(blobAfter.bytes.equals(blobA)).toBe(true);
    expect((await downloadFile(second.baseUrl, 'keep-a', 'out/digest.txt')).bytes.equals(digestBefore)).toBe(true);
    expect((await downloadFile(second.baseUrl, 'keep-b', 'in/table.csv')).bytes.toString('utf8')).toBe(csvB);

    // Executions in restored sessions see (and may change) their files.
    const again = await api<ExecResult>(second.baseUrl, 'POST', '/v1/sessions/keep-a/execute', {
      command: 'test "$(sha256sum blob.txt | cut -d" " -f1)" = "$(cat out/digest.txt)" && echo same && echo more >> out/digest.txt',
    });
    expect(again.body).toMatchObject({ status: 'ok', stdout: 'same\n' });
    expect(again.body.files.modified).toEqual(['out/digest.txt']);
    const pandas = await api<ExecResult>(second.baseUrl, 'POST', '/v1/sessions/keep-b/execute', {
      script: "import pandas as pd\nprint(int(pd.read_csv('in/table.csv').sum().sum()))",
      timeout_seconds: 60,
    });
    expect(pandas.body).toMatchObject({ status: 'ok', stdout: '3\n' });

    expect(await second.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  }, 60_000);

  test('a session whose idle timeout passed while the service was down is gone after restart', async () => {
    const env = { BUBBLE_SANDBOX_SESSION_IDLE_TIMEOUT_SECONDS: '2' };
    const first = await startServer({ workspaceDir: workspaceDir.path, env });
    expect((await api(first.baseUrl, 'POST', '/v1/sessions', { session_id: 'short-lived' })).status).toBe(201);
    expect((await uploadFiles(first.baseUrl, 'short-lived', [{ name: 'a.txt', content: 'a' }])).status).toBe(201);
    const dir = path.join(workspaceDir.path, 'sessions', 'short-lived');
    expect(fs.existsSync(path.join(dir, 'workspace', 'a.txt'))).toBe(true);
    expect((await first.stop('SIGTERM')).code).toBe(0);

    await sleep(3000);

    const second = await startServer({ workspaceDir: workspaceDir.path, env });
    const listed = await api<{ sessions: SessionInfo[] }>(second.baseUrl, 'GET', '/v1/sessions');
    expect(listed.body.sessions).toEqual([]);
    expect((await api(second.baseUrl, 'GET', '/v1/sessions/short-lived')).status).toBe(404);
    expect(fs.existsSync(dir)).toBe(false);
    expect(second.jsonLogs().some((l) => l.audit === 'session.expired' && l.session_id === 'short-lived')).toBe(true);
  }, 60_000);

  test('start-up removes what a crash left in staging/ and oneshot/', async () => {
    for (const sub of ['staging', 'oneshot']) {
      const root = path.join(workspaceDir.path, sub);
      fs.mkdirSync(path.join(root, 'req-1', 'deep'), { recursive: true, mode: 0o711 });
      fs.writeFileSync(path.join(root, 'req-1', 'deep', 'part.csv'), 'half an upload');
      fs.writeFileSync(path.join(root, 'loose-file'), 'x');
      // A symlink must be removed, never followed.
      fs.symlinkSync('/etc', path.join(root, 'link-to-etc'));
    }
    const server = await startServer({ workspaceDir: workspaceDir.path });
    expect(fs.readdirSync(path.join(workspaceDir.path, 'staging'))).toEqual([]);
    expect(fs.readdirSync(path.join(workspaceDir.path, 'oneshot'))).toEqual([]);
    expect(fs.existsSync('/etc/passwd')).toBe(true);
    expect((await server.stop('SIGTERM')).code).toBe(0);
  }, 60_000);

  test('SIGKILL during an execution leaves no sandbox behind; the session is there after restart', async () => {
    const marker = `1000.${String(process.pid % 1000).padStart(3, '0')}7`;
    const first = await startServer({ workspaceDir: workspaceDir.path });
    expect((await api(first.baseUrl, 'POST', '/v1/sessions', { session_id: 'crashy' })).status).toBe(201);
    expect((await uploadFiles(first.baseUrl, 'crashy', [{ name: 'keep.txt', content: 'kept' }])).status).toBe(201);

    const pending = api(first.baseUrl, 'POST', '/v1/sessions/crashy/execute', { command: `sleep ${marker}`, timeout_seconds: 120 })
      .then((r) => ({ ok: true as const, status: r.status }), (err: unknown) => ({ ok: false as const, err }));
    await waitForSleep(marker);

    expect(await first.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    // The client sees the connection die, not an answer.
    const outcome = await pending;
    expect(outcome.ok).toBe(false);
    // bwrap --die-with-parent: nothing of the sandbox may outlive the service.
    const left = await waitForNoProcess(`sleep ${marker}`, 2000);
    expect(left).toEqual([]);

    const second = await startServer({ workspaceDir: workspaceDir.path });
    const listed = await api<{ sessions: SessionInfo[] }>(second.baseUrl, 'GET', '/v1/sessions');
    expect(listed.body.sessions.map((s) => s.session_id)).toEqual(['crashy']);
    expect((await downloadFile(second.baseUrl, 'crashy', 'keep.txt')).bytes.toString('utf8')).toBe('kept');
    const r = await api<ExecResult>(second.baseUrl, 'POST', '/v1/sessions/crashy/execute', { command: 'cat keep.txt' });
    expect(r.body).toMatchObject({ status: 'ok', stdout: 'kept' });
    expect(hostProcessesMatching(`sleep ${marker}`)).toEqual([]);
  }, 60_000);
});
