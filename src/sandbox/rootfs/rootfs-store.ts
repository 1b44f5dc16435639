// Imported root filesystems, content-addressed under <workspace_dir>/rootfs/:
//   objects/<sha256 of the archive>/   the unpacked tree, shared read-only by every sandbox using it
//   names/<name>.json                  a name (an environment of kind rootfs) → an object
//   staging/<random>/                  imports under way; a crash leaves them, the next import clears them
// Two names may share one object; removing the last name removes the object. Nothing here is ever
// written by a sandbox (trees belong to ROOTFS_UID, which no sandbox runs as), so plain fs calls
// are safe on them.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';

export const ROOTFS_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export const RootfsRecordSchema = z.object({
  name: z.string().regex(ROOTFS_NAME),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  archive_bytes: z.number().int().min(0),
  imported_at: z.string(),
  /** Whether /usr/bin/python3 exists in it (script, run_code and processes need it). */
  python: z.boolean(),
  /** PRETTY_NAME of its /etc/os-release, '' when it has none. */
  os: z.string(),
});
export type RootfsRecord = z.infer<typeof RootfsRecordSchema>;

export interface RootfsLayout { root: string; objects: string; names: string; staging: string }

export function rootfsLayout(workspaceDir: string): RootfsLayout {
  const root = path.join(workspaceDir, 'rootfs');
  return { root, objects: path.join(root, 'objects'), names: path.join(root, 'names'), staging: path.join(root, 'staging') };
}

/** Every level 0711: sandbox uids traverse to the trees, only the service lists or writes. */
export async function ensureRootfsLayout(layout: RootfsLayout): Promise<void> {
  for (const dir of [path.dirname(layout.root), layout.root, layout.objects, layout.names, layout.staging]) {
    await fs.mkdir(dir, { recursive: true, mode: 0o711 });
    const st = await fs.lstat(dir);
    if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
    if ((st.mode & 0o001) === 0) await fs.chmod(dir, (st.mode & 0o777) | 0o711);
  }
}

export const objectDir = (layout: RootfsLayout, sha256: string) => path.join(layout.objects, sha256);

export async function readRootfsRecord(layout: RootfsLayout, name: string): Promise<RootfsRecord | null> {
  if (!ROOTFS_NAME.test(name)) return null;
  let text: string;
  try {
    text = await fs.readFile(path.join(layout.names, `${name}.json`), 'utf8');
  } catch {
    return null;
  }
  const parsed = RootfsRecordSchema.safeParse(JSON.parse(text));
  return parsed.success && parsed.data.name === name ? parsed.data : null;
}

export async function listRootfs(layout: RootfsLayout): Promise<RootfsRecord[]> {
  const entries = await fs.readdir(layout.names).catch(() => [] as string[]);
  const names = entries.filter((e) => e.endsWith('.json')).map((e) => e.slice(0, -5)).sort();
  const records = await Promise.all(names.map((n) => readRootfsRecord(layout, n)));
  return records.filter((r): r is RootfsRecord => r !== null);
}

/** Atomic: a reader sees the old record or the new one, never half of one. */
export async function writeRootfsRecord(layout: RootfsLayout, record: RootfsRecord): Promise<void> {
  const file = path.join(layout.names, `${record.name}.json`);
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  await fs.writeFile(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  await fs.rename(tmp, file);
}

/** Removes a name; its object goes too when no other name uses it. False when there was no such name. */
export async function removeRootfs(layout: RootfsLayout, name: string): Promise<boolean> {
  const record = await readRootfsRecord(layout, name);
  if (record === null) return false;
  await fs.unlink(path.join(layout.names, `${name}.json`));
  await dropObjectIfUnnamed(layout, record.sha256);
  return true;
}

/** Deletes an object no name refers to any more (renamed first, so no lookup finds half a tree). */
export async function dropObjectIfUnnamed(layout: RootfsLayout, sha256: string): Promise<void> {
  if ((await listRootfs(layout)).some((r) => r.sha256 === sha256)) return;
  const doomed = path.join(layout.staging, `removed-${sha256}-${randomBytes(4).toString('hex')}`);
  try {
    await fs.rename(objectDir(layout, sha256), doomed);
  } catch {
    return;
  }
  await fs.rm(doomed, { recursive: true, force: true });
}

/** The tree of a named rootfs, with its record; null when there is no such name or its tree is gone. */
export async function resolveRootfs(layout: RootfsLayout, name: string): Promise<{ record: RootfsRecord; dir: string } | null> {
  const record = await readRootfsRecord(layout, name);
  if (record === null) return null;
  const dir = objectDir(layout, record.sha256);
  const st = await fs.lstat(dir).catch(() => null);
  return st?.isDirectory() ? { record, dir } : null;
}
