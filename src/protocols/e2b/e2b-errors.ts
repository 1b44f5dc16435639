// Errors in E2B's own terms, so the SDKs raise their own exceptions: the control plane and envd's
// HTTP routes answer {code: <status>, message}, the Connect services {code: "<connect code>",
// message} (with the HTTP status Connect maps that code to), the code interpreter a text body.
// Domain errors (AppError, the workspace's path errors) are translated here, once.
import { AppError } from '../../errors.js';

/** Connect code names and the HTTP status each travels with (connectrpc.com/docs/protocol). */
const CONNECT_STATUS = {
  canceled: 499, unknown: 500, invalid_argument: 400, deadline_exceeded: 504, not_found: 404, already_exists: 409,
  permission_denied: 403, resource_exhausted: 429, failed_precondition: 400, aborted: 409, out_of_range: 400,
  unimplemented: 501, internal: 500, unavailable: 503, unauthenticated: 401,
} as const;

export type ConnectCode = keyof typeof CONNECT_STATUS;

export class E2bError extends Error {
  constructor(readonly statusCode: number, readonly connectCode: ConnectCode, message: string) {
    super(message);
    this.name = 'E2bError';
  }
}

export const notFound = (message: string) => new E2bError(404, 'not_found', message);
export const invalidArgument = (message: string) => new E2bError(400, 'invalid_argument', message);
export const unauthenticated = (message: string) => new E2bError(401, 'unauthenticated', message);
export const unimplemented = (message: string) => new E2bError(501, 'unimplemented', message);

function connectCodeFor(status: number): ConnectCode {
  const found = (Object.entries(CONNECT_STATUS) as [ConnectCode, number][]).find(([, s]) => s === status);
  if (found) return found[0];
  if (status === 413 || status === 507) return 'resource_exhausted';
  if (status === 415 || status === 422) return 'invalid_argument';
  return status >= 500 ? 'internal' : 'failed_precondition';
}

/** What any error means on an E2B route: status, Connect code and a message safe to send. */
export function describeError(err: unknown): { status: number; connectCode: ConnectCode; message: string; internal: boolean } {
  if (err instanceof E2bError) return { status: err.statusCode, connectCode: err.connectCode, message: err.message, internal: false };
  const e = err as { statusCode?: unknown; code?: unknown; message?: unknown; validation?: unknown };
  const status = err instanceof AppError ? err.statusCode : typeof e.statusCode === 'number' ? e.statusCode : 500;
  if (status >= 400 && status < 500 && typeof e.message === 'string') {
    // Errno-style failures of a rename or mkdir the sandbox got in the way of are the caller's.
    return { status, connectCode: connectCodeFor(status), message: e.message, internal: false };
  }
  const errno = typeof e.code === 'string' ? e.code : '';
  const mapped: Record<string, [number, ConnectCode, string]> = {
    EEXIST: [409, 'already_exists', 'the path already exists'],
    ENOTEMPTY: [409, 'failed_precondition', 'the directory is not empty'],
    EISDIR: [400, 'invalid_argument', 'the path is a directory'],
    ENOTDIR: [400, 'invalid_argument', 'a component of the path is not a directory'],
    EINVAL: [400, 'invalid_argument', 'the operation is not valid for these paths (e.g. a directory moved into itself)'],
    ENOSPC: [507, 'resource_exhausted', 'the workspace disk quota is full'],
    EDQUOT: [507, 'resource_exhausted', 'the workspace disk quota is full'],
  };
  const m = mapped[errno];
  if (m) return { status: m[0], connectCode: m[1], message: m[2], internal: false };
  if (status === 503) return { status, connectCode: 'unavailable', message: typeof e.message === 'string' ? e.message : 'unavailable', internal: false };
  return { status: 500, connectCode: 'internal', message: 'Internal server error', internal: true };
}
