import { describe, expect, test } from 'vitest';
import { KernelPool } from '../../../src/sandbox/kernel/kernel-pool.js';

class FakeKernel {
  closed = 0;
  close(): Promise<void> {
    this.closed++;
    return Promise.resolve();
  }
}

describe('KernelPool', () => {
  test('one kernel per session, made once', () => {
    const pool = new KernelPool<FakeKernel>();
    let made = 0;
    const factory = () => {
      made++;
      return new FakeKernel();
    };
    const a = pool.get('a', factory);
    expect(pool.get('a', factory)).toBe(a);
    expect(pool.get('b', factory)).not.toBe(a);
    expect(made).toBe(2);
    expect(pool.size).toBe(2);
  });

  test('stop closes and forgets one session; closeAll closes the rest', async () => {
    const pool = new KernelPool<FakeKernel>();
    const a = pool.get('a', () => new FakeKernel());
    const b = pool.get('b', () => new FakeKernel());
    await pool.stop('a');
    expect(a.closed).toBe(1);
    expect(pool.peek('a')).toBeUndefined();
    await pool.stop('missing');
    await pool.closeAll();
    expect(b.closed).toBe(1);
    expect(a.closed).toBe(1);
    expect(pool.size).toBe(0);
    expect(pool.get('a', () => new FakeKernel())).not.toBe(a);
  });
});
