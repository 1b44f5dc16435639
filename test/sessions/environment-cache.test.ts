// EnvironmentCache: a lookup is reused; once it is a few seconds old the next call is still
// answered at once (no file system work on its path) and the lookup is read again behind it, so
// the call after that sees a rebuilt or removed environment. A miss is never kept.
import { describe, expect, it } from 'vitest';
import { EnvironmentCache } from '../../src/sessions/environment-cache.js';
import { EnvironmentNotFoundError } from '../../src/errors.js';
import type { Environment } from '../../src/sandbox/environments.js';

const envNamed = (name: string, python = true) => ({ name, python, usable: true, reason: null }) as unknown as Environment;

function setup() {
  let clock = 0;
  const lookups: { name: string; answer: (env: Environment | null) => void }[] = [];
  const find = (_dir: string, name: string) => new Promise<Environment | null>((resolve) => {
    lookups.push({ name, answer: resolve });
  });
  const cache = new EnvironmentCache('/envs', '/ws', () => clock, find);
  return { cache, lookups, advance: (ms: number) => { clock += ms; } };
}

/** Lets pending promise callbacks run. */
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('EnvironmentCache', () => {
  it('looks an environment up once, then reuses the lookup', async () => {
    const { cache, lookups, advance } = setup();
    const first = cache.resolve('bare');
    await tick();
    expect(lookups).toHaveLength(1);
    lookups[0]?.answer(envNamed('bare'));
    expect((await first).name).toBe('bare');
    advance(4000);
    expect((await cache.resolve('bare')).name).toBe('bare');
    expect(lookups).toHaveLength(1);
  });

  it('answers from an old lookup without waiting, and reads it again for the next call', async () => {
    const { cache, lookups, advance } = setup();
    const first = cache.resolve('bare');
    await tick();
    lookups[0]?.answer(envNamed('bare', true));
    await first;
    advance(60_000); // an agent thinking for a minute
    // Answered while the new lookup is still pending (it is never answered in this step).
    const stale = await cache.resolve('bare');
    expect(stale.python).toBe(true);
    expect(lookups).toHaveLength(2);
    // A second call meanwhile starts no second lookup.
    await cache.resolve('bare');
    expect(lookups).toHaveLength(2);
    // The environment was rebuilt without Python: the call after the lookup sees it.
    lookups[1]?.answer(envNamed('bare', false));
    await cache.settled();
    expect((await cache.resolve('bare')).python).toBe(false);
    expect(lookups).toHaveLength(2);
  });

  it('an environment found gone in the background is reported gone on the next call', async () => {
    const { cache, lookups, advance } = setup();
    const first = cache.resolve('rootfs-x');
    await tick();
    lookups[0]?.answer(envNamed('rootfs-x'));
    await first;
    advance(10_000);
    await cache.resolve('rootfs-x');
    lookups[1]?.answer(null);
    await cache.settled();
    const next = cache.resolve('rootfs-x');
    await tick();
    expect(lookups).toHaveLength(3); // a miss is not kept: looked up again
    lookups[2]?.answer(null);
    await expect(next).rejects.toBeInstanceOf(EnvironmentNotFoundError);
  });

  it('never keeps a miss: an environment added a moment ago is found at once', async () => {
    const { cache, lookups } = setup();
    const missing = cache.resolve('new');
    await tick();
    lookups[0]?.answer(null);
    await expect(missing).rejects.toBeInstanceOf(EnvironmentNotFoundError);
    const found = cache.resolve('new');
    await tick();
    expect(lookups).toHaveLength(2);
    lookups[1]?.answer(envNamed('new'));
    expect((await found).name).toBe('new');
  });
});
