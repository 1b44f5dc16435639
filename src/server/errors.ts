// Typed errors with stable codes. Handlers and the session manager throw these; one error
// handler (app.ts) turns every error into {statusCode, code, error, message}.
import { STATUS_CODES } from 'node:http';

export class AppError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class SessionNotFoundError extends AppError {
  constructor(id: string) {
    super(404, 'SESSION_NOT_FOUND', `Session '${id}' not found`);
  }
}
export class SessionConflictError extends AppError {
  constructor(id: string) {
    super(409, 'SESSION_CONFLICT', `Session '${id}' already exists with another environment or volumes`);
  }
}
export class MaxSessionsError extends AppError {
  constructor(max: number, retryAfterSeconds: number) {
    super(429, 'MAX_SESSIONS', `The maximum of ${max} sessions is reached; delete one or retry later`, { 'retry-after': String(retryAfterSeconds) });
  }
}
export class BusyError extends AppError {
  constructor(retryAfterSeconds: number) {
    super(429, 'BUSY', 'Too many executions are running or waiting; retry later', { 'retry-after': String(retryAfterSeconds) });
  }
}
export class PersistentSessionsDisabledError extends AppError {
  constructor() {
    super(403, 'PERSISTENT_SESSIONS_DISABLED', 'Keeping session data (clear_data=false) is disabled on this server');
  }
}
export class EnvironmentNotFoundError extends AppError {
  constructor(name: string) {
    super(404, 'ENVIRONMENT_NOT_FOUND', `Environment '${name}' not found`);
  }
}
export class EnvironmentUnavailableError extends AppError {
  constructor(name: string, reason: string) {
    super(409, 'ENVIRONMENT_UNAVAILABLE', `Environment '${name}' cannot be used: ${reason}`);
  }
}
export class ExtensionNotAllowedError extends AppError {
  constructor(name: string, allowed: readonly string[]) {
    super(415, 'EXTENSION_NOT_ALLOWED', `File '${name}' has an extension that is not allowed; allowed: ${allowed.join(', ')}`);
  }
}
export class UploadTooLargeError extends AppError {
  constructor(limit: number) {
    super(413, 'UPLOAD_TOO_LARGE', `The upload exceeds the limit of ${limit} bytes`);
  }
}
export class MaxVolumesError extends AppError {
  // No Retry-After: volumes do not expire; an operator frees a slot with DELETE /v1/volumes/{name}.
  constructor(max: number) {
    super(429, 'MAX_VOLUMES', max === 0
      ? 'No shared volume may be created on this server (MAX_VOLUMES is 0); existing ones can still be named'
      : `The maximum of ${max} shared volumes is reached; name an existing one, or delete an unused one`);
  }
}
export class VolumeNotFoundError extends AppError {
  constructor(name: string) {
    super(404, 'VOLUME_NOT_FOUND', `Volume '${name}' not found`);
  }
}
export class VolumeInUseError extends AppError {
  constructor(name: string, sessions: readonly string[]) {
    super(409, 'VOLUME_IN_USE', `Volume '${name}' is used by ${sessions.length} session(s): ${sessions.slice(0, 10).join(', ')}${sessions.length > 10 ? ', ...' : ''}`);
  }
}
/** The workspace changed under an upload (the sandbox removed a directory, or put something in the way). */
export class PathConflictError extends AppError {
  constructor(relPath: string) {
    super(409, 'PATH_CONFLICT', `The workspace changed at '${relPath}' while the upload was written (a directory was removed, or a file, link or directory is in the way); retry`);
  }
}
/** 413, not 507: a full quota is the session's state, never a fault of the service. */
export class WorkspaceFullError extends AppError {
  constructor() {
    super(413, 'WORKSPACE_FULL', 'The workspace has no room left for this upload (its disk quota is full); delete files and retry');
  }
}
export class BadRequestError extends AppError {
  constructor(code: string, message: string) {
    super(400, code, message);
  }
}
export class UnauthorizedError extends AppError {
  constructor() {
    super(401, 'UNAUTHORIZED', 'Missing or invalid API key (Authorization: Bearer <key>)', { 'www-authenticate': 'Bearer' });
  }
}
export class SandboxUnavailableError extends AppError {
  constructor() {
    super(503, 'SANDBOX_UNAVAILABLE', 'The sandbox cannot start on this host; see /readyz', { 'retry-after': '30' });
  }
}
export class ShuttingDownError extends AppError {
  constructor() {
    super(503, 'SHUTTING_DOWN', 'The service is shutting down', { 'retry-after': '5' });
  }
}

export function errorBody(statusCode: number, code: string, message: string) {
  return { statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message };
}
