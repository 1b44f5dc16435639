// Builds the real app (real sandbox, real session manager) on a temporary workspace directory,
// for route tests through app.inject.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll } from 'vitest';
import { ENVIRONMENTS_DIR } from './host-env.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createSandbox, type Sandbox } from '../../src/sandbox/sandbox.js';
import { buildApp } from '../../src/server/app.js';
import { createMetrics, metricsObserver } from '../../src/server/metrics.js';
import { SessionManager } from '../../src/sessions/session-manager.js';


/** What tests read of a built app. */
export interface AppUnderTest {
  app: FastifyInstance;
  config: Config;
  sandbox: Sandbox;
  sessions: SessionManager;
  workspaceDir: string;
}

export interface TestApp extends AppUnderTest {
  close(): Promise<void>;
}

/** settings: BUBBLE_SANDBOX_* names without the prefix, e.g. { MAX_SESSIONS: '2' }. */
/** logDestination: where the app's log lines go (stdout when absent), for tests that read them. */
export async function createTestApp(settings: Record<string, string> = {}, opts: { now?: () => number; workspaceDir?: string; logDestination?: pino.DestinationStream } = {}): Promise<TestApp> {
  const workspaceDir = opts.workspaceDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'bs-app-'));
  fs.chmodSync(workspaceDir, 0o711);
  const env: Record<string, string> = {
    BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR,
    BUBBLE_SANDBOX_WORKSPACE_DIR: workspaceDir,
    BUBBLE_SANDBOX_LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  };
  // A uid-range lock dir of its own (unless the test names one): test apps run side by side on the
  // default uid range, and maybe beside a running service.
  const uidLockDir = settings.UID_LOCK_DIR === undefined ? fs.mkdtempSync(path.join(os.tmpdir(), 'bs-uid-locks-')) : null;
  if (uidLockDir !== null) env.BUBBLE_SANDBOX_UID_LOCK_DIR = uidLockDir;
  for (const [k, v] of Object.entries(settings)) env[`BUBBLE_SANDBOX_${k}`] = v;
  const config = loadConfig(env);
  const logger = opts.logDestination ? pino({ level: config.logLevel }, opts.logDestination) : pino({ level: config.logLevel });
  let sandbox: Sandbox;
  try {
    sandbox = await createSandbox(config, logger, { lockUidRange: true });
  } catch (err) {
    if (uidLockDir !== null) fs.rmSync(uidLockDir, { recursive: true, force: true });
    if (!opts.workspaceDir) fs.rmSync(workspaceDir, { recursive: true, force: true });
    throw err;
  }
  const metrics = createMetrics();
  const sessions = new SessionManager({ config, sandbox, logger, observer: metricsObserver(metrics), ...(opts.now ? { now: opts.now } : {}) });
  await sessions.init();
  const app = await buildApp({ config, sandbox, sessions, metrics, logger });
  await app.ready();
  return {
    app, config, sandbox, sessions, workspaceDir,
    close: async () => {
      await app.close();
      await sessions.close(0);
      await sandbox.close();
      if (uidLockDir !== null) fs.rmSync(uidLockDir, { recursive: true, force: true });
      if (!opts.workspaceDir) fs.rmSync(workspaceDir, { recursive: true, force: true });
    },
  };
}

/** The app of the surrounding describe block (or file): built in beforeAll, closed in afterAll.
 * Its fields may be read only while tests or later hooks run. */
export function useTestApp(settings: Record<string, string> = {}, opts: { now?: () => number; workspaceDir?: string } = {}): AppUnderTest {
  let current: TestApp | null = null;
  beforeAll(async () => {
    current = await createTestApp(settings, opts);
  });
  afterAll(async () => {
    await current?.close();
    current = null;
  });
  const get = (): TestApp => {
    if (!current) throw new Error('the test app exists only while the tests of its block run');
    return current;
  };
  return {
    get app() { return get().app; },
    get config() { return get().config; },
    get sandbox() { return get().sandbox; },
    get sessions() { return get().sessions; },
    get workspaceDir() { return get().workspaceDir; },
  };
}

/** A multipart/form-data body with the given files, for app.inject. */
export function multipartBody(files: { name: string; content: string | Buffer; field?: string }[], boundary = '----bubble-test-boundary'): { payload: Buffer; headers: Record<string, string> } {
  const parts: Buffer[] = [];
  for (const f of files) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${f.field ?? 'file'}"; filename="${f.name}"\r\nContent-Type: application/octet-stream\r\n\r\n`));
    parts.push(Buffer.isBuffer(f.content) ? f.content : Buffer.from(f.content));
    parts.push(Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(parts), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}
