// The README's examples run as written, top to bottom: the API examples with curl against a fresh
// real service, the command-line examples with the real CLI. Each shell block runs with `set -e`
// and curl fails on any HTTP error, so one broken example fails the test, naming it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { BIN, PROJECT_ROOT, cleanEnv, makeTempDir, removeTempDir } from '../helpers/host-env.js';
import { startServer, useWorkspaceDir } from '../helpers/server-process.js';

const README = fs.readFileSync(path.join(PROJECT_ROOT, 'README.md'), 'utf8');

/** The ```sh blocks of the part of the README between two headings. */
function shellBlocks(from: string, to: string): string[] {
  const start = README.indexOf(from);
  const end = README.indexOf(to, start + 1);
  expect(start, from).toBeGreaterThanOrEqual(0);
  expect(end, to).toBeGreaterThan(start);
  return [...README.slice(start, end).matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
}

function runBlock(block: string, cwd: string, env: Record<string, string>): { status: number | null; out: string } {
  const prelude = [
    'set -euo pipefail',
    // Any HTTP error status fails the example; -sS keeps curl quiet but for errors.
    'curl() { command curl --fail-with-body -sS "$@"; }',
    `bubble-sandbox() { ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"; }`,
  ].join('\n');
  const r = spawnSync('bash', ['-c', `${prelude}\n${block}`], { cwd, env: cleanEnv(env), encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe('README examples', () => {
  const workspace = useWorkspaceDir('bs-readme-');

  test('the quick start and API examples run top to bottom against a fresh service', async () => {
    const server = await startServer({ workspaceDir: workspace.path });
    const blocks = [
      ...shellBlocks('## Quick start', '## API').filter((b) => !b.includes('./setup.sh')),
      ...shellBlocks('## API', '## Inside the sandbox'),
    ];
    expect(blocks.length).toBeGreaterThanOrEqual(8);
    const cwd = makeTempDir('bs-readme-cwd-');
    try {
      for (const block of blocks) {
        const local = block.replaceAll('localhost:8000', `127.0.0.1:${server.port}`);
        const r = runBlock(local, cwd, {});
        expect(r.status, `${block}\n--- output ---\n${r.out}`).toBe(0);
      }
      // The examples did what they say: the summary came back, and the last delete removed the volume.
      expect(fs.readFileSync(path.join(cwd, 'summary.csv'), 'utf8')).toMatch(/^,x,y\n/);
      expect(fs.readFileSync(path.join(cwd, 'copy.csv'), 'utf8')).toBe('x,y\n1,2\n3,4\n');
      expect(fs.existsSync(path.join(workspace.path, 'volumes', 'shared-data'))).toBe(false);
    } finally {
      removeTempDir(cwd);
    }
  }, 240_000);

  test('the command-line examples run from another directory', () => {
    const blocks = shellBlocks('## Command line', '## Settings');
    expect(blocks.length).toBeGreaterThanOrEqual(1);
    const cwd = makeTempDir('bs-readme-cli-');
    try {
      for (const block of blocks) {
        const r = runBlock(block, cwd, {});
        expect(r.status, `${block}\n--- output ---\n${r.out}`).toBe(0);
        expect(r.out).toContain('8\n'); // analyse.py: 3 + 5
        expect(r.out).toContain('42\n');
        expect(r.out).toContain('exit status 3');
      }
    } finally {
      removeTempDir(cwd);
    }
  }, 240_000);
});
