// Session records on disk: atomic writes, and a new session's record readable before its fsyncs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ensureLayout, readAllRecords, sessionDir, storeLayout, writeRecord, type SessionRecord, type StoreLayout } from '../../src/sessions/session-store.js';

let root = '';
let layout: StoreLayout;
const record = (id: string): SessionRecord => ({
  session_id: id, environment: 'bare', created_at: '2026-11-26T00:00:00.000Z', last_activity: '2026-11-26T00:00:00.000Z', volumes: {}, uid_slot: 3, network: { mode: 'none' }, writable_root: false,
});

beforeEach(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-store-'));
  fs.chmodSync(root, 0o711);
  layout = storeLayout(path.join(root, 'data'));
  await ensureLayout(layout);
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe('writeRecord', () => {
  it('a new session\'s record is readable as soon as the write returns, and its fsyncs settle after', async () => {
    fs.mkdirSync(sessionDir(layout, 'new'));
    const { flushed } = await writeRecord(layout, record('new'), { deferFlush: true });
    expect((await readAllRecords(layout)).records).toEqual([record('new')]);
    await flushed;
    expect(fs.readdirSync(sessionDir(layout, 'new'))).toEqual(['meta.json']);
  });

  it('an update replaces the record whole and leaves no temp file', async () => {
    fs.mkdirSync(sessionDir(layout, 'upd'));
    await (await writeRecord(layout, record('upd'), { deferFlush: true })).flushed;
    const later = { ...record('upd'), last_activity: '2026-11-26T01:00:00.000Z' };
    await (await writeRecord(layout, later)).flushed;
    expect((await readAllRecords(layout)).records).toEqual([later]);
    expect(fs.readdirSync(sessionDir(layout, 'upd'))).toEqual(['meta.json']);
  });

  it('a session removed before its fsyncs ran makes them fail with ENOENT, which the caller may ignore', async () => {
    fs.mkdirSync(sessionDir(layout, 'gone'));
    const { flushed } = await writeRecord(layout, record('gone'), { deferFlush: true });
    fs.rmSync(sessionDir(layout, 'gone'), { recursive: true });
    await expect(flushed).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('readAllRecords', () => {
  it('a record written before network policies existed loads as mode none; a stored policy loads as written', async () => {
    const old: Partial<SessionRecord> = record('old');
    delete old.network;
    fs.mkdirSync(sessionDir(layout, 'old'));
    fs.writeFileSync(path.join(sessionDir(layout, 'old'), 'meta.json'), JSON.stringify(old));
    const withPolicy = { ...record('net'), network: { mode: 'allowlist' as const, allow: ['pypi.org'], deny: ['evil.pypi.org'] } };
    fs.mkdirSync(sessionDir(layout, 'net'));
    await (await writeRecord(layout, withPolicy)).flushed;
    const { records, broken } = await readAllRecords(layout);
    expect(broken).toEqual([]);
    expect(records.sort((a, b) => a.session_id.localeCompare(b.session_id))).toEqual([withPolicy, { ...old, network: { mode: 'none' } }]);
  });
});
