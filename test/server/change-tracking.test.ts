// The service's change tracker through the session manager: a helper that dies is replaced, and
// reports stay exact in between (scans) and after (tracked again).
import { beforeAll, describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { waitUntil } from '../helpers/host-processes.js';
import { createSession, execute, upload } from '../helpers/http.js';

describe('change tracker restart', () => {
  const t = useTestApp();
  beforeAll(async () => {
    expect(t.sessions.changeTracking.mode).toBe('fanotify');
  });

  it('a killed helper is replaced; reports stay exact before, during and after', async () => {
    await createSession(t.app, { session_id: 'rt' });
    expect((await execute(t.app, 'rt', { command: 'echo 1 > a.txt' })).files.created).toEqual(['a.txt']);
    expect(t.sessions.changes.isTracked('rt')).toBe(true);
    expect((await upload(t.app, 'rt', [{ name: 'up.csv', content: 'u' }])).statusCode).toBe(201);
    const first = t.sessions.changeTrackerPid;
    expect(first).toBeTypeOf('number');
    process.kill(first as number, 'SIGKILL');
    await waitUntil(() => t.sessions.changeTracking.mode, (m) => m === 'scan', 5000);
    // Scanned while the helper is down: the upload is not this execution's, the delete is.
    expect((await execute(t.app, 'rt', { command: 'rm up.csv && echo 2 >> a.txt' })).files)
      .toEqual({ created: [], modified: ['a.txt'], deleted: ['up.csv'] });
    const second = await waitUntil(() => t.sessions.changeTrackerPid, (p) => p !== undefined && p !== first, 10_000);
    expect(t.sessions.changeTracking).toEqual({ mode: 'fanotify', reason: null });
    expect((await execute(t.app, 'rt', { command: 'echo 3 > b.txt' })).files).toEqual({ created: ['b.txt'], modified: [], deleted: [] });
    expect((await execute(t.app, 'rt', { command: 'rm a.txt' })).files).toEqual({ created: [], modified: [], deleted: ['a.txt'] });
    expect(t.sessions.changes.isTracked('rt')).toBe(true);
    expect(t.sessions.changeTrackerPid).toBe(second);
  }, 60_000);
});
