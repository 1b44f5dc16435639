// The command line refuses a Node.js release package.json's engines does not admit, with one line
// naming the version found and the range needed, before it does anything else.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, expect, test, vi } from 'vitest';
import { main } from '../../src/cli.js';
import { REQUIRED_NODE, unsupportedNodeReason } from '../../src/node-version.js';
import { PROJECT_ROOT } from '../helpers/host-env.js';

const pkg = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
const TOO_OLD = ['18.19.0', '20.11.1', '20.18.3', '21.7.3', '22.12.0'];
const GOOD = ['20.19.0', '20.20.2', '22.13.0', '22.20.1', '24.1.0'];

afterEach(() => {
  vi.restoreAllMocks();
});

test('the required range is package.json engines.node', () => {
  expect(REQUIRED_NODE).toBe(pkg.engines.node);
});

test.each(TOO_OLD)('Node %s is refused with a reason naming it and the range', (version) => {
  expect(unsupportedNodeReason(version)).toBe(
    `Node.js ${version} is not supported: bubble-sandbox needs ${pkg.engines.node} (package.json engines); install a current LTS release (see the README's Quick start) and run it again`,
  );
});

test.each(GOOD)('Node %s is accepted', (version) => {
  expect(unsupportedNodeReason(version)).toBeNull();
});

test('the command line stops on an unsupported Node with status 2 and one line, before running anything', async () => {
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const stdout = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  expect(await main(['list-environments'], { nodeVersion: '20.18.0' })).toBe(2);
  expect(stdout).not.toHaveBeenCalled();
  expect(stderr.mock.calls.map((c) => String(c[0]))).toEqual([`bubble-sandbox: ${unsupportedNodeReason('20.18.0') ?? ''}\n`]);
  // --version still answers, so an operator can see what is installed.
  expect(await main(['--version'], { nodeVersion: '20.18.0' })).toBe(0);
});

test('setup.sh checks Node with the same range (scripts/check-node.sh agrees with semver on each version)', () => {
  for (const version of [...TOO_OLD, ...GOOD, '12.22.9', '23.0.0']) {
    const r = spawnSync('bash', [path.join(PROJECT_ROOT, 'scripts', 'check-node.sh'), version], { cwd: PROJECT_ROOT, encoding: 'utf8' });
    expect({ version, ok: r.status === 0 }).toEqual({ version, ok: unsupportedNodeReason(version) === null });
    if (r.status !== 0) expect(r.stderr).toContain(pkg.engines.node);
  }
});
