// OutputOrder alone: displays and text of two streams put back in the order the driver produced
// them, whichever pipe is read first, and what happens when a display or a token never comes.
import { describe, expect, it } from 'vitest';
import { OutputOrder } from '../../../src/sandbox/kernel/output-order.js';

function recorder() {
  const seen: string[] = [];
  const order = new OutputOrder<string>({
    stdout: (c) => seen.push(`out:${c.toString()}`),
    stderr: (c) => seen.push(`err:${c.toString()}`),
    display: (d) => seen.push(`display:${d}`),
  });
  return { seen, order };
}
const both = { stdout: true, stderr: true };

describe('OutputOrder', () => {
  it('text after a token waits for its display, a display waits for both streams to reach its token', () => {
    const { seen, order } = recorder();
    order.data('stdout', Buffer.from('a'));
    order.sync('stdout', 1);
    order.data('stdout', Buffer.from('b')); // after display 1: held
    expect(seen).toEqual(['out:a']);
    order.display(1, 'one', both); // stderr has not reached token 1 yet
    expect(seen).toEqual(['out:a']);
    order.data('stderr', Buffer.from('e0'));
    order.sync('stderr', 1);
    expect(seen).toEqual(['out:a', 'err:e0', 'display:one', 'out:b']);
  });

  it('a display that arrives first waits; a stream the driver could not mark is not waited for', () => {
    const { seen, order } = recorder();
    order.display(1, 'one', { stdout: true, stderr: false });
    order.sync('stdout', 1);
    order.data('stdout', Buffer.from('x'));
    expect(seen).toEqual(['display:one', 'out:x']);
  });

  it('finish() releases a display whose tokens never came and text held behind a missing display, in order', () => {
    const { seen, order } = recorder();
    order.sync('stdout', 1);
    order.data('stdout', Buffer.from('after-1'));
    order.sync('stdout', 2);
    order.data('stdout', Buffer.from('after-2'));
    order.display(2, 'two', both); // display 1 was dropped: never comes
    expect(seen).toEqual([]);
    order.finish();
    expect(seen).toEqual(['out:after-1', 'display:two', 'out:after-2']);
  });

  it('gives up the order rather than hold text without bound (a forged token)', () => {
    const { seen, order } = recorder();
    order.sync('stdout', 1_000_000);
    const big = Buffer.alloc(3 * 1024 * 1024, 'x');
    order.data('stdout', big);
    expect(seen).toEqual([]);
    order.data('stdout', big);
    expect(seen.length).toBe(2);
    order.display(5, 'late', both);
    expect(seen[2]).toBe('display:late');
  });
});
