// Session create/delete latency, and upload throughput against a plain disk write.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createSession, deleteSession, type BenchClient } from './http.js';
import type { BenchContext } from './context.js';
import { now, ratio, round, summarize, type Summary } from './stats.js';

export interface SessionsResult {
  create: Summary;
  delete: Summary;
}

/** Create then delete, one session at a time (MAX_SESSIONS stays at its default). */
export async function measureSessions(client: BenchClient, count: number): Promise<SessionsResult> {
  const created: number[] = [];
  const deleted: number[] = [];
  for (let i = -5; i < count; i++) {
    const id = `bench-s-${i + 5}`;
    const t0 = now();
    await createSession(client, id);
    const t1 = now();
    await deleteSession(client, id);
    const t2 = now();
    if (i < 0) continue; // warm-up
    created.push(t1 - t0);
    deleted.push(t2 - t1);
  }
  return { create: summarize(created), delete: summarize(deleted) };
}

export interface UploadResult {
  bytes: number;
  reps: number;
  /** Megabytes (10^6 bytes) per second, median over the repetitions. */
  service_mb_per_s: number;
  disk_mb_per_s: number;
  ratio: number;
  service_ms: Summary;
  disk_ms: Summary;
}

export async function measureUpload(ctx: Pick<BenchContext, 'client' | 'sizes' | 'scratchDir'>): Promise<UploadResult> {
  const { client, sizes } = ctx;
  const session = 'bench-upload';
  await createSession(client, session);
  const data = randomBytes(sizes.uploadBytes);
  const service: number[] = [];
  const disk: number[] = [];
  const upload = async () => {
    const t0 = now();
    const res = await client.upload(`/v1/sessions/${session}/files`, 'blob.txt', data);
    if (res.status !== 201) throw new Error(`upload: ${res.status} ${res.text}`);
    return now() - t0;
  };
  const write = async (i: number) => {
    const t0 = now();
    const fh = await fs.open(path.join(ctx.scratchDir, `disk-${i}.bin`), 'w', 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return now() - t0;
  };
  await upload();
  await write(-1);
  for (let i = 0; i < sizes.uploadReps; i++) {
    service.push(await upload());
    disk.push(await write(i));
  }
  await deleteSession(client, session);
  const s = summarize(service);
  const d = summarize(disk);
  const mbps = (ms: number) => round(sizes.uploadBytes / 1e6 / (ms / 1000), 1);
  return {
    bytes: sizes.uploadBytes, reps: sizes.uploadReps,
    service_mb_per_s: mbps(s.p50), disk_mb_per_s: mbps(d.p50), ratio: ratio(mbps(s.p50), mbps(d.p50)),
    service_ms: s, disk_ms: d,
  };
}
