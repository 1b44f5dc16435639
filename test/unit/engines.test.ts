// package.json's engines.node says which Node versions run the service and its tooling: every
// version it admits must be one every installed dependency supports, read from package-lock.json.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { expect, test } from 'vitest';
import { PROJECT_ROOT } from '../helpers/host-env.js';

// semver comes with fastify (a dependency); it has no types of its own here.
const semver = createRequire(import.meta.url)('semver') as {
  subset(sub: string, sup: string): boolean;
  minVersion(range: string): { version: string } | null;
  satisfies(version: string, range: string): boolean;
};

interface LockPackage { dev?: boolean; optional?: boolean; engines?: { node?: string } | string[] }

const pkg = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { engines: { node: string } };
const lock = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockPackage> };
const ours = pkg.engines.node;

// Declare ">=22" as their support policy, yet run on Node 20: the whole suite runs on 20.19+ and
// loads them (they are ES modules, required from CommonJS, which is why 20.19 is the floor).
// undici8 (undici 8 under an alias, a dependency of the e2b SDK the E2B tests run) is loaded by
// e2b only on Node >= 22.19; on older versions it uses undici 7, which supports them.
const DECLARED_22_BUT_RUN_ON_20 = new Set(['node_modules/cookie', 'node_modules/content-disposition', 'node_modules/undici8']);

function nodeRanges(filter: (p: LockPackage) => boolean): [string, string][] {
  return Object.entries(lock.packages)
    .filter(([where, p]) => where !== '' && filter(p) && !Array.isArray(p.engines) && typeof p.engines?.node === 'string')
    .map(([where, p]) => [where, (p.engines as { node: string }).node]);
}

test('every Node version engines.node admits is one every production dependency supports', () => {
  const offending = nodeRanges((p) => !p.dev)
    .filter(([where]) => !DECLARED_22_BUT_RUN_ON_20.has(where))
    .filter(([, range]) => !semver.subset(ours, range));
  expect(offending).toEqual([]);
});

test('the lowest versions engines.node admits satisfy every dependency used to build and test', () => {
  const lowest = ours.split('||').map((r) => semver.minVersion(r.trim())?.version ?? r);
  const offending = nodeRanges(() => true)
    .filter(([where]) => !DECLARED_22_BUT_RUN_ON_20.has(where))
    .filter(([, range]) => lowest.some((v) => !semver.satisfies(v, range)));
  expect(offending).toEqual([]);
});

test('engines.node admits no version without require() of ES modules, which dependencies rely on', () => {
  // light-my-request (fastify) requires cookie and @fastify/static requires content-disposition,
  // both ES modules only: Node 20.19 and 22.12 are the first to allow that without a flag (and
  // eslint's visitor keys ask for 22.13 on the 22 line).
  for (const where of DECLARED_22_BUT_RUN_ON_20) expect(lock.packages[where]).toBeDefined();
  for (const version of ['20.11.0', '20.18.3', '21.7.3', '22.11.0']) expect(semver.satisfies(version, ours)).toBe(false);
  for (const version of ['20.19.0', '22.13.0', '24.0.0']) expect(semver.satisfies(version, ours)).toBe(true);
  expect(semver.satisfies(process.versions.node, ours)).toBe(true);
});
