// The shape of the house (shared/docs/style.md): data flows route → session manager → sandbox;
// nothing below src/server knows the HTTP layer, the workspace file system knows no session, and
// the sandbox knows neither. A file that imports upwards fails here, naming the import.
import fs from 'node:fs';
import path from 'node:path';
import { expect, test } from 'vitest';
import { PROJECT_ROOT } from '../helpers/host-env.js';

const SRC = path.join(PROJECT_ROOT, 'src');

/** [file, imported file] for every relative import in src/, both relative to src/. */
function imports(): [string, string][] {
  const out: [string, string][] = [];
  for (const rel of fs.readdirSync(SRC, { recursive: true }).map(String).filter((f) => f.endsWith('.ts'))) {
    const text = fs.readFileSync(path.join(SRC, rel), 'utf8');
    for (const m of text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)) {
      out.push([rel, path.normalize(path.join(path.dirname(rel), m[1] ?? ''))]);
    }
  }
  return out;
}

const room = (file: string) => file.split('/')[0] ?? file;

test('the rooms import only downwards', () => {
  // Which rooms each room may import from (besides itself and the top-level config/errors/version).
  const allowed: Record<string, string[]> = {
    sandbox: [],
    workspace: [],
    cluster: [],
    sessions: ['sandbox', 'workspace'],
    // Protocol adapters (MCP, E2B) sit beside the HTTP layer: over the domain API, and mounted by it.
    protocols: ['sessions', 'sandbox', 'workspace'],
    server: ['protocols', 'sessions', 'sandbox', 'workspace', 'cluster'],
  };
  const shared = new Set(['config.js', 'errors.js', 'version.js']);
  const wrong = imports().filter(([from, to]) => {
    const rules = allowed[room(from)];
    if (rules === undefined) return false; // top-level modules (cli, config) wire rooms together
    if (room(to) === room(from) || shared.has(to)) return false;
    return !rules.includes(room(to));
  });
  expect(wrong.map(([from, to]) => `${from} imports ${to}`)).toEqual([]);
});

test('domain errors live in src/errors.ts, which knows no HTTP framework', () => {
  expect(fs.existsSync(path.join(SRC, 'server', 'errors.ts'))).toBe(false);
  expect(fs.readFileSync(path.join(SRC, 'errors.ts'), 'utf8')).not.toMatch(/from '(fastify|@fastify\/[^']+)'/);
});
