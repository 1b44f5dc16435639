// What every part of the E2B adapter works with: the domain API and the adapter's own state.
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { SessionManager } from '../../sessions/session-manager.js';
import type { E2bAuth } from './e2b-auth.js';
import type { E2bSandboxes } from './e2b-sandboxes.js';

export interface E2bContext {
  config: Config;
  sessions: SessionManager;
  sandboxes: E2bSandboxes;
  auth: E2bAuth;
  logger: Logger;
}

/**
 * The envd version this service answers as. At least 0.4.0 (below it the SDKs send a Basic-auth
 * user name), 0.5.2 turns CloseStdin on; 0.5.7 would make the SDK upload octet-stream bodies
 * and 0.6.2 send file metadata, which this service does not take.
 */
export const ENVD_VERSION = '0.5.2';
