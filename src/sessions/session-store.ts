// Session metadata on disk: <workspace_dir>/sessions/<id>/meta.json, written atomically
// (temp file, fsync, rename, fsync of the directory) so a crash never leaves half a record.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { untraversableAncestor } from '../sandbox/traversable.js';
import { NetworkPolicyRecordSchema } from './network-policy.js';

export const SessionRecordSchema = z.object({
  session_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  environment: z.string(),
  created_at: z.string(),
  last_activity: z.string(),
  volumes: z.record(z.string(), z.enum(['ro', 'rw'])),
  uid_slot: z.number().int().min(0),
  // Records written before network policies existed have none: mode none, as they ran.
  network: NetworkPolicyRecordSchema.default({ mode: 'none' }),
  // Records written before writable roots existed have none.
  writable_root: z.boolean().default(false),
});
export type SessionRecord = z.infer<typeof SessionRecordSchema>;

export interface StoreLayout {
  root: string;
  sessions: string;
  volumes: string;
  /** Quota images of volumes, one directory per volume: outside every mounted tree. */
  volumeImages: string;
  staging: string;
  oneshot: string;
  /** Quota workspaces built ahead for new sessions (workspace-pool.ts). */
  pool: string;
  /** Run directories of network namespaces (egress proxy sockets): <workspace_dir>/run/net, cleared at start. */
  net: string;
}

export function storeLayout(workspaceDir: string): StoreLayout {
  return {
    root: workspaceDir,
    sessions: path.join(workspaceDir, 'sessions'),
    volumes: path.join(workspaceDir, 'volumes'),
    volumeImages: path.join(workspaceDir, 'volume-images'),
    staging: path.join(workspaceDir, 'staging'),
    oneshot: path.join(workspaceDir, 'oneshot'),
    pool: path.join(workspaceDir, 'pool'),
    net: path.join(workspaceDir, 'run', 'net'),
  };
}

export const sessionDir = (layout: StoreLayout, id: string) => path.join(layout.sessions, id);
export const workspaceOf = (layout: StoreLayout, id: string) => path.join(layout.sessions, id, 'workspace');
const metaOf = (layout: StoreLayout, id: string) => path.join(layout.sessions, id, 'meta.json');

/**
 * Creates the layout; every level must be traversable (o+x) by the sandbox uids, which reach
 * their workspace through it. An existing directory without it (mkdtemp makes 0700) is fixed when
 * it is ours, refused with a clear message otherwise.
 */
export async function ensureLayout(layout: StoreLayout): Promise<void> {
  await fs.mkdir(layout.root, { recursive: true, mode: 0o711 });
  const blocked = untraversableAncestor(path.dirname(layout.root));
  if (blocked !== null) throw new Error(`${blocked} is not traversable by the sandbox uids, so no workspace below it can be mounted; chmod o+x it`);
  for (const dir of [layout.root, layout.sessions, layout.volumes, layout.volumeImages, layout.staging, layout.oneshot, layout.pool, path.dirname(layout.net), layout.net]) {
    await fs.mkdir(dir, { recursive: true, mode: 0o711 });
    const st = await fs.lstat(dir);
    if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
    if ((st.mode & 0o001) === 0) {
      if (st.uid !== process.getuid?.()) throw new Error(`${dir} is not traversable by the sandbox uids (mode ${(st.mode & 0o777).toString(8)}); chmod o+x it`);
      await fs.chmod(dir, (st.mode & 0o777) | 0o711);
    }
  }
}

/**
 * Writes the record atomically (temp file, fsync, rename, fsync of the directory). With
 * `deferFlush` (a session being created) it returns once the record is in place, which a restart
 * of the service finds, and the two fsyncs (about 2.7 ms here) run after, in `flushed`: only a
 * power loss or kernel crash in those milliseconds can cost the new session its record (it is
 * then reported unreadable at the next start), never an existing record, and never a restart.
 */
export async function writeRecord(layout: StoreLayout, record: SessionRecord, opts: { deferFlush?: boolean } = {}): Promise<{ flushed: Promise<void> }> {
  const dir = sessionDir(layout, record.session_id);
  const tmp = path.join(dir, `.meta.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'wx', 0o600);
  const syncDir = async (d = dir) => {
    const dh = await fs.open(d, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  };
  if (opts.deferFlush) {
    try {
      await fh.writeFile(JSON.stringify(record));
      await fs.rename(tmp, metaOf(layout, record.session_id));
    } catch (err) {
      await fh.close();
      throw err;
    }
    const flushed = (async () => {
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await syncDir();
      await syncDir(layout.sessions); // the session dir's own entry (made or renamed in just now)
    })();
    return { flushed };
  }
  try {
    await fh.writeFile(JSON.stringify(record));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, metaOf(layout, record.session_id));
  await syncDir();
  return { flushed: Promise.resolve() };
}

export async function deleteRecord(layout: StoreLayout, id: string): Promise<void> {
  await fs.rm(metaOf(layout, id), { force: true });
}

/** Every readable record; unreadable ones are reported, never fatal. Temp files are removed. */
export async function readAllRecords(layout: StoreLayout): Promise<{ records: SessionRecord[]; broken: string[] }> {
  const records: SessionRecord[] = [];
  const broken: string[] = [];
  for (const entry of await fs.readdir(layout.sessions, { withFileTypes: true })) {
    if (!entry.isDirectory() || !/^[A-Za-z0-9_-]{1,64}$/.test(entry.name)) continue;
    const dir = path.join(layout.sessions, entry.name);
    for (const f of await fs.readdir(dir)) {
      if (f.startsWith('.meta.') && f.endsWith('.tmp')) await fs.rm(path.join(dir, f), { force: true });
    }
    let raw: string;
    try {
      raw = await fs.readFile(metaOf(layout, entry.name), 'utf8');
    } catch {
      continue; // a kept workspace (clear_data=false) without a live session
    }
    const parsed = SessionRecordSchema.safeParse(safeJson(raw));
    if (parsed.success && parsed.data.session_id === entry.name) records.push(parsed.data);
    else broken.push(entry.name);
  }
  return { records, broken };
}

function safeJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return null;
  }
}
