import { describe, expect, test } from 'vitest';
import { OutputCapture, omissionMarker } from '../../src/sandbox/output-capture.js';

describe('OutputCapture', () => {
  test('short output is kept whole', () => {
    const c = new OutputCapture(100);
    c.push(Buffer.from('hello '));
    c.push(Buffer.from('world'));
    expect(c.finish()).toEqual({ text: 'hello world', truncated: false, totalChars: 11 });
  });

  test('long output keeps head and tail with the omission marker', () => {
    const c = new OutputCapture(10);
    for (const ch of 'abcdefghijklmnopqrstuvwxyz') c.push(Buffer.from(ch));
    const r = c.finish();
    expect(r.truncated).toBe(true);
    expect(r.text).toBe(`abcde${omissionMarker(16)}vwxyz`);
  });

  test('multi-byte characters split across chunks are decoded, invalid bytes replaced', () => {
    const c = new OutputCapture(100);
    const euro = Buffer.from('€');
    c.push(euro.subarray(0, 1));
    c.push(euro.subarray(1));
    c.push(Buffer.from([0xff]));
    expect(c.finish().text).toBe('€\uFFFD');
  });

  test('live text equals the captured text, head first then marker and tail', () => {
    const live: string[] = [];
    const c = new OutputCapture(6, (t) => live.push(t));
    c.push(Buffer.from('0123456789'));
    const r = c.finish();
    expect(live.join('')).toBe(r.text);
    expect(live[0]).toBe('012');
  });
});
