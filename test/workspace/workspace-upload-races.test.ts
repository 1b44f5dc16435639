// commitStagedFiles against a sandbox that changes the workspace between two of its steps. Each
// test does, at one exact step (a spy on the fs call about to run), what sandboxed code can do at
// any moment; the real call then meets the real errno. Each must end in a 4xx error, never a
// raw file-system error (a 500), and keep nothing of the request.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PathConflictError } from '../../src/errors.js';
import { InvalidPathError, commitStagedFiles, stageFile } from '../../src/workspace/workspace-fs.js';
import { listDir, rejectionOf, useFixture } from './workspace-fixture.js';

const fx = useFixture();
const at = (rel: string): string => path.join(fx.ws, rel);
const isTemp = (p: unknown): boolean => String(p).includes('.bubble-upload-');

async function staged(...contents: string[]): Promise<string[]> {
  const dir = path.join(fx.base, 'staging');
  fs.mkdirSync(dir, { recursive: true });
  const out: string[] = [];
  for (const c of contents) out.push((await stageFile(dir, Buffer.from(c), 1000)).path);
  return out;
}

/** The 409 of a commit the sandbox got in the way of, naming the workspace path and no host path. */
async function conflict(p: Promise<unknown>, relPath: string): Promise<void> {
  const err = await rejectionOf(p);
  expect(err).toBeInstanceOf(PathConflictError);
  expect([(err as PathConflictError).statusCode, (err as PathConflictError).code]).toEqual([409, 'PATH_CONFLICT']);
  expect(err.message).toContain(`'${relPath}'`);
  expect(err.message).not.toContain(fx.base);
}

/** Runs `sandbox` once, just before the first call of fs.promises[method] whose first or second argument matches. */
function before(method: 'mkdir' | 'rename' | 'open', matches: (args: unknown[]) => boolean, sandbox: () => void): void {
  const real = fs.promises[method].bind(fs.promises) as (...args: unknown[]) => Promise<unknown>;
  let done = false;
  vi.spyOn(fs.promises, method).mockImplementation(((...args: unknown[]) => {
    if (!done && matches(args)) {
      done = true;
      sandbox();
    }
    return real(...args);
  }) as never);
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('commitStagedFiles while the sandbox changes the workspace', () => {
  it('ENOENT from mkdir: the parent directory was removed after it was opened → 409', async () => {
    fs.mkdirSync(at('d'));
    const [s] = await staged('x');
    before('mkdir', (a) => String(a[0]).endsWith('/sub'), () => fs.rmdirSync(at('d')));
    await conflict(commitStagedFiles(fx.ws, [{ stagedPath: s as string, relPath: 'd/sub/x.txt' }]), 'd/sub/x.txt');
    expect(listDir(fx.ws)).toEqual([]);
  });

  it('ENOENT placing the file: its directory was removed after it was opened → 409', async () => {
    fs.mkdirSync(at('d'));
    const [s] = await staged('x');
    before('rename', (a) => isTemp(a[1]), () => fs.rmdirSync(at('d')));
    await conflict(commitStagedFiles(fx.ws, [{ stagedPath: s as string, relPath: 'd/x.txt' }]), 'd/x.txt');
    expect(listDir(fx.ws)).toEqual([]);
  });

  it('ENOENT at the final rename: the sandbox removed the temporary file → 409, nothing kept', async () => {
    const [a, b] = await staged('a', 'b');
    before('rename', (args) => isTemp(args[0]) && String(args[1]).endsWith('/a.txt'), () => {
      for (const n of fs.readdirSync(fx.ws)) if (n.startsWith('.bubble-upload-')) fs.unlinkSync(at(n));
    });
    await conflict(commitStagedFiles(fx.ws, [{ stagedPath: a as string, relPath: 'a.txt' }, { stagedPath: b as string, relPath: 'b.txt' }]), 'a.txt');
    expect(listDir(fx.ws)).toEqual([]);
  });

  it('ENOTDIR at the final rename: the temporary file became a directory over an existing file → 409', async () => {
    fs.writeFileSync(at('x.txt'), 'old');
    const [s] = await staged('new');
    before('rename', (args) => isTemp(args[0]) && String(args[1]).endsWith('/x.txt'), () => {
      const temp = fs.readdirSync(fx.ws).find((n) => n.startsWith('.bubble-upload-')) as string;
      fs.unlinkSync(at(temp));
      fs.mkdirSync(at(temp));
      fs.writeFileSync(at(`${temp}/in`), 'sandbox');
    });
    await conflict(commitStagedFiles(fx.ws, [{ stagedPath: s as string, relPath: 'x.txt' }]), 'x.txt');
    expect(fs.readFileSync(at('x.txt'), 'utf8')).toBe('old');
  });

  it('a directory made for the request is taken back when a later file fails; a staged file is never left in the workspace', async () => {
    fs.mkdirSync(at('b.txt'));
    const [a, b] = await staged('a', 'b');
    const err = await rejectionOf(commitStagedFiles(fx.ws, [{ stagedPath: a as string, relPath: 'new/a.txt' }, { stagedPath: b as string, relPath: 'b.txt' }]));
    expect(err).toBeInstanceOf(InvalidPathError);
    expect(listDir(fx.ws)).toEqual(['b.txt']);
  });
});
