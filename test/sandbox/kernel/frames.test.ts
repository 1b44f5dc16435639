import { describe, expect, test, vi } from 'vitest';
import { encodeFrame, FrameDecoder, FrameError, MAX_FRAME_BYTES } from '../../../src/sandbox/kernel/frames.js';
import { callTokens, MarkerCut } from '../../../src/sandbox/kernel/marker-cut.js';

describe('frames', () => {
  test('round trip, split at every byte and batched', () => {
    const messages = [{ type: 'ready' }, { type: 'done', id: 7, result: "'€'", error: null }, { type: 'pong' }];
    const wire = Buffer.concat(messages.map(encodeFrame));
    const byByte = new FrameDecoder();
    const out: unknown[] = [];
    for (let i = 0; i < wire.length; i++) out.push(...byByte.push(wire.subarray(i, i + 1)));
    expect(out).toEqual(messages);
    expect(new FrameDecoder().push(wire)).toEqual(messages);
  });

  test('the length is a 4-byte big-endian prefix', () => {
    const f = encodeFrame({ a: 1 });
    expect(f.readUInt32BE(0)).toBe(f.length - 4);
    expect(f.subarray(4).toString()).toBe('{"a":1}');
  });

  test('an oversized or malformed frame is an error', () => {
    const big = Buffer.alloc(4);
    big.writeUInt32BE(1000, 0);
    expect(() => new FrameDecoder(999).push(big)).toThrow(FrameError);
    const bad = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{x}')]);
    expect(() => new FrameDecoder().push(bad)).toThrow(FrameError);
  });
});

describe('MarkerCut', () => {
  const tokens = callTokens('abc');
  const prefix = Buffer.from(tokens.prefix);
  const marker = Buffer.from(tokens.end);

  function cutAll(chunks: (string | Buffer)[], syncs: number[] = []): { out: string; found: boolean; cut: MarkerCut } {
    const parts: Buffer[] = [];
    const cut = new MarkerCut(prefix, (c) => parts.push(Buffer.from(c)), (n) => syncs.push(n));
    for (const c of chunks) cut.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
    return { out: Buffer.concat(parts).toString(), found: cut.found, cut };
  }

  test('passes output through and stops at the marker, dropping what follows', async () => {
    const r = cutAll(['hello ', 'world', Buffer.concat([Buffer.from('!'), marker, Buffer.from('late')]), 'later']);
    expect(r).toMatchObject({ out: 'hello world!', found: true });
    await expect(r.cut.reached).resolves.toBeUndefined();
  });

  test('finds a marker split across chunks at every position', () => {
    const data = Buffer.concat([Buffer.from('abc'), marker, Buffer.from('zzz')]);
    for (let i = 1; i < data.length; i++) {
      expect(cutAll([data.subarray(0, i), data.subarray(i)])).toMatchObject({ out: 'abc', found: true });
    }
  });

  test('another marker, or a partial one, is ordinary output', () => {
    const other = Buffer.from(callTokens('zzz').end);
    const r = cutAll([other, marker.subarray(0, 5), 'x']);
    expect(r.found).toBe(false);
    expect(r.out).toBe(`${other.toString()}${marker.subarray(0, 5).toString()}x`);
  });

  test('only a possible start of the marker is held back, and flush releases it', () => {
    const parts: string[] = [];
    const cut = new MarkerCut(prefix, (c) => parts.push(c.toString()));
    cut.push(Buffer.from('line\n'));
    expect(parts).toEqual(['line\n']);
    cut.push(Buffer.from('tail\x1e\x1f'));
    expect(parts.join('')).toBe('line\ntail');
    cut.flush();
    expect(parts.join('')).toBe('line\ntail\x1e\x1f');
  });

  test('sync tokens are cut out and reported, split anywhere, in order with the text around them', () => {
    const data = Buffer.from(`a${tokens.syncPrefix}1\x1f\x1eb${tokens.syncPrefix}12\x1f\x1ec${tokens.end}z`);
    for (let i = 1; i < data.length; i++) {
      const syncs: number[] = [];
      expect(cutAll([data.subarray(0, i), data.subarray(i)], syncs)).toMatchObject({ out: 'abc', found: true });
      expect(syncs).toEqual([1, 12]);
    }
  });

  test('a prefix without a well-formed payload is ordinary output', () => {
    const junk = `${tokens.prefix}${'x'.repeat(40)}\x1f\x1e`;
    const bad = `${tokens.prefix}s1x\x1f\x1e`;
    const syncs: number[] = [];
    const r = cutAll([junk, `${bad}after`], syncs);
    expect(r.found).toBe(false);
    expect(r.out).toBe(`${junk}${bad}after`);
    expect(syncs).toEqual([]);
  });
});

describe('FrameDecoder against a hostile sender', () => {
  test('an oversized frame is refused from its header, before any body is buffered', () => {
    const d = new FrameDecoder();
    const head = Buffer.alloc(4);
    head.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    expect(() => d.push(head)).toThrow(FrameError);
  });

  test('a frame cut into many one-byte chunks and a header split across chunks decode intact', () => {
    const d = new FrameDecoder();
    const frame = encodeFrame({ type: 'done', result: 'x'.repeat(5000) });
    const out: unknown[] = [];
    for (let i = 0; i < frame.length; i++) out.push(...d.push(frame.subarray(i, i + 1)));
    expect(out).toEqual([{ type: 'done', result: 'x'.repeat(5000) }]);
  });

  test('the body is joined once, not on every chunk (the sender chooses the chunking)', () => {
    const d = new FrameDecoder();
    const frame = encodeFrame({ p: 'a'.repeat(256 * 1024) });
    const concat = vi.spyOn(Buffer, 'concat');
    for (let i = 0; i < frame.length; i += 64) d.push(frame.subarray(i, i + 64));
    expect(concat.mock.calls.length).toBeLessThan(10);
    concat.mockRestore();
  });
});
