// Two instances on one host must not hand out the same sandbox uids: the range lock in
// UID_LOCK_DIR, on its own and as createSandbox takes it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createSandbox } from '../../src/sandbox/sandbox.js';
import { lockUidRange, processStartTime, UidRangeInUseError } from '../../src/sandbox/uid-range-lock.js';
import { makeTempDir, removeTempDir } from '../helpers/host-env.js';

const IS_ROOT = process.getuid?.() === 0;
const dirs: string[] = [];
function lockDir(): string {
  const d = makeTempDir('bs-uid-lock-test-', 0o755);
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) removeTempDir(d);
});

const records = (dir: string) => fs.readdirSync(dir).filter((n) => n.endsWith('.json')).sort();

/** A record as another instance would leave it. */
function plant(dir: string, name: string, rec: { pid: number; start_time: string; base: number; count: number; boot_id?: string | null }): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify({ boot_id: null, created_at: new Date().toISOString(), ...rec }));
  return file;
}

/** The pid of a process that has exited (a crashed instance). */
function deadPid(): number {
  const r = spawnSync('/bin/sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

describe('lockUidRange', () => {
  test('a second holder of an overlapping range is refused with the other pid, both ranges and the setting to change', async () => {
    const dir = lockDir();
    const first = await lockUidRange(dir, { base: 200_000, count: 4096 });
    expect(records(dir)).toEqual([path.basename(first.file)]);
    const refused = lockUidRange(dir, { base: 204_000, count: 4096 });
    await expect(refused).rejects.toThrow(UidRangeInUseError);
    await expect(refused).rejects.toThrow(`pid ${process.pid} holds uids 200000-204095`);
    await expect(refused).rejects.toThrow(/sandbox uids 204000-208095 .*BUBBLE_SANDBOX_SANDBOX_UID_BASE=204000.*give this one a range of its own with BUBBLE_SANDBOX_SANDBOX_UID_BASE \(e\.g\. 208096\)/);
    expect(records(dir)).toEqual([path.basename(first.file)]); // the refused one left nothing behind
    await first.release();
    expect(records(dir)).toEqual([]);
  });

  test('ranges that only touch do not overlap; release lets the range be taken again', async () => {
    const dir = lockDir();
    const a = await lockUidRange(dir, { base: 200_000, count: 100 });
    const b = await lockUidRange(dir, { base: 200_100, count: 100 });
    const c = await lockUidRange(dir, { base: 199_900, count: 100 });
    expect(records(dir)).toHaveLength(3);
    await expect(lockUidRange(dir, { base: 200_199, count: 1 })).rejects.toThrow('holds uids 200100-200199');
    await b.release();
    await b.release(); // idempotent
    const again = await lockUidRange(dir, { base: 200_199, count: 1 });
    for (const l of [a, c, again]) await l.release();
    expect(records(dir)).toEqual([]);
  });

  test('a record of a dead instance, or of a reused pid, is removed and does not hold the range', async () => {
    const dir = lockDir();
    const ownStart = await processStartTime(process.pid);
    expect(ownStart).toMatch(/^\d+$/);
    plant(dir, `${deadPid()}-0000dead.json`, { pid: deadPid(), start_time: '1', base: 200_000, count: 4096 });
    // Our own pid with another start time: a crashed instance whose pid we were given since.
    plant(dir, `${process.pid}-0000beef.json`, { pid: process.pid, start_time: String(Number(ownStart) - 1), base: 200_000, count: 4096 });
    // Our own pid and start time, but from an earlier boot.
    plant(dir, `${process.pid}-0000b007.json`, { pid: process.pid, start_time: ownStart ?? '', boot_id: 'another-boot', base: 200_000, count: 4096 });
    fs.writeFileSync(path.join(dir, `.${deadPid()}-0000cafe.json.tmp`), '{"pid":'); // a start that crashed mid-write
    fs.writeFileSync(path.join(dir, 'README'), 'not a record');
    const lock = await lockUidRange(dir, { base: 200_000, count: 4096 });
    expect(lock.removedStale.map((n) => n.split('-')[1]).sort()).toEqual(['0000b007.json', '0000beef.json', '0000dead.json']);
    expect(fs.readdirSync(dir).sort()).toEqual([path.basename(lock.file), 'README'].sort());
    await lock.release();
  });

  test('a live instance\'s record (another process) holds its range', async () => {
    const dir = lockDir();
    const start = await processStartTime(process.ppid);
    if (start === null) throw new Error('no parent process');
    plant(dir, `${process.ppid}-00000001.json`, { pid: process.ppid, start_time: start, base: 300_000, count: 10 });
    await expect(lockUidRange(dir, { base: 300_005, count: 10 })).rejects.toThrow(`pid ${process.ppid} holds uids 300000-300009`);
    const elsewhere = await lockUidRange(dir, { base: 300_010, count: 10 });
    await elsewhere.release();
    expect(records(dir)).toEqual([`${process.ppid}-00000001.json`]);
  });

  test('an unusable lock directory stops start-up naming UID_LOCK_DIR', async () => {
    const dir = lockDir();
    fs.writeFileSync(path.join(dir, 'file'), '');
    await expect(lockUidRange(path.join(dir, 'file', 'sub'), { base: 1, count: 1 })).rejects.toThrow(/BUBBLE_SANDBOX_UID_LOCK_DIR=.*file\/sub/);
  });
});

describe.runIf(IS_ROOT)('createSandbox as root', () => {
  const configFor = (dir: string, base: number) => loadConfig({
    BUBBLE_SANDBOX_LOG_LEVEL: 'silent', BUBBLE_SANDBOX_CGROUPS: 'off', BUBBLE_SANDBOX_UID_LOCK_DIR: dir, BUBBLE_SANDBOX_SANDBOX_UID_BASE: String(base),
  });

  test('holds the uid range until close when asked to (the service), and not otherwise (a CLI run)', async () => {
    const dir = lockDir();
    const service = await createSandbox(configFor(dir, 200_000), undefined, { lockUidRange: true });
    expect(records(dir)).toHaveLength(1);
    await expect(createSandbox(configFor(dir, 200_000), undefined, { lockUidRange: true })).rejects.toThrow(UidRangeInUseError);
    const cli = await createSandbox(configFor(dir, 200_000));
    await cli.close();
    const other = await createSandbox(configFor(dir, 210_000), undefined, { lockUidRange: true });
    expect(records(dir)).toHaveLength(2);
    await other.close();
    await service.close();
    expect(records(dir)).toEqual([]);
    const next = await createSandbox(configFor(dir, 200_000), undefined, { lockUidRange: true });
    await next.close();
  });
});
