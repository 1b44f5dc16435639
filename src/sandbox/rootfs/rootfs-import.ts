// `rootfs import NAME ARCHIVE`: hash the archive; an object already unpacked from the same bytes
// is reused (only the name is written). Otherwise unpack it with no privilege on the host: inside
// a sandbox (no network, seccomp, all capabilities dropped) as ROOTFS_UID, which can write nothing
// but a staging directory, running the hardened extractor unpack.py. Only a complete tree is
// renamed into objects/: a refused or corrupt archive leaves nothing but a one-line error.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { SANDBOX_PATHS } from '../bwrap-args.js';
import { spawnSandbox, type SpawnDeps } from '../spawn.js';
import type { ResourceLimits } from '../types.js';
import { dropObjectIfUnnamed, objectDir, readRootfsRecord, writeRootfsRecord, type RootfsLayout, type RootfsRecord } from './rootfs-store.js';

const UNPACK_SOURCE = fs.readFileSync(new URL('./unpack.py', import.meta.url), 'utf8');
const STDERR_LIMIT = 4096;

/** The archive is refused: unreadable, hostile or not an archive. The message is one line. */
export class RootfsImportError extends Error {
  override readonly name = 'RootfsImportError';
}

export interface ImportOptions {
  deps: SpawnDeps;
  layout: RootfsLayout;
  name: string;
  archive: string;
  /** Host uid/gid that unpacks and owns the tree; null keeps ours (not root). */
  owner: { uid: number; gid: number } | null;
  limits: ResourceLimits;
  timeoutMs: number;
}

export interface ImportResult { record: RootfsRecord; unpacked: boolean; summary: string }

async function hashFile(file: string): Promise<{ sha256: string; bytes: number; magic: Buffer }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let magic = Buffer.alloc(0);
  for await (const chunk of fs.createReadStream(file) as AsyncIterable<Buffer>) {
    if (magic.length < 8) magic = Buffer.concat([magic, chunk.subarray(0, 8 - magic.length)]);
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest('hex'), bytes, magic };
}

const isZstd = (magic: Buffer) => magic.length >= 4 && magic.readUInt32LE(0) === 0xfd2fb528;

/** Python looks for python3 where scripts and the kernel call it. */
function facts(tree: string): { python: boolean; os: string } {
  const python = ['usr/bin/python3', 'bin/python3'].some((p) => fs.lstatSync(path.join(tree, p), { throwIfNoEntry: false }) !== undefined);
  let os = '';
  for (const rel of ['etc/os-release', 'usr/lib/os-release']) {
    const st = fs.lstatSync(path.join(tree, rel), { throwIfNoEntry: false });
    if (!st?.isFile()) continue; // a link in the tree is read from inside it, never followed here
    os = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(fs.readFileSync(path.join(tree, rel), 'utf8'))?.[1]?.slice(0, 200) ?? '';
    break;
  }
  return { python, os };
}

async function unpackInSandbox(opts: ImportOptions, staging: string, zstd: boolean): Promise<string> {
  const sandbox = await spawnSandbox(opts.deps, {
    environment: null,
    workspaceDir: staging,
    volumes: [],
    command: ['/usr/bin/python3', `${SANDBOX_PATHS.scriptDir}/unpack.py`, ...(zstd ? ['--zstd'] : []), `${SANDBOX_PATHS.workspace}/root`],
    sandboxFiles: { 'unpack.py': UNPACK_SOURCE },
    env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', PYTHONDONTWRITEBYTECODE: '1' },
    limits: opts.limits,
    identity: opts.owner,
    cpuSeconds: opts.timeoutMs / 1000,
    cgroupName: `rootfs-import-${randomBytes(6).toString('hex')}`,
  });
  let stdout = '';
  let stderr = '';
  sandbox.stdout.on('data', (c: Buffer) => { stdout = (stdout + c.toString('utf8')).slice(-STDERR_LIMIT); });
  sandbox.stderr.on('data', (c: Buffer) => { stderr = (stderr + c.toString('utf8')).slice(-STDERR_LIMIT); });
  const timer = setTimeout(() => sandbox.kill(), opts.timeoutMs);
  try {
    // The extractor may refuse and exit before reading everything: a broken pipe is not the error.
    const feeding = pipeline(fs.createReadStream(opts.archive), sandbox.stdin).catch(() => undefined);
    const { code, signal } = await sandbox.exited;
    await feeding;
    if (code === 0) return stdout.trim();
    const line = stderr.split('\n').map((l) => l.trim()).filter((l) => l.length > 0).at(-1);
    if (code === 3 && line !== undefined) throw new RootfsImportError(line);
    throw new RootfsImportError(signal !== null ? `the unpacking sandbox was stopped (${signal}; time limit ${opts.timeoutMs / 1000} s)` : `the unpacking sandbox failed (exit ${String(code)}): ${line ?? 'no message'}`);
  } finally {
    clearTimeout(timer);
    await sandbox.dispose();
  }
}

export async function importRootfs(opts: ImportOptions): Promise<ImportResult> {
  const { layout, name } = opts;
  const st = fs.statSync(opts.archive, { throwIfNoEntry: false });
  if (!st?.isFile()) throw new RootfsImportError(`${opts.archive} is not a file`);
  const { sha256, bytes, magic } = await hashFile(opts.archive);
  const target = objectDir(layout, sha256);
  let unpacked = false;
  let summary = 'already unpacked';
  if (!fs.existsSync(target)) {
    const staging = fs.mkdtempSync(path.join(layout.staging, 'import-'));
    try {
      fs.chmodSync(staging, 0o700);
      if (opts.owner) fs.chownSync(staging, opts.owner.uid, opts.owner.gid);
      summary = await unpackInSandbox(opts, staging, isZstd(magic));
      const tree = path.join(staging, 'root');
      fs.chmodSync(tree, 0o755);
      // Another import of the same bytes may have finished meanwhile: keep the first.
      try {
        fs.renameSync(tree, target);
        unpacked = true;
      } catch (err) {
        if (!fs.existsSync(target)) throw err;
      }
    } finally {
      fs.rmSync(staging, { recursive: true, force: true });
    }
  }
  const previous = await readRootfsRecord(layout, name);
  const record: RootfsRecord = { name, sha256, archive_bytes: bytes, imported_at: new Date().toISOString(), ...facts(target) };
  await writeRootfsRecord(layout, record);
  // A name moved to another archive: its old object goes when nothing else names it.
  if (previous !== null && previous.sha256 !== sha256) await dropObjectIfUnnamed(layout, previous.sha256);
  return { record, unpacked, summary };
}

/** Leftovers of imports a crash interrupted (never an import under way: call before importing). */
export function clearRootfsStaging(layout: RootfsLayout, olderThanMs = 24 * 3600_000): void {
  for (const entry of fs.readdirSync(layout.staging)) {
    const dir = path.join(layout.staging, entry);
    const st = fs.lstatSync(dir);
    if (Date.now() - st.mtimeMs > olderThanMs || entry.startsWith('removed-')) fs.rmSync(dir, { recursive: true, force: true });
  }
}
