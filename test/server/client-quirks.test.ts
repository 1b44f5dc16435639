// What ordinary HTTP clients send without being asked: Python requests writes booleans as True and
// False, and many clients put a JSON content type on a POST with no body.
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { expectError } from '../helpers/http.js';

const JSON_TYPE = { 'content-type': 'application/json' };

describe('client quirks', () => {
  const t = useTestApp();

  it('accepts clear_data=True and clear_data=False in any case', async () => {
    for (const [id, value, kept] of [['q1', 'True', false], ['q2', 'False', true], ['q3', 'FALSE', true], ['q4', 'true', false]] as const) {
      expect((await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: id } })).statusCode).toBe(201);
      expect((await t.app.inject({ method: 'POST', url: `/v1/sessions/${id}/execute`, payload: { command: 'echo 1 > kept.txt' } })).statusCode).toBe(200);
      expect((await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}?clear_data=${value}` })).statusCode).toBe(204);
      // A kept workspace comes back with its file when the id is used again.
      expect((await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: id } })).statusCode).toBe(201);
      const listed = (await t.app.inject({ method: 'GET', url: `/v1/sessions/${id}/files` })).json<{ files: { path: string }[] }>();
      expect(listed.files.map((f) => f.path).includes('kept.txt'), `${id} clear_data=${value}`).toBe(kept);
    }
  });

  it('still refuses a clear_data that is not a boolean, naming the field', async () => {
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'q5' } })).statusCode).toBe(201);
    const res = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/q5?clear_data=maybe' });
    expectError(res, 400, 'FST_ERR_VALIDATION');
    expect(res.json<{ message: string }>().message).toContain('clear_data');
  });

  it('takes an empty body with a JSON content type as no body on body-less POSTs', async () => {
    const created = await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: JSON_TYPE, payload: '' });
    expect(created.statusCode).toBe(201);
    const id = created.json<{ session_id: string }>().session_id;
    expect((await t.app.inject({ method: 'POST', url: `/v1/sessions/${id}/kernel/restart`, headers: JSON_TYPE, payload: '' })).statusCode).toBe(204);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}`, headers: JSON_TYPE, payload: '' })).statusCode).toBe(204);
  });

  it('an empty body where one is required is a validation error, and malformed JSON stays a 400', async () => {
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'q6' } })).statusCode).toBe(201);
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/q6/execute', headers: JSON_TYPE, payload: '' }), 400, 'FST_ERR_VALIDATION');
    const bad = await t.app.inject({ method: 'POST', url: '/v1/sessions/q6/execute', headers: JSON_TYPE, payload: '{"command":' });
    expect(bad.statusCode).toBe(400);
  });
});
