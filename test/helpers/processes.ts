// Session processes through the routes, for tests: start, read, wait, and what runs on the host.
import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import type { z } from 'zod';
import type { ProcessInfoSchema, ProcessOutputSchema } from '../../src/server/process-schemas.js';
import type { SessionManager } from '../../src/sessions/session-manager.js';
import { hostProcessesInCgroup, type HostProcess } from './host-processes.js';

export type ProcessInfoBody = z.infer<typeof ProcessInfoSchema>;
export type OutputBody = z.infer<typeof ProcessOutputSchema>;

export async function startProcess(app: FastifyInstance, id: string, body: Record<string, unknown>): Promise<ProcessInfoBody> {
  const res = await app.inject({ method: 'POST', url: `/v1/sessions/${id}/processes`, payload: body });
  expect(res.statusCode, res.body).toBe(201);
  return res.json<ProcessInfoBody>();
}

export async function getProcess(app: FastifyInstance, id: string, pid: string): Promise<ProcessInfoBody> {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}/processes/${pid}` });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<ProcessInfoBody>();
}

export async function readOutput(app: FastifyInstance, id: string, pid: string, since = 0): Promise<OutputBody> {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}/processes/${pid}/output?since=${since}` });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<OutputBody>();
}

/** Polls the output until `done` accepts it (or 15 s pass); returns the last read. */
export async function waitForOutput(app: FastifyInstance, id: string, pid: string, done: (o: OutputBody) => boolean, timeoutMs = 15_000): Promise<OutputBody> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = await readOutput(app, id, pid);
    if (done(out) || Date.now() > deadline) return out;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function waitForEnd(app: FastifyInstance, id: string, pid: string, timeoutMs = 15_000): Promise<ProcessInfoBody> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await getProcess(app, id, pid);
    if (info.status !== 'running' || Date.now() > deadline) return info;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The session's host uid: its sandboxes all run as it. */
export async function sessionUid(sessions: SessionManager, id: string): Promise<number> {
  return sessions.ownerOf(await sessions.touch(id))?.uid ?? -1;
}

/**
 * Host processes of this uid in a cgroup of a process sandbox of this service (proc-<pid>-n: the
 * app runs in the test's own worker). By cgroup as well as uid: test apps of other files running
 * at the same time hand out the same uids.
 */
export function processSandboxesOf(uid: number): HostProcess[] {
  return hostProcessesInCgroup(`proc-${process.pid}-`).filter((p) => p.uid === uid);
}
