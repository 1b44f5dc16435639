// The hand-kept part: what a generated client does not do well by itself. Multipart upload
// (FormData from names and bytes), binary download (bytes, not JSON), and NDJSON streams of an
// execution (an async iterator of events). Everything else is the typed openapi-fetch client.
import type { Client } from 'openapi-fetch';
import type { ApiError, ExecuteBody, ExecutionResult, OneShotBody, OneShotExecutionResult, RunCodeBody, RunCodeResult, StreamEvent, UploadResult, paths } from './types.js';

/** A non-2xx answer of the service, with its stable code (SESSION_NOT_FOUND, BUSY, ...). */
export class BubbleSandboxError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = 'BubbleSandboxError';
  }

  static from(status: number, body: unknown): BubbleSandboxError {
    const e = body as Partial<ApiError> | undefined;
    return new BubbleSandboxError(status, typeof e?.code === 'string' ? e.code : 'HTTP_ERROR', typeof e?.message === 'string' ? e.message : `HTTP ${status}`);
  }
}

export interface UploadFile {
  /** Stored as <dir>/<name>; its extension must be in the service's ALLOWED_EXTENSIONS. */
  name: string;
  content: string | Uint8Array | Blob;
}

/** Lines of a byte stream, as they complete. */
async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of body) {
    pending += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim() !== '') yield line;
    }
  }
  pending += decoder.decode();
  if (pending.trim() !== '') yield pending;
}

export function createExtras(api: Client<paths, 'application/json'>) {
  async function ndjson<R>(response: Response, stream: ReadableStream<Uint8Array> | null, error: unknown): Promise<AsyncGenerator<StreamEvent<R>>> {
    if (!response.ok || stream === null) throw BubbleSandboxError.from(response.status, error);
    return (async function* events() {
      for await (const line of lines(stream)) yield JSON.parse(line) as StreamEvent<R>;
    })();
  }
  const NDJSON = { accept: 'application/x-ndjson' };

  return {
    /** Uploads files into the session's workspace (all or nothing); `dir` is created if missing. */
    async uploadFiles(sessionId: string, files: UploadFile[], opts: { dir?: string } = {}): Promise<UploadResult> {
      const form = new FormData();
      for (const f of files) form.append('files', f.content instanceof Blob ? f.content : new Blob([f.content]), f.name);
      const { data, error, response } = await api.POST('/v1/sessions/{id}/files', {
        params: { path: { id: sessionId }, query: opts.dir === undefined ? {} : { dir: opts.dir } },
        // The generated body type names the parts; the real body is the FormData.
        body: { files: [] },
        bodySerializer: () => form,
      });
      if (data === undefined) throw BubbleSandboxError.from(response.status, error);
      return data;
    },

    /** The bytes of a workspace file (`path` may contain `/`). */
    async downloadFile(sessionId: string, path: string): Promise<Uint8Array> {
      const { data, error, response } = await api.GET('/v1/sessions/{id}/files/{path}', { params: { path: { id: sessionId, path } }, parseAs: 'arrayBuffer' });
      if (data === undefined) throw BubbleSandboxError.from(response.status, error);
      return new Uint8Array(data);
    },

    /** Runs in the session and yields its output as it arrives, then the result. Aborting `signal` ends the execution. */
    async streamExecute(sessionId: string, body: ExecuteBody, opts: { signal?: AbortSignal } = {}) {
      const { data, error, response } = await api.POST('/v1/sessions/{id}/execute', { params: { path: { id: sessionId } }, body, headers: NDJSON, parseAs: 'stream', ...opts });
      return ndjson<ExecutionResult>(response, data ?? null, error);
    },

    async streamRunCode(sessionId: string, body: RunCodeBody, opts: { signal?: AbortSignal } = {}) {
      const { data, error, response } = await api.POST('/v1/sessions/{id}/run_code', { params: { path: { id: sessionId } }, body, headers: NDJSON, parseAs: 'stream', ...opts });
      return ndjson<RunCodeResult>(response, data ?? null, error);
    },

    async streamOneShot(body: OneShotBody, opts: { signal?: AbortSignal } = {}) {
      const { data, error, response } = await api.POST('/v1/execute', { body, headers: NDJSON, parseAs: 'stream', ...opts });
      return ndjson<OneShotExecutionResult>(response, data ?? null, error);
    },
  };
}
