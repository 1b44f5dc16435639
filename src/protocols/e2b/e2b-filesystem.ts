// envd's file side: `GET/POST /files` (read raw bytes; write multipart, all or nothing, as the
// /v1 upload does: same size and extension rules, staged then committed) and the Connect
// filesystem service (Stat, ListDir, MakeDir, Move, Remove). Every path is an E2B path mapped into
// the workspace (e2b-paths.ts) and every host-side operation is link-safe (src/workspace).
// WatchDir and the watcher calls are refused as unimplemented.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  commitStagedFiles, deleteFileSafe, readFileSafe, removeTreeSafe, stageFile, type StagedFile,
} from '../../workspace/workspace-fs.js';
import { listDirSafe, makeDirSafe, moveEntrySafe, statEntrySafe } from '../../workspace/workspace-entries.js';
import { exactLengthStream } from '../../workspace/exact-length-read.js';
import { ExtensionNotAllowedError, UploadTooLargeError } from '../../errors.js';
import { E2bError, describeError, invalidArgument, notFound, unimplemented } from './e2b-errors.js';
import { entryJson } from './e2b-entries.js';
import { e2bPathOf, workspaceParts } from './e2b-paths.js';
import { useConnect } from './e2b-connect.js';
import type { E2bContext } from './e2b-context.js';

const PathQuery = z.looseObject({ path: z.string().max(4096).optional(), username: z.string().max(256).optional() });
const PathBody = z.looseObject({ path: z.string().max(4096) });
const ListBody = z.looseObject({ path: z.string().max(4096), depth: z.number().int().min(0).max(64).optional() });
const MoveBody = z.looseObject({ source: z.string().max(4096), destination: z.string().max(4096) });

function extensionAllowed(name: string, allowed: readonly string[]): boolean {
  const dot = name.lastIndexOf('.');
  return dot > 0 && allowed.includes(name.slice(dot).toLowerCase());
}

/** The session a sandbox-side request is for (set by the sandbox-side hook in e2b-routes.ts). */
export function sessionOf(request: FastifyRequest): string {
  return (request as FastifyRequest & { e2bSession?: string }).e2bSession ?? '';
}

export function filesRoutes(ctx: E2bContext): FastifyPluginAsyncZod {
  const { sessions, config } = ctx;
  return async (app) => {
    // envd's HTTP errors: {code: <status>, message}, which the SDK turns into its own exceptions.
    app.setErrorHandler((err, request, reply) => {
      const e = describeError(err);
      if (e.internal) request.log.error({ err }, 'E2B files request failed');
      void reply.code(e.status).send({ code: e.status, message: e.message });
    });

    app.get('/files', { schema: { querystring: PathQuery } }, async (request, reply) => {
      const id = sessionOf(request);
      if (request.query.path === undefined || request.query.path === '') throw invalidArgument('path: required');
      const parts = workspaceParts(request.query.path);
      if (parts.length === 0) throw invalidArgument(`path '${request.query.path}' is a directory`);
      let opened;
      try {
        opened = await readFileSafe(sessions.workspaceDir(id), parts.join('/'));
      } catch (err) {
        if ((err as { code?: string }).code === 'FILE_NOT_FOUND') throw notFound(`path '${request.query.path ?? ''}' does not exist or is not a regular file`);
        throw err;
      }
      void reply.header('content-type', 'application/octet-stream').header('content-length', String(opened.size));
      return reply.send(exactLengthStream(opened.handle, opened.size));
    });

    app.post('/files', { schema: { querystring: PathQuery } }, async (request, reply) => {
      const id = sessionOf(request);
      const record = await sessions.touch(id);
      if (!request.isMultipart()) throw new E2bError(400, 'invalid_argument', 'writes must be multipart/form-data with a part named file (this service takes no octet-stream uploads)');
      const staging = path.join(sessions.layout.staging, `e2b-${request.id}-${randomBytes(4).toString('hex')}`);
      await fs.mkdir(staging, { mode: 0o700 });
      const staged: { target: string; file: StagedFile }[] = [];
      try {
        let used = 0;
        // preservePath: the SDK names each part by its full target path (a write of several files).
        for await (const part of request.parts({ preservePath: true })) {
          if (part.type !== 'file') continue;
          const target = workspaceParts(request.query.path ?? part.filename, 'path');
          const name = target[target.length - 1];
          if (name === undefined) throw invalidArgument('path: names the home directory, not a file');
          if (!extensionAllowed(name, config.allowedExtensions)) throw new ExtensionNotAllowedError(name, config.allowedExtensions);
          const file = await stageFile(staging, part.file, config.maxUploadSizeBytes - used).catch((err: unknown) => {
            if ((err as { code?: string }).code === 'UPLOAD_TOO_LARGE') throw new UploadTooLargeError(config.maxUploadSizeBytes);
            throw err;
          });
          if (part.file.truncated) throw new UploadTooLargeError(config.maxUploadSizeBytes);
          used += file.size;
          staged.push({ target: target.join('/'), file });
        }
        if (staged.length === 0) throw invalidArgument('the request has no file part');
        sessions.workspaceChanged(id);
        const owner = sessions.ownerOf(record) ?? undefined;
        const written = await commitStagedFiles(sessions.workspaceDir(id), staged.map((s) => ({ stagedPath: s.file.path, relPath: s.target })), { owner, mkdirs: true });
        request.log.info({ session_id: id, files: written.length, bytes: used }, 'E2B files written');
        return reply.code(200).send(written.map((w) => ({ name: w.path.split('/').pop(), type: 'file', path: e2bPathOf(w.path) })));
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'FST_REQ_FILE_TOO_LARGE') throw new UploadTooLargeError(config.maxUploadSizeBytes);
        if (code === 'FST_FILES_LIMIT') throw new E2bError(413, 'resource_exhausted', `At most ${config.maxUploadFiles} files per write`);
        throw err;
      } finally {
        await removeTreeSafe(staging);
      }
    });
  };
}

export function filesystemService(ctx: E2bContext): FastifyPluginAsyncZod {
  const { sessions, config } = ctx;
  const base = '/filesystem.Filesystem';
  const ownerOf = async (id: string) => sessions.ownerOf(await sessions.touch(id)) ?? undefined;
  const notThere = (p: string) => (err: unknown) => {
    if ((err as { code?: string }).code === 'FILE_NOT_FOUND') throw notFound(`path '${p.slice(0, 200)}' not found`);
    throw err;
  };
  return async (app) => {
    useConnect(app);
    app.post(`${base}/Stat`, { schema: { body: PathBody } }, async (request) => {
      const id = sessionOf(request);
      const entry = await statEntrySafe(sessions.workspaceDir(id), workspaceParts(request.body.path)).catch(notThere(request.body.path));
      return { entry: entryJson(entry) };
    });
    app.post(`${base}/ListDir`, { schema: { body: ListBody } }, async (request) => {
      const id = sessionOf(request);
      const depth = Math.max(1, request.body.depth ?? 1);
      const { entries, truncated } = await listDirSafe(sessions.workspaceDir(id), workspaceParts(request.body.path), depth, config.maxListFiles)
        .catch(notThere(request.body.path));
      if (truncated) throw new E2bError(429, 'resource_exhausted', `the listing has more than ${config.maxListFiles} entries (MAX_LIST_FILES); list a smaller directory or a smaller depth`);
      return { entries: entries.map(entryJson) };
    });
    app.post(`${base}/MakeDir`, { schema: { body: PathBody } }, async (request) => {
      const id = sessionOf(request);
      const parts = workspaceParts(request.body.path);
      if (parts.length === 0) throw new E2bError(409, 'already_exists', `directory '${request.body.path}' already exists`);
      sessions.workspaceChanged(id);
      const made = await makeDirSafe(sessions.workspaceDir(id), parts, await ownerOf(id));
      if (!made) throw new E2bError(409, 'already_exists', `directory '${request.body.path.slice(0, 200)}' already exists`);
      return { entry: entryJson(await statEntrySafe(sessions.workspaceDir(id), parts)) };
    });
    app.post(`${base}/Move`, { schema: { body: MoveBody } }, async (request) => {
      const id = sessionOf(request);
      const from = workspaceParts(request.body.source, 'source');
      const to = workspaceParts(request.body.destination, 'destination');
      if (from.length === 0 || to.length === 0) throw invalidArgument('the home directory itself cannot be moved or replaced');
      sessions.workspaceChanged(id);
      await moveEntrySafe(sessions.workspaceDir(id), from, to, await ownerOf(id)).catch(notThere(request.body.source));
      return { entry: entryJson(await statEntrySafe(sessions.workspaceDir(id), to)) };
    });
    app.post(`${base}/Remove`, { schema: { body: PathBody } }, async (request) => {
      const id = sessionOf(request);
      const parts = workspaceParts(request.body.path);
      if (parts.length === 0) throw invalidArgument('the home directory itself cannot be removed');
      sessions.workspaceChanged(id);
      await deleteFileSafe(sessions.workspaceDir(id), parts.join('/'), { recursive: true }).catch(notThere(request.body.path));
      return {};
    });
    for (const method of ['WatchDir', 'CreateWatcher', 'GetWatcherEvents', 'RemoveWatcher']) {
      app.post(`${base}/${method}`, async () => {
        throw unimplemented(`${method}: watching directories is not supported by this service (bubble-sandbox)`);
      });
    }
  };
}
