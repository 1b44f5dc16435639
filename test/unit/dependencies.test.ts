// Every runtime dependency package.json declares is used by the code that ships (src/, bin/,
// scripts/): a declared and unused one is weight and attack surface for nothing.
import fs from 'node:fs';
import path from 'node:path';
import { expect, test } from 'vitest';
import { PROJECT_ROOT } from '../helpers/host-env.js';

function sourcesUnder(dir: string): string[] {
  return fs.readdirSync(path.join(PROJECT_ROOT, dir), { recursive: true }).map(String)
    .filter((f) => /\.(ts|js|mjs)$/.test(f)).map((f) => fs.readFileSync(path.join(PROJECT_ROOT, dir, f), 'utf8'));
}

test('each runtime dependency is imported by the shipped code', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const code = [...sourcesUnder('src'), ...sourcesUnder('bin'), ...sourcesUnder('scripts')].join('\n');
  const unused = Object.keys(pkg.dependencies).filter((dep) => !new RegExp(`(from |import\\()['"]${dep.replace(/[/.]/g, '\\$&')}(/[^'"]*)?['"]`).test(code));
  expect(unused).toEqual([]);
});
