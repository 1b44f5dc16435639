// The changed-files report of a real server with change tracking on (fanotify on each session's
// quota image): /readyz says so, reports stay exact across uploads, deletes, tree moves, a
// persistent interpreter and a restart. A loss of exactness fails here; a silent fall-back to
// scanning fails the /readyz check (in CI quotas, and so tracking, must work).
import { describe, expect, test } from 'vitest';
import { api, startServer, uploadFiles, useWorkspaceDir, type ExecResult } from '../helpers/server-process.js';

const workspaceDir = useWorkspaceDir('bs-e2e-changes-');
type Ready = { checks: { change_tracking: { mode: string; reason: string | null } } };

describe('changed files with change tracking', () => {
  test('reports stay exact through uploads, moves, deletes, run_code and a restart', async () => {
    const server = await startServer({ workspaceDir: workspaceDir.path });
    const ready = await api<Ready>(server.baseUrl, 'GET', '/readyz');
    expect(ready.body.checks.change_tracking).toEqual({ mode: 'fanotify', reason: null });

    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'ct' })).status).toBe(201);
    expect((await uploadFiles(server.baseUrl, 'ct', [{ name: 'data.csv', content: 'a\n1\n' }])).status).toBe(201);
    const exec = async (command: string) => {
      const r = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/ct/execute', { command });
      expect(r.status).toBe(200);
      expect(r.body.status).toBe('ok');
      return r.body.files;
    };
    // The upload happened before this execution: not reported by it.
    expect(await exec('mkdir -p out/a && echo 1 > out/a/x.txt && echo 2 >> data.csv')).toEqual({ created: ['out/a/x.txt'], modified: ['data.csv'], deleted: [] });
    expect(await exec('true')).toEqual({ created: [], modified: [], deleted: [] });
    expect(await exec('mv out moved && touch -d @0 moved/a/x.txt')).toEqual({ created: ['moved/a/x.txt'], modified: [], deleted: ['out/a/x.txt'] });
    expect((await uploadFiles(server.baseUrl, 'ct', [{ name: 'second.txt', content: 's' }])).status).toBe(201);
    expect((await api(server.baseUrl, 'DELETE', '/v1/sessions/ct/files/data.csv')).status).toBe(204);
    expect(await exec('rm -r moved && ln -s /etc etc-link && ln second.txt hard.txt')).toEqual({ created: ['hard.txt'], modified: ['second.txt'], deleted: ['moved/a/x.txt'] });

    const cell = await api<{ status: string; files: ExecResult['files'] }>(server.baseUrl, 'POST', '/v1/sessions/ct/run_code', {
      code: "open('cell.txt', 'w').write('c')\nwith open('hard.txt', 'a') as f: f.write('!')",
    });
    expect(cell.body.status).toBe('ok');
    expect(cell.body.files).toEqual({ created: ['cell.txt'], modified: ['hard.txt', 'second.txt'], deleted: [] });

    await server.stop();
    const again = await startServer({ workspaceDir: workspaceDir.path });
    // After a restart the first execution scans, the next ones are tracked again.
    expect(await (async () => {
      const r = await api<ExecResult>(again.baseUrl, 'POST', '/v1/sessions/ct/execute', { command: 'echo z > z.txt && rm cell.txt' });
      return r.body.files;
    })()).toEqual({ created: ['z.txt'], modified: [], deleted: ['cell.txt'] });
    const r = await api<ExecResult>(again.baseUrl, 'POST', '/v1/sessions/ct/execute', { command: 'echo y >> z.txt' });
    expect(r.body.files).toEqual({ created: [], modified: ['z.txt'], deleted: [] });
    await again.stop();
  }, 120_000);
});
