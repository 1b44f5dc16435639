// Execution environments: environments/<name>/pyproject.toml + environments/<name>/.venv.
// Discovery never throws for a broken environment: it reports why it cannot be used, without
// host paths.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
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

export interface ProjectFacts {
  name: string | null;
  description: string;
  dependencies: string[];
  /** [tool.bubble-sandbox] debian-packages: what provides the dependencies without a package index. */
  debianPackages: string[];
}

/** A pyproject.toml that is not valid TOML, or whose fields have the wrong type; the message names the file. */
export class PyprojectError extends Error {
  override readonly name = 'PyprojectError';
}

/**
 * What bubble-sandbox uses of a pyproject.toml, read with a TOML parser (smol-toml): the [project]
 * name, description and dependencies, and [tool.bubble-sandbox] debian-packages.
 * scripts/read-pyproject.mjs applies the same rules for scripts/build-environments.sh.
 */
export function parseProjectTable(toml: string, file = 'pyproject.toml'): ProjectFacts {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(toml);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    const why = (err.message.split('\n')[0] ?? '').replace(/^Invalid TOML document: /, '');
    throw new PyprojectError(`${file}: not valid TOML at line ${err.line}, column ${err.column}: ${why}`);
  }
  const project = table(doc, 'project', file);
  const tool = table(table(doc, 'tool', file), 'bubble-sandbox', file, 'tool.bubble-sandbox');
  const name = project.name === undefined ? null : text(project.name, 'project.name', file);
  const description = project.description === undefined ? '' : text(project.description, 'project.description', file);
  return {
    name,
    description,
    dependencies: stringList(project.dependencies, 'project.dependencies', file),
    debianPackages: stringList(tool['debian-packages'], 'tool.bubble-sandbox.debian-packages', file),
  };
}

function table(parent: Record<string, unknown>, key: string, file: string, label = key): Record<string, unknown> {
  const value = parent[key];
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Date) throw new PyprojectError(`${file}: ${label} must be a table`);
  return value as Record<string, unknown>;
}

function text(value: unknown, key: string, file: string): string {
  if (typeof value !== 'string') throw new PyprojectError(`${file}: ${key} must be a string`);
  return value;
}

function stringList(value: unknown, key: string, file: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new PyprojectError(`${file}: ${key} must be a list of strings`);
  return value.map((v: string) => v.trim()).filter((v) => v.length > 0);
}

async function inspect(dir: string, name: string): Promise<Environment> {
  const base = { name, description: '', dependencies: [] as string[], venvDir: null, usable: false };
  let toml: string;
  try {
    toml = await fs.readFile(path.join(dir, 'pyproject.toml'), 'utf8');
  } catch {
    return { ...base, reason: 'pyproject.toml is missing' };
  }
  let project: ProjectFacts;
  try {
    project = parseProjectTable(toml);
  } catch (err) {
    if (err instanceof PyprojectError) return { ...base, reason: err.message };
    throw err;
  }
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
