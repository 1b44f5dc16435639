// Files in a session: upload (multipart, staged then committed), list, download, delete.
// Every host-side operation goes through workspace-fs, which never follows a link.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  commitStagedFiles, deleteFileSafe, listFilesPage, readFileSafe, removeTreeSafe, stageFile, validateRelativePath,
  type StagedFile,
} from '../../workspace/workspace-fs.js';
import { exactLengthStream } from '../../workspace/exact-length-read.js';
import { AppError, BadRequestError, ExtensionNotAllowedError, UploadTooLargeError } from '../../errors.js';
import { decodeListCursor, encodeListCursor } from '../list-cursor.js';
import {
  ErrorSchema, FileListSchema, FileParamsSchema, ListFilesQuerySchema, SessionParamsSchema, UploadQuerySchema, UploadResultSchema,
} from '../schemas.js';

/** The last component of a client-supplied file name, whatever separator the client used. */
export function uploadBaseName(filename: string): string {
  const base = filename.split(/[/\\]/).pop() ?? '';
  if (base === '' || base === '.' || base === '..') throw new BadRequestError('INVALID_PATH', 'a file part has no usable file name');
  return base;
}

export function extensionAllowed(name: string, allowed: readonly string[]): boolean {
  const dot = name.lastIndexOf('.');
  if (dot <= 0) return false;
  return allowed.includes(name.slice(dot).toLowerCase());
}

/** Runs a path validation, naming the field in the 400 it becomes. */
function validField<T>(field: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if ((err as { code?: string }).code === 'INVALID_PATH') throw new BadRequestError('INVALID_PATH', `${field}: ${(err as Error).message}`);
    throw err;
  }
}

/** Errors of the multipart parser itself (no boundary, cut-off body) are the client's: 400. */
async function* malformedAs400<T>(parts: AsyncIterable<T>): AsyncGenerator<T> {
  const it = parts[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<T>;
    try {
      next = await it.next();
    } catch (err) {
      const e = err as { statusCode?: number; code?: string; message?: string };
      if (typeof e.statusCode === 'number' && e.statusCode < 500) throw err;
      throw new BadRequestError('INVALID_MULTIPART', `The multipart body is malformed: ${(e.message ?? 'parse error').slice(0, 200)}`);
    }
    if (next.done) return;
    yield next.value;
  }
}

function contentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

export const fileRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sessions, config, metrics } = app.deps;
  const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema };

  app.post('/sessions/:id/files', {
    schema: {
      tags: ['files'], operationId: 'uploadFiles', summary: 'Upload files into the workspace (all or nothing)',
      params: SessionParamsSchema, querystring: UploadQuerySchema, consumes: ['multipart/form-data'],
      response: { 201: UploadResultSchema, ...errors, 409: ErrorSchema, 413: ErrorSchema, 415: ErrorSchema },
    },
  }, async (request, reply) => {
    const record = await sessions.touch(request.params.id);
    const dirParts = request.query.dir !== undefined ? validField('querystring.dir', () => validateRelativePath(request.query.dir ?? '')) : [];
    if (!request.isMultipart()) throw new AppError(415, 'FST_ERR_CTP_INVALID_MEDIA_TYPE', 'Uploads must be multipart/form-data with one or more file parts');

    const staging = path.join(sessions.layout.staging, `${request.id}-${randomBytes(4).toString('hex')}`);
    await fs.mkdir(staging, { mode: 0o700 });
    const staged: { target: string; file: StagedFile }[] = [];
    try {
      let used = 0;
      for await (const part of malformedAs400(request.parts())) {
        if (part.type !== 'file') continue;
        const file = part;
        const name = uploadBaseName(file.filename);
        const target = [...dirParts, name].join('/');
        validField(`file name '${name.slice(0, 100)}'`, () => validateRelativePath(target));
        if (!extensionAllowed(name, config.allowedExtensions)) throw new ExtensionNotAllowedError(name, config.allowedExtensions);
        let stagedFile: StagedFile;
        try {
          stagedFile = await stageFile(staging, file.file, config.maxUploadSizeBytes - used);
        } catch (err) {
          const e = err as { code?: string; syscall?: string; message?: string };
          if (e.code === 'UPLOAD_TOO_LARGE' || e.code === 'FST_REQ_FILE_TOO_LARGE') throw new UploadTooLargeError(config.maxUploadSizeBytes);
          // A file system error is ours (500); anything else broke while reading the part: the body.
          if (e.syscall !== undefined) throw err;
          throw new BadRequestError('INVALID_MULTIPART', `The multipart body is malformed: ${(e.message ?? 'parse error').slice(0, 200)}`);
        }
        if (file.file.truncated) throw new UploadTooLargeError(config.maxUploadSizeBytes);
        used += stagedFile.size;
        staged.push({ target, file: stagedFile });
      }
      if (staged.length === 0) throw new BadRequestError('NO_FILES', 'The request has no file part');

      const workspace = sessions.workspaceDir(record.session_id);
      const owner = sessions.ownerOf(record) ?? undefined;
      sessions.workspaceChanged(record.session_id);
      // All or nothing while the files are placed; 409 PATH_CONFLICT or 413 WORKSPACE_FULL when the sandbox is in the way.
      const written = await commitStagedFiles(workspace, staged.map(({ target, file }) => ({ stagedPath: file.path, relPath: target })), { owner, mkdirs: true });
      const result = written.map((w) => ({ path: w.path, size: w.size }));
      metrics.uploadBytes.inc(used);
      request.log.info({ session_id: record.session_id, files: result.length, bytes: used }, 'files uploaded');
      return reply.code(201).send({ files: result });
    } catch (err) {
      if ((err as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw new UploadTooLargeError(config.maxUploadSizeBytes);
      if ((err as { code?: string }).code === 'FST_FILES_LIMIT') throw new AppError(413, 'TOO_MANY_FILES', `At most ${config.maxUploadFiles} files per upload`);
      throw err;
    } finally {
      await removeTreeSafe(staging);
    }
  });

  app.get('/sessions/:id/files', {
    schema: { tags: ['files'], operationId: 'listFiles', summary: 'List the workspace files, a page at a time', params: SessionParamsSchema, querystring: ListFilesQuerySchema, response: { 200: FileListSchema, ...errors } },
  }, async (request) => {
    const record = await sessions.touch(request.params.id);
    const { cursor, limit } = request.query;
    // Pages in path order, each bounded in entries and bytes (listFilesPage, list-cursor.ts).
    const page = await listFilesPage(sessions.workspaceDir(record.session_id), {
      after: cursor === undefined ? null : decodeListCursor(cursor),
      budget: { maxPaths: Math.min(limit ?? config.maxListFiles, config.maxListFiles), maxBytes: config.maxListBytes },
    });
    const last = page.files[page.files.length - 1];
    return { files: page.files, next: page.more && last !== undefined ? encodeListCursor(last.path) : null };
  });

  app.get('/sessions/:id/files/*', {
    schema: {
      tags: ['files'], operationId: 'downloadFile', summary: 'Download a file (raw bytes)', params: FileParamsSchema,
      // z.any() at run time: the body is a stream, never serialized.
      response: { 200: { description: 'the raw bytes (Content-Disposition: attachment)', content: { 'application/octet-stream': { schema: z.any().meta({ type: 'string', format: 'binary' }) } } }, ...errors },
    },
  }, async (request, reply) => {
    const record = await sessions.touch(request.params.id);
    const rel = request.params['*'];
    validField('path', () => validateRelativePath(rel));
    const opened = await readFileSafe(sessions.workspaceDir(record.session_id), rel);
    void reply
      .header('content-type', 'application/octet-stream')
      .header('content-length', String(opened.size))
      .header('content-disposition', contentDisposition(rel.split('/').pop() ?? 'file'));
    // Exactly the announced bytes: the sandbox may grow or shrink the file meanwhile (exact-length-read.ts).
    return reply.send(exactLengthStream(opened.handle, opened.size));
  });

  app.delete('/sessions/:id/files/*', {
    schema: { tags: ['files'], operationId: 'deleteFile', summary: 'Delete a file', params: FileParamsSchema, response: { 204: z.null().describe('deleted'), ...errors } },
  }, async (request, reply) => {
    const record = await sessions.touch(request.params.id);
    validField('path', () => validateRelativePath(request.params['*']));
    sessions.workspaceChanged(record.session_id);
    await deleteFileSafe(sessions.workspaceDir(record.session_id), request.params['*']);
    return reply.code(204).send(null);
  });
};
