// Execution environments: environments/<name>/pyproject.toml + environments/<name>/.venv.
// Discovery never throws for a broken environment: it reports why it cannot be used, without
// host paths.
import fs from 'node:fs/promises';
import path from 'node:path';
import { untraversableAncestor } from './traversable.js';

export const ENVIRONMENT_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export interface Environment {
  name: string;
  description: string;
  dependencies: string[];
  /** Host directory of the venv; null when unusable. */
  venvDir: string | null;
  usable: boolean;
  /** Why it cannot be used (no host paths). */
  reason: string | null;
}

/** Minimal reader for the [project] table of a pyproject.toml: description and dependencies. */
export function parseProjectTable(toml: string): { name: string | null; description: string; dependencies: string[] } {
  const lines = toml.split('\n');
  let inProject = false;
  let name: string | null = null;
  let description = '';
  const dependencies: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (line.startsWith('[')) {
      inProject = line === '[project]';
      continue;
    }
    if (!inProject) continue;
    const kv = /^([A-Za-z0-9_-]+)\s*=\s*(.*)$/.exec(line);
    if (!kv) continue;
    const [, key, rawValue = ''] = kv;
    if (key === 'name') name = unquote(rawValue);
    else if (key === 'description') description = unquote(rawValue);
    else if (key === 'dependencies') {
      let value = rawValue;
      while (!value.includes(']') && i + 1 < lines.length) value += ` ${(lines[++i] ?? '').trim()}`;
      for (const m of value.matchAll(/"([^"]*)"|'([^']*)'/g)) dependencies.push(m[1] ?? m[2] ?? '');
    }
  }
  return { name, description, dependencies: dependencies.filter((d) => d.length > 0) };
}

function unquote(v: string): string {
  const m = /^"((?:[^"\\]|\\.)*)"|^'([^']*)'/.exec(v.trim());
  return m ? (m[1] ?? m[2] ?? '').replace(/\\"/g, '"') : v.trim();
}

async function inspect(dir: string, name: string): Promise<Environment> {
  const base = { name, description: '', dependencies: [] as string[], venvDir: null, usable: false };
  let toml: string;
  try {
    toml = await fs.readFile(path.join(dir, 'pyproject.toml'), 'utf8');
  } catch {
    return { ...base, reason: 'pyproject.toml is missing' };
  }
  const project = parseProjectTable(toml);
  const described = { ...base, description: project.description, dependencies: project.dependencies };
  const venvDir = path.join(dir, '.venv');
  try {
    const python = await fs.realpath(path.join(venvDir, 'bin', 'python'));
    // The interpreter must live in a directory the sandbox mounts (/usr), or it will not start inside.
    if (!python.startsWith('/usr/')) {
      return { ...described, reason: 'its .venv was built from an interpreter outside /usr; rebuild it with /usr/bin/python3 (npm run setup)' };
    }
    await fs.access(python, fs.constants.X_OK);
  } catch {
    return { ...described, reason: 'its .venv is not built yet (run npm run setup)' };
  }
  if (untraversableAncestor(venvDir) !== null) {
    return { ...described, reason: 'a directory above its .venv is not traversable by the sandbox user (chmod o+x it; ./setup.sh does)' };
  }
  return { ...described, venvDir, usable: true, reason: null };
}

/** Every environment directory, sorted by name, usable or not. */
export async function discoverEnvironments(environmentsDir: string): Promise<Environment[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(environmentsDir, { withFileTypes: true });
  } catch {
    return [];
  }
  const names = entries.filter((e) => e.isDirectory() && ENVIRONMENT_NAME.test(e.name)).map((e) => e.name).sort();
  return Promise.all(names.map((n) => inspect(path.join(environmentsDir, n), n)));
}

export async function findEnvironment(environmentsDir: string, name: string): Promise<Environment | null> {
  if (!ENVIRONMENT_NAME.test(name)) return null;
  try {
    const st = await fs.lstat(path.join(environmentsDir, name));
    if (!st.isDirectory()) return null;
  } catch {
    return null;
  }
  return inspect(path.join(environmentsDir, name), name);
}
