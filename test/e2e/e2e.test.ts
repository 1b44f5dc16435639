// The user journey against the real service process over loopback HTTP: session in pandas-exec,
// upload, execute, list, download, delete keeping the data, re-attach, delete for good.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import {
  api, downloadFile, startServer, uploadFiles, useWorkspaceDir, type ExecResult,
} from '../helpers/server-process.js';

const CSV = 'city,temp\nOslo,4\nRome,18\nOslo,6\nRome,20\n';
const SCRIPT = [
  'import pandas as pd',
  "df = pd.read_csv('data.csv')",
  "out = df.groupby('city', as_index=False)['temp'].mean()",
  "out.to_csv('result.csv', index=False)",
  "print(f'rows={len(df)} cities={len(out)} max={out.temp.max()}')",
].join('\n');
const EXPECTED_RESULT = 'city,temp\nOslo,5.0\nRome,19.0\n';

const workspaceDir = useWorkspaceDir('bs-e2e-');

describe('user journey', () => {
  test('create, upload, execute, list, download, keep, re-attach, delete', async () => {
    const server = await startServer({ workspaceDir: workspaceDir.path });
    const base = server.baseUrl;
    const id = 'e2e-journey';
    const sessionDir = path.join(workspaceDir.path, 'sessions', id);
    const workspace = path.join(sessionDir, 'workspace');

    const created = await api<{ session_id: string; environment: string; created_at: string }>(base, 'POST', '/v1/sessions', { environment: 'pandas-exec', session_id: id });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ session_id: id, environment: 'pandas-exec', volumes: {} });

    // The same id and configuration again is idempotent.
    const again = await api(base, 'POST', '/v1/sessions', { environment: 'pandas-exec', session_id: id });
    expect(again.status).toBe(200);
    expect(again.body.created_at).toBe(created.body.created_at);

    const up = await uploadFiles(base, id, [{ name: 'data.csv', content: CSV }]);
    expect(up.status).toBe(201);
    expect(up.body.files).toEqual([{ path: 'data.csv', size: Buffer.byteLength(CSV) }]);

    const exec = await api<ExecResult>(base, 'POST', `/v1/sessions/${id}/execute`, { script: SCRIPT, timeout_seconds: 60 });
    expect(exec.status).toBe(200);
    expect(exec.body.stderr).toBe('');
    expect(exec.body).toMatchObject({ status: 'ok', exit_code: 0, signal: null, timed_out: false, stdout: 'rows=4 cities=2 max=19.0\n' });
    expect(exec.body.files.created).toEqual(['result.csv']);
    expect(exec.body.files.modified).toEqual([]);
    expect(exec.body.files.deleted).toEqual([]);

    const list = await api<{ files: { path: string; size: number; modified_at: string }[] }>(base, 'GET', `/v1/sessions/${id}/files`);
    expect(list.status).toBe(200);
    expect(list.body.files.map((f) => [f.path, f.size])).toEqual([
      ['data.csv', Buffer.byteLength(CSV)],
      ['result.csv', Buffer.byteLength(EXPECTED_RESULT)],
    ]);
    for (const f of list.body.files) expect(Number.isNaN(Date.parse(f.modified_at))).toBe(false);

    const dl = await downloadFile(base, id, 'result.csv');
    expect(dl.status).toBe(200);
    expect(dl.headers.get('content-type')).toBe('application/octet-stream');
    expect(dl.headers.get('content-disposition')).toMatch(/^attachment;.*filename="result\.csv"/);
    expect(dl.bytes.toString('utf8')).toBe(EXPECTED_RESULT);

    // Forget the session, keep its workspace on disk.
    const keep = await api(base, 'DELETE', `/v1/sessions/${id}?clear_data=false`);
    expect(keep.status).toBe(204);
    expect(keep.text).toBe('');
    // With workspace quotas the kept files live in the session's image (unmounted until the
    // session comes back); without, in the plain directory.
    const image = path.join(sessionDir, 'workspace.img');
    if (fs.existsSync(image)) expect(fs.statSync(image).size).toBeGreaterThan(0);
    else {
      expect(fs.readFileSync(path.join(workspace, 'result.csv'), 'utf8')).toBe(EXPECTED_RESULT);
      expect(fs.readFileSync(path.join(workspace, 'data.csv'), 'utf8')).toBe(CSV);
    }
    const gone = await api(base, 'GET', `/v1/sessions/${id}`);
    expect(gone.status).toBe(404);
    expect(gone.body).toMatchObject({ statusCode: 404, code: 'SESSION_NOT_FOUND' });
    const listed = await api<{ sessions: { session_id: string }[] }>(base, 'GET', '/v1/sessions');
    expect(listed.body.sessions.map((s) => s.session_id)).not.toContain(id);

    // The same id again re-attaches the kept workspace.
    const recreated = await api(base, 'POST', '/v1/sessions', { environment: 'pandas-exec', session_id: id });
    expect(recreated.status).toBe(201);
    const dl2 = await downloadFile(base, id, 'result.csv');
    expect(dl2.status).toBe(200);
    expect(dl2.bytes.toString('utf8')).toBe(EXPECTED_RESULT);
    // Code in the re-attached session can still read and write its old files.
    const exec2 = await api<ExecResult>(base, 'POST', `/v1/sessions/${id}/execute`, {
      script: "import pandas as pd\nprint(pd.read_csv('result.csv').shape)\nopen('result.csv', 'a').write('Bergen,9.0\\n')",
      timeout_seconds: 60,
    });
    expect(exec2.body).toMatchObject({ status: 'ok', stdout: '(2, 2)\n' });
    expect(exec2.body.files.modified).toEqual(['result.csv']);

    // Delete for good.
    const del = await api(base, 'DELETE', `/v1/sessions/${id}?clear_data=true`);
    expect(del.status).toBe(204);
    expect(fs.existsSync(sessionDir)).toBe(false);
    const after = await api(base, 'GET', `/v1/sessions/${id}`);
    expect(after.status).toBe(404);
    expect(after.body).toMatchObject({ code: 'SESSION_NOT_FOUND' });
    const afterFiles = await api(base, 'GET', `/v1/sessions/${id}/files`);
    expect(afterFiles.status).toBe(404);
    // Nothing left to delete either.
    expect((await api(base, 'DELETE', `/v1/sessions/${id}`)).status).toBe(404);

    // The service logs JSON lines, with audit records of the lifecycle.
    const audits = server.jsonLogs().filter((l) => l.session_id === id && typeof l.audit === 'string').map((l) => l.audit);
    expect(audits).toEqual(['session.created', 'session.deleted', 'session.reattached', 'session.deleted']);
  }, 60_000);
});
