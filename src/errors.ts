// Domain errors: each carries a stable code and the HTTP status it stands for. The session manager,
// the workspace and the routes throw these; the HTTP layer only maps them (src/server/app.ts's one
// error handler turns every error into {statusCode, code, error, message}). Nothing here knows
// Fastify.

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
    super(409, 'SESSION_CONFLICT', `Session '${id}' already exists with another environment, volumes, network or writable_root`);
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
/** A pattern of a network policy the egress proxy cannot use; the message names the field (`network.allow.2`). */
export class InvalidNetworkPolicyError extends AppError {
  constructor(field: string, why: string) {
    super(400, 'INVALID_NETWORK_POLICY', `${field}: ${why}`);
  }
}
export class NetworkModeMismatchError extends AppError {
  constructor(id: string, mode: string) {
    super(409, 'NETWORK_MODE_MISMATCH', `Session '${id}' has network mode '${mode}'; only an allowlist session has lists to change`);
  }
}
/** 422: writable_root asked for where its overlay cannot be mounted (a service not running as root). */
export class WritableRootUnavailableError extends AppError {
  constructor(reason: string) {
    super(422, 'WRITABLE_ROOT_UNAVAILABLE', `writable_root is not available: ${reason}`);
  }
}
/** 422: script, run_code or a process in a root filesystem that has no python3. */
export class NoPythonError extends AppError {
  constructor(environment: string, what: string) {
    super(422, 'NO_PYTHON', `Environment '${environment}' (a root filesystem) has no /usr/bin/python3, which ${what} needs; command and argv run in any environment`);
  }
}
/** 422: the request is well formed, but this host cannot give that network mode (see /readyz checks.network). */
export class NetworkModeUnavailableError extends AppError {
  constructor(mode: string, reason: string) {
    super(422, 'NETWORK_MODE_UNAVAILABLE', `Network mode '${mode}' is not available on this host: ${reason}`);
  }
}
export class ProcessNotFoundError extends AppError {
  constructor(sessionId: string, pid: string) {
    super(404, 'PROCESS_NOT_FOUND', `Process '${pid}' not found in session '${sessionId}'`);
  }
}
export class TooManyProcessesError extends AppError {
  constructor(max: number) {
    super(429, 'TOO_MANY_PROCESSES', `The session already runs ${max} processes (MAX_PROCESSES_PER_SESSION); wait for one to end or delete one`);
  }
}
export class ContextNotFoundError extends AppError {
  constructor(sessionId: string, contextId: string) {
    super(404, 'CONTEXT_NOT_FOUND', `Context '${contextId}' not found in session '${sessionId}'`);
  }
}
export class TooManyContextsError extends AppError {
  constructor(max: number) {
    super(429, 'TOO_MANY_CONTEXTS', `The session already has ${max} contexts (MAX_CONTEXTS_PER_SESSION); delete one first`);
  }
}
export class NotebookTooLargeError extends AppError {
  constructor(limit: number) {
    super(413, 'NOTEBOOK_TOO_LARGE', `The notebook is larger than MAX_UPLOAD_SIZE_BYTES (${limit} bytes)`);
  }
}
export class InvalidNotebookError extends AppError {
  constructor(reason: string) {
    super(422, 'INVALID_NOTEBOOK', `The file is not a notebook this service can run: ${reason}`);
  }
}
export class ProcessExitedError extends AppError {
  constructor(pid: string) {
    super(409, 'PROCESS_EXITED', `Process '${pid}' is no longer running`);
  }
}
export class ProcessStdinClosedError extends AppError {
  constructor(pid: string) {
    super(409, 'STDIN_CLOSED', `The standard input of process '${pid}' was closed (eof)`);
  }
}
export class StdinBacklogError extends AppError {
  constructor(pid: string, maxBytes: number) {
    super(429, 'STDIN_BACKLOG', `Process '${pid}' has not read the ${maxBytes} bytes of input it was already sent; retry once it has`, { 'retry-after': '1' });
  }
}
export class ProcessNotPtyError extends AppError {
  constructor(pid: string) {
    super(409, 'PROCESS_NOT_PTY', `Process '${pid}' was started without a terminal (pty)`);
  }
}
export class PortNotListeningError extends AppError {
  constructor(port: number, why: string) {
    super(502, 'PORT_NOT_LISTENING', `Nothing answers on port ${port} in the session's network (${why})`);
  }
}
export class ForbiddenOriginError extends AppError {
  constructor() {
    super(403, 'FORBIDDEN_ORIGIN', 'WebSocket from a browser origin that is not allowed (ALLOWED_ORIGINS)');
  }
}
export class UpgradeRequiredError extends AppError {
  constructor() {
    super(426, 'UPGRADE_REQUIRED', 'This route is a WebSocket: send Connection: Upgrade, Upgrade: websocket', { upgrade: 'websocket', connection: 'Upgrade' });
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

export class NodeUnavailableError extends AppError {
  constructor(retryAfterSeconds: number) {
    super(503, 'NODE_UNAVAILABLE', 'The replica that holds this session cannot be reached; retry later', { 'retry-after': String(retryAfterSeconds) });
  }
}
export class ClusterUnauthorizedError extends AppError {
  constructor() {
    super(401, 'CLUSTER_UNAUTHORIZED', 'A request between replicas must carry the cluster secret');
  }
}

/**
 * Every `code` an error answer can carry, with its status, for the OpenAPI `Error` schema. Besides
 * these, a 4xx that Fastify or a plugin raises keeps its own `FST_*` code (FST_ERR_CTP_BODY_TOO_LARGE, ...).
 * test/server/openapi.test.ts checks that every code thrown in src is listed here.
 */
export const ERROR_CODES: Readonly<Record<string, string>> = {
  FST_ERR_VALIDATION: '400: the request does not match the schema (the message names the field)',
  INVALID_PATH: '400: a workspace path is absolute, has .., a backslash or NUL, or goes through a non-directory',
  INVALID_CURSOR: '400: a file listing cursor that this server did not make',
  INVALID_MULTIPART: '400: the multipart body is malformed',
  NO_FILES: '400: an upload without any file part',
  INVALID_NETWORK_POLICY: '400: a network allow or deny pattern the egress proxy cannot use (the message names the field and why)',
  BAD_REQUEST: '400: another client error without a code of its own',
  FST_ERR_BAD_URL: '400: the URL is not valid (bad percent-encoding)',
  FST_ERR_MAX_PARAM_LENGTH: '414: a URL segment is too long',
  UNAUTHORIZED: '401: missing or wrong API key (Authorization: Bearer <key>)',
  CLUSTER_UNAUTHORIZED: '401: a request that says it comes from another replica (or asks a replica-to-replica route) without the right cluster secret',
  PERSISTENT_SESSIONS_DISABLED: '403: clear_data=false while persistent sessions are disabled',
  FORBIDDEN_ORIGIN: '403: a WebSocket (pty, ports) or an /mcp request from a browser Origin other than the service\'s own and not in ALLOWED_ORIGINS',
  NOT_FOUND: '404: no such route',
  SESSION_NOT_FOUND: '404: no session with this id',
  ENVIRONMENT_NOT_FOUND: '404: no environment of this name',
  FILE_NOT_FOUND: '404: no regular file at this path',
  VOLUME_NOT_FOUND: '404: no shared volume of this name',
  PROCESS_NOT_FOUND: '404: no process with this id in this session',
  CONTEXT_NOT_FOUND: '404: no context with this id in this session (contexts do not survive a restart of the service)',
  SESSION_CONFLICT: '409: the session exists with another environment, volumes, network or writable_root',
  ENVIRONMENT_UNAVAILABLE: '409: the environment exists but cannot be used',
  VOLUME_IN_USE: '409: a live session names the volume',
  PATH_CONFLICT: '409: the workspace changed under an upload; retry',
  NETWORK_MODE_MISMATCH: '409: PATCH of a network policy on a session whose mode is not allowlist',
  PROCESS_EXITED: '409: stdin or a signal for a process that is no longer running',
  STDIN_CLOSED: '409: stdin for a process whose stdin was closed with eof',
  STDIN_BACKLOG: '429: stdin for a process that has not read the input it was already sent (PROCESS_MAX_PENDING_INPUT_BYTES)',
  PROCESS_NOT_PTY: '409: a terminal (pty) route for a process started without one',
  UPGRADE_REQUIRED: '426: a WebSocket route (pty) asked without an upgrade',
  UPLOAD_TOO_LARGE: '413: more than MAX_UPLOAD_SIZE_BYTES in one request; nothing kept',
  NOTEBOOK_TOO_LARGE: '413: notebooks/execute of a notebook larger than MAX_UPLOAD_SIZE_BYTES',
  TOO_MANY_FILES: '413: more than MAX_UPLOAD_FILES file parts',
  WORKSPACE_FULL: '413: the workspace disk quota is full',
  FILE_TOO_LARGE: '413: MCP read_file of a file over MAX_OUTPUT_FILE_BYTES (an isError tool result, not an HTTP answer)',
  FST_ERR_CTP_BODY_TOO_LARGE: '413: the JSON body is over the route\'s size limit',
  EXTENSION_NOT_ALLOWED: '415: a file extension not in ALLOWED_EXTENSIONS; nothing kept',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: '415: a content type the route does not take',
  INVALID_NOTEBOOK: '422: notebooks/execute of a file that is not an nbformat 4 notebook (the message says why)',
  WRITABLE_ROOT_UNAVAILABLE: '422: writable_root asked for where its overlay cannot be mounted (a service not running as root); nothing created',
  NO_PYTHON: '422: script, run_code or a process asked of a root filesystem without python3',
  NETWORK_MODE_UNAVAILABLE: '422: this host cannot provide the network mode asked for (see /readyz checks.network); nothing created',
  MAX_SESSIONS: '429: MAX_SESSIONS sessions exist (Retry-After)',
  MAX_VOLUMES: '429: MAX_VOLUMES shared volumes exist',
  BUSY: '429: too many executions running or queued (Retry-After)',
  TOO_MANY_CONTEXTS: '429: the session has MAX_CONTEXTS_PER_SESSION contexts',
  TOO_MANY_PROCESSES: '429: MAX_PROCESSES_PER_SESSION processes of the session are running',
  INTERNAL_ERROR: '500: a fault of the service (details in its log only)',
  PORT_NOT_LISTENING: '502: ports/{port}: nothing listens on that port in the session\'s network namespace',
  SANDBOX_UNAVAILABLE: '503: the sandbox cannot start on this host (Retry-After; see /readyz)',
  SHUTTING_DOWN: '503: the service is shutting down (Retry-After)',
  NODE_UNAVAILABLE: '503: the replica that holds the session (its id says which) cannot be reached (Retry-After); the other replicas\' sessions are not affected',
};
