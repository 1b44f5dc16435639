// exactLengthStream and readUpTo on real files that grow and shrink while they are read: the
// stream gives exactly the size decided on or fails, the buffer read never goes past it.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileShrankError, exactLengthStream, readUpTo } from '../../src/workspace/exact-length-read.js';
import { makeTempDir, removeTempDir } from '../helpers/host-env.js';

const CHUNK = 4096;

let dir = '';
let file = '';
beforeEach(() => {
  dir = makeTempDir('bs-exact-');
  file = path.join(dir, 'f.bin');
});
afterEach(() => removeTempDir(dir));

/** Distinct bytes per offset, so a short or shifted read shows. */
function pattern(n: number, seed = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

/** Collects the stream; `onChunk` runs after each chunk arrives (before the next read). */
async function drain(stream: Readable, onChunk: (received: number) => void = () => undefined): Promise<{ data: Buffer; error: unknown }> {
  const chunks: Buffer[] = [];
  let received = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      received += (chunk as Buffer).length;
      onChunk(received);
    }
    return { data: Buffer.concat(chunks), error: null };
  } catch (error) {
    return { data: Buffer.concat(chunks), error };
  }
}

async function openWithSize(): Promise<{ handle: fsp.FileHandle; size: number }> {
  const handle = await fsp.open(file, 'r');
  return { handle, size: (await handle.stat()).size };
}

/** Whether the handle was closed (a read on a closed FileHandle fails with EBADF). */
async function isClosed(handle: fsp.FileHandle): Promise<boolean> {
  return handle.read(Buffer.alloc(1), 0, 1, 0).then(() => false, (err: { code?: string }) => err.code === 'EBADF');
}

describe('exactLengthStream', () => {
  it('gives exactly the decided size when the file grows before and during the read', async () => {
    const original = pattern(10 * CHUNK + 123);
    fs.writeFileSync(file, original);
    const { handle, size } = await openWithSize();
    fs.appendFileSync(file, 'HTTP/1.1 200 OK\r\n\r\ngrown before the first read');
    const { data, error } = await drain(exactLengthStream(handle, size, { chunkBytes: CHUNK }), () => {
      fs.appendFileSync(file, pattern(CHUNK, 1)); // grows by a chunk after every chunk read
    });
    expect(error).toBeNull();
    expect(data.length).toBe(size);
    expect(data.equals(original)).toBe(true);
    expect(await isClosed(handle)).toBe(true);
  });

  it('fails with FileShrankError, after fewer bytes than the size, when the file shrinks during the read', async () => {
    fs.writeFileSync(file, pattern(10 * CHUNK));
    const { handle, size } = await openWithSize();
    const { data, error } = await drain(exactLengthStream(handle, size, { chunkBytes: CHUNK }), (received) => {
      if (received === CHUNK) fs.truncateSync(file, 6 * CHUNK + 5);
    });
    expect(error).toBeInstanceOf(FileShrankError);
    expect((error as FileShrankError).code).toBe('FILE_SHRANK');
    expect((error as FileShrankError).expected).toBe(size);
    expect(data.length).toBe(6 * CHUNK + 5);
    expect(data.length).toBeLessThan(size);
    expect(await isClosed(handle)).toBe(true);
  });

  it('fails before any byte when the file was emptied after the size was taken', async () => {
    fs.writeFileSync(file, pattern(CHUNK));
    const { handle, size } = await openWithSize();
    fs.truncateSync(file, 0);
    const { data, error } = await drain(exactLengthStream(handle, size, { chunkBytes: CHUNK }));
    expect(error).toBeInstanceOf(FileShrankError);
    expect(data.length).toBe(0);
  });

  it('ends at once for an empty file, even one that grew since', async () => {
    fs.writeFileSync(file, '');
    const { handle, size } = await openWithSize();
    fs.writeFileSync(file, 'late bytes');
    const { data, error } = await drain(exactLengthStream(handle, size));
    expect(error).toBeNull();
    expect(size).toBe(0);
    expect(data.length).toBe(0);
    expect(await isClosed(handle)).toBe(true);
  });

  it('closes the handle when the consumer destroys the stream early', async () => {
    fs.writeFileSync(file, pattern(10 * CHUNK));
    const { handle, size } = await openWithSize();
    const stream = exactLengthStream(handle, size, { chunkBytes: CHUNK });
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    await new Promise<void>((resolve) => {
      stream.once('close', () => resolve());
      stream.destroy();
    });
    expect(await isClosed(handle)).toBe(true);
  });
});

describe('readUpTo', () => {
  it('never reads past the size when the file grew', async () => {
    const original = pattern(5 * 65536 + 17);
    fs.writeFileSync(file, original);
    const { handle, size } = await openWithSize();
    fs.appendFileSync(file, pattern(1 << 20, 3));
    try {
      const data = await readUpTo(handle, size);
      expect(data.length).toBe(size);
      expect(data.equals(original)).toBe(true);
    } finally {
      await handle.close();
    }
  });

  it('returns what is there when the file shrank', async () => {
    fs.writeFileSync(file, pattern(5 * 65536));
    const { handle, size } = await openWithSize();
    fs.truncateSync(file, 70_000);
    try {
      const data = await readUpTo(handle, size);
      expect(data.length).toBe(70_000);
      expect(data.equals(pattern(70_000))).toBe(true);
    } finally {
      await handle.close();
    }
  });
});
