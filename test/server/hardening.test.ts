// Regressions from an adversarial review: lifecycle races, forged interpreter frames, uid slots.
import { describe, expect, it } from 'vitest';
import { isQuotaMounted } from '../../src/workspace/workspace-quota.js';
import { UidSlots } from '../../src/sessions/uid-slots.js';
import { useTestApp } from '../helpers/app.js';
import { sleep } from '../helpers/host-env.js';
import { createSession, execute } from '../helpers/http.js';

const t = useTestApp({ MAX_OUTPUT_CHARS: '1000' });

describe('session lifecycle races', () => {
  it('a create racing a delete of the same id waits for it: the re-attached workspace keeps its quota', async () => {
    for (let round = 0; round < 3; round++) {
      const id = `race-keep-${round}`;
      await createSession(t.app, { session_id: id });
      await execute(t.app, id, { command: 'echo kept > kept.txt' });
      const running = t.app.inject({ method: 'POST', url: `/v1/sessions/${id}/execute`, payload: { command: 'sleep 5' } });
      await sleep(300);
      const del = t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}?clear_data=false` });
      await sleep(5);
      const create = t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: id } });
      const [d, c] = await Promise.all([del, create]);
      await running;
      expect(d.statusCode).toBe(204);
      expect(c.statusCode).toBe(201);
      if (t.sessions.quota.enabled) expect(await isQuotaMounted(t.sessions.workspaceDir(id))).toBe(true);
      const r = await execute(t.app, id, { command: 'cat kept.txt' });
      expect(r.stdout).toBe('kept\n');
    }
  }, 60_000);

  it('a create racing a delete with clear_data=true gets a working, empty session', async () => {
    const id = 'race-clear';
    await createSession(t.app, { session_id: id });
    await execute(t.app, id, { command: 'echo old > old.txt' });
    const del = t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}?clear_data=true` });
    const create = t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: id } });
    const [d, c] = await Promise.all([del, create]);
    expect(d.statusCode).toBe(204);
    expect(c.statusCode).toBe(201);
    const r = await execute(t.app, id, { command: 'ls; echo ok' });
    expect(r.stdout).toBe('ok\n');
  }, 30_000);
});

describe('forged interpreter frames', () => {
  it('a result written by the code itself on the control descriptor is still capped by max_output_chars', async () => {
    await createSession(t.app, { session_id: 'forger' });
    const code = [
      'import json, os, struct, sys',
      "cid = int(sys._getframe().f_code.co_filename.split('-')[1].rstrip('>'))",
      "body = json.dumps({'type': 'done', 'id': cid, 'result': 'R' * 300000, 'error': None, 'interrupted': False}).encode()",
      "fds = [int(f) for f in os.listdir('/proc/self/fd') if int(f) > 2 and os.path.exists(f'/proc/self/fd/{f}') and os.readlink(f'/proc/self/fd/{f}').startswith(('pipe:', 'socket:'))]",
      'for fd in fds:',
      '    try:',
      "        os.write(fd, struct.pack('>I', len(body)) + body)",
      '    except OSError:',
      '        pass',
    ].join('\n');
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/forger/run_code', payload: { code } });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json<{ result: string | null; max_output_chars: number }>();
    expect(body.max_output_chars).toBe(1000);
    expect((body.result ?? '').length).toBeLessThanOrEqual(1000 + 60);
  }, 30_000);
});

describe('uid slots', () => {
  it('one-shot slots are capped, so sandboxes never wrap around onto a session\'s uid', () => {
    const slots = new UidSlots(() => [1, 2], 2);
    const a = slots.reserve();
    const b = slots.reserve();
    expect([a, b].sort()).toEqual([3, 4]);
    expect(() => slots.reserve()).toThrow(/retry later/i);
    slots.release(a);
    expect(slots.reserve()).toBe(a);
  });
});
