// One host, one owner per sandbox uid: two instances handing out the same host uids would run
// one's sandboxes as the other's users (their files, their processes, signals between them). Each
// instance that hands out uids (root) records its range as a file in UID_LOCK_DIR and refuses to
// start while a live instance holds an overlapping one.
//
// Node has no flock, so the lock is a publish-then-look protocol: write our record (to a temp name,
// then rename, so a reader never sees half a file), then read everyone else's. Of two instances
// starting at once at least one sees the other; both may refuse, which is the safe way round. A
// record is live while its pid runs with the same start time (/proc/<pid>/stat) since the same
// boot: a crash leaves a stale record that the next start removes, and a reused pid does not
// hold anyone's range.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, ENV_PREFIX } from '../config.js';

export interface UidRange { base: number; count: number }
interface UidRangeRecord extends UidRange { pid: number; start_time: string; boot_id: string | null; created_at: string }

export interface UidRangeLock {
  readonly file: string;
  /** Stale records of dead instances that this start removed (for the log). */
  readonly removedStale: readonly string[];
  /** Remove our record; idempotent, never rejects. */
  release(): Promise<void>;
}

/** An overlapping range held by a live instance: a settings conflict, so start-up stops with this message. */
export class UidRangeInUseError extends ConfigError {}

const RECORD = /^(\d+)-[0-9a-f]{8}\.json$/;
const TEMP = /^\.(\d+)-[0-9a-f]{8}\.json\.tmp$/;

/** Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), null when it does not exist. */
export async function processStartTime(pid: number): Promise<string | null> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null;
}

async function bootId(): Promise<string | null> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => null))?.trim() || null;
}

async function isLive(rec: Pick<UidRangeRecord, 'pid' | 'start_time' | 'boot_id'>, boot: string | null): Promise<boolean> {
  if (rec.boot_id !== null && boot !== null && rec.boot_id !== boot) return false;
  return (await processStartTime(rec.pid)) === rec.start_time;
}

function parseRecord(text: string): UidRangeRecord | null {
  try {
    const r = JSON.parse(text) as Partial<UidRangeRecord>;
    const ints = [r.pid, r.base, r.count].every((n) => Number.isSafeInteger(n));
    return ints && typeof r.start_time === 'string' ? (r as UidRangeRecord) : null;
  } catch {
    return null;
  }
}

const overlaps = (a: UidRange, b: UidRange) => a.base < b.base + b.count && b.base < a.base + a.count;
const describe = (r: UidRange) => `${r.base}-${r.base + r.count - 1}`;
const errCode = (err: unknown) => (err as NodeJS.ErrnoException | null)?.code;

async function removeQuietly(file: string): Promise<void> {
  await unlink(file).catch((err: unknown) => {
    if (errCode(err) !== 'ENOENT') throw err;
  });
}

/**
 * Record that this process holds `range` in `dir`, or throw UidRangeInUseError naming the live
 * instance that holds an overlapping range. Dead instances' records are removed on the way.
 */
export async function lockUidRange(dir: string, range: UidRange): Promise<UidRangeLock> {
  const [start, boot] = await Promise.all([processStartTime(process.pid), bootId()]);
  if (start === null) throw new ConfigError(`cannot read /proc/${process.pid}/stat to record the sandbox uid range in ${ENV_PREFIX}UID_LOCK_DIR`);
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new ConfigError(`cannot create ${ENV_PREFIX}UID_LOCK_DIR=${dir} (where instances record their sandbox uid ranges): ${(err as Error).message}`);
  }
  // Several sandboxes of one process (tests) each hold a record of their own.
  const name = `${process.pid}-${randomBytes(4).toString('hex')}.json`;
  const file = path.join(dir, name);
  const record: UidRangeRecord = { pid: process.pid, start_time: start, boot_id: boot, base: range.base, count: range.count, created_at: new Date().toISOString() };
  const temp = path.join(dir, `.${name}.tmp`);
  try {
    await writeFile(temp, `${JSON.stringify(record)}\n`, { flag: 'wx', mode: 0o644 });
    await rename(temp, file);
  } catch (err) {
    await removeQuietly(temp).catch(() => undefined);
    throw new ConfigError(`cannot record the sandbox uid range in ${ENV_PREFIX}UID_LOCK_DIR=${dir}: ${(err as Error).message}`);
  }

  const removedStale: string[] = [];
  const live: UidRangeRecord[] = [];
  const conflicts: { rec: UidRangeRecord; file: string }[] = [];
  try {
    for (const entry of await readdir(dir)) {
      if (entry === name) continue;
      const other = path.join(dir, entry);
      const unfinished = TEMP.exec(entry);
      if (unfinished) {
        // A record a crashed start never renamed into place.
        if ((await processStartTime(Number(unfinished[1]))) === null) await removeQuietly(other);
        continue;
      }
      if (!RECORD.test(entry)) continue;
      const text = await readFile(other, 'utf8').catch((err: unknown) => {
        if (errCode(err) === 'ENOENT') return null; // released meanwhile
        throw err;
      });
      const rec = text === null ? null : parseRecord(text);
      if (rec === null) continue;
      if (!(await isLive(rec, boot))) {
        await removeQuietly(other);
        removedStale.push(entry);
        continue;
      }
      live.push(rec);
      if (overlaps(rec, range)) conflicts.push({ rec, file: other });
    }
  } catch (err) {
    await removeQuietly(file).catch(() => undefined);
    throw new ConfigError(`cannot read ${ENV_PREFIX}UID_LOCK_DIR=${dir}: ${(err as Error).message}`);
  }

  if (conflicts.length > 0) {
    await removeQuietly(file).catch(() => undefined);
    const others = conflicts.map(({ rec, file: f }) => `pid ${rec.pid} holds uids ${describe(rec)} (${f})`).join('; ');
    const freeBase = Math.max(range.base + range.count, ...live.map((r) => r.base + r.count));
    throw new UidRangeInUseError(
      `sandbox uids ${describe(range)} (${ENV_PREFIX}SANDBOX_UID_BASE=${range.base}, ${ENV_PREFIX}SANDBOX_UID_COUNT=${range.count}) ` +
      `overlap those of another bubble-sandbox instance on this host: ${others}. Two instances would run sandboxes as the same host users; ` +
      `give this one a range of its own with ${ENV_PREFIX}SANDBOX_UID_BASE (e.g. ${freeBase}), or stop the other instance`,
    );
  }

  let released = false;
  return {
    file,
    removedStale,
    async release() {
      if (released) return;
      released = true;
      await removeQuietly(file).catch(() => undefined);
    },
  };
}
