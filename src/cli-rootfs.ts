// `bubble-sandbox rootfs import NAME ARCHIVE | list [--json] | remove NAME`: the operator's side of
// root filesystems. An import is at once an environment NAME of kind rootfs; a running service
// sees it at its next lookup (no restart).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError } from './cli-run.js';
import type { Config } from './config.js';
import { findEnvironment, type Environment } from './sandbox/environments.js';
import { createHostLayout } from './sandbox/host-layout.js';
import { clearRootfsStaging, importRootfs, RootfsImportError } from './sandbox/rootfs/rootfs-import.js';
import { ensureRootfsLayout, listRootfs, removeRootfs, ROOTFS_NAME, rootfsLayout } from './sandbox/rootfs/rootfs-store.js';
import { IS_ROOT, limitsFromConfig } from './sandbox/sandbox.js';
import { mountWritableRoot, unmountWritableRoot, WritableRootError } from './sandbox/rootfs/writable-root.js';
import { buildSeccompProgram, hostSeccompArch } from './sandbox/seccomp.js';

export const ROOTFS_HELP = `usage: bubble-sandbox rootfs <import NAME ARCHIVE | list [--json] | remove NAME>
  import NAME ARCHIVE   unpack a .tar, .tar.gz, .tar.xz or .tar.zst (docker export, or
                        scripts/build-rootfs.sh) as environment NAME of kind rootfs; the same
                        archive twice is unpacked once
  list [--json]         the imported root filesystems
  remove NAME           forget NAME (its files go when no other name uses them)`;

function checkName(name: string | undefined): string {
  if (name === undefined || !ROOTFS_NAME.test(name)) throw new UsageError(`invalid rootfs name '${name ?? ''}' (letters, digits, _ and -, at most 64)`);
  return name;
}

async function importCommand(config: Config, name: string, archive: string): Promise<number> {
  const existing = await findEnvironment(config.environmentsDir, name);
  if (existing !== null && existing.kind === 'venv') throw new UsageError(`'${name}' is already a venv environment in ${config.environmentsDir}; pick another name`);
  const layout = rootfsLayout(config.workspaceDir);
  await ensureRootfsLayout(layout);
  clearRootfsStaging(layout);
  const hostLayout = createHostLayout();
  const arch = hostSeccompArch();
  try {
    const limits = { ...limitsFromConfig(config), fileSizeBytes: 64 * 1024 ** 3, tmpSizeBytes: 16 * 1024 * 1024 };
    const r = await importRootfs({
      deps: { bwrapPath: config.bwrapPath, execHelperPath: config.execHelperPath, layout: hostLayout, seccompProgram: arch ? buildSeccompProgram(arch) : null, cgroups: null },
      layout, name, archive,
      owner: IS_ROOT ? { uid: config.rootfsUid, gid: config.rootfsUid } : null,
      limits,
      timeoutMs: config.rootfsImportTimeoutSeconds * 1000,
    });
    const what = r.unpacked ? `unpacked (${r.summary})` : 'same archive as before, reused';
    console.log(`imported ${name}: ${r.record.os || 'no os-release'}, ${r.record.python ? 'with' : 'without'} python3, ${what}`);
    return 0;
  } catch (err) {
    if (err instanceof RootfsImportError) {
      process.stderr.write(`bubble-sandbox: rootfs import ${name}: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    hostLayout.dispose();
  }
}

export async function runRootfsCommand(config: Config, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } }, allowPositionals: true, strict: true });
  const [sub, ...rest] = positionals;
  if (values.help || sub === undefined) {
    console.log(ROOTFS_HELP);
    return sub === undefined && !values.help ? 2 : 0;
  }
  const layout = rootfsLayout(config.workspaceDir);
  switch (sub) {
    case 'import': {
      if (rest.length !== 2) throw new UsageError('rootfs import takes NAME and ARCHIVE');
      return importCommand(config, checkName(rest[0]), rest[1] as string);
    }
    case 'list': {
      const records = await listRootfs(layout);
      if (values.json) console.log(JSON.stringify(records, null, 2));
      else for (const r of records) console.log(`${r.name}\t${r.sha256.slice(0, 12)}\t${r.python ? 'python3' : 'no python3'}\t${r.os}`);
      return 0;
    }
    case 'remove': {
      if (rest.length !== 1) throw new UsageError('rootfs remove takes NAME');
      const name = checkName(rest[0]);
      if (!(await removeRootfs(layout, name))) throw new UsageError(`no rootfs named '${name}'`);
      console.log(`removed ${name}`);
      return 0;
    }
    default:
      throw new UsageError(`unknown rootfs command '${sub}' (import, list or remove)`);
  }
}

/**
 * `run --rootfs-overlay`: a writable overlay over a rootfs environment for this one run, its
 * upper layer in a temporary directory that goes with the run (no quota: the operator's own
 * command line). Needs root, like the service's writable roots.
 */
export async function openRunOverlay(environment: Environment, identity: { uid: number; gid: number } | null): Promise<{ environment: Environment; close(): Promise<void> }> {
  if (environment.kind !== 'rootfs' || environment.rootDir === null) throw new UsageError(`--rootfs-overlay needs an environment of kind rootfs; '${environment.name}' is a venv`);
  if (!IS_ROOT || identity === null) throw new UsageError('--rootfs-overlay needs root (the overlay is mounted on this host)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-sandbox-overlay-'));
  fs.chmodSync(dir, 0o711);
  const merged = path.join(dir, 'root');
  const close = async () => {
    await unmountWritableRoot(merged);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await mountWritableRoot({ lowerDir: environment.rootDir, layerDir: dir, mergedDir: merged, treeOwnerId: fs.statSync(environment.rootDir).uid, owner: identity });
  } catch (err) {
    await close();
    if (err instanceof WritableRootError) throw new UsageError(`--rootfs-overlay: ${err.message}: ${err.detail.split('\n')[0] ?? ''}`);
    throw err;
  }
  return { environment: { ...environment, rootDir: merged, writableRoot: true }, close };
}
