// Execution environments: environments/<name>/pyproject.toml + environments/<name>/.venv (kind
// venv, the host's /usr plus a venv), and imported root filesystems (kind rootfs, under
// <workspace_dir>/rootfs, see rootfs/rootfs-store.ts). A venv environment wins a name both have.
// Discovery never throws for a broken environment: it reports why it cannot be used, without
// host paths.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { listRootfs, resolveRootfs, rootfsLayout, type RootfsRecord } from './rootfs/rootfs-store.js';
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
  kind: 'venv' | 'rootfs';
  /**
   * Host directory whose top-level entries make the sandbox's `/` (an imported rootfs, or a
   * session's writable overlay over one); null: the host's system directories.
   */
  rootDir: string | null;
  /** `/` of the sandbox is the session's writable overlay (its user is root of its own user namespace). */
  writableRoot: boolean;
  /** Whether python3 is there: script, run_code and processes need it. */
  python: boolean;
  /** A writable-root session of a venv environment: its own overlay over the host's /usr, bound read-write at /usr. */
  writableUsrDir?: string;
  /** [tool.bubble-sandbox] preload: modules a warm sandbox imports before it is claimed (warm/warm-pool.ts). */
  preload?: string[];
}

const VENV_DEFAULTS = { kind: 'venv', rootDir: null, writableRoot: false, python: true } as const;

function rootfsEnvironment(record: RootfsRecord, dir: string): Environment {
  return {
    name: record.name, description: `root filesystem${record.os ? `: ${record.os}` : ''}`, dependencies: [],
    venvDir: null, usable: true, reason: null, kind: 'rootfs', rootDir: dir, writableRoot: false, python: record.python,
  };
}

export interface ProjectFacts {
  name: string | null;
  description: string;
  dependencies: string[];
  /** [tool.bubble-sandbox] debian-packages: what provides the dependencies without a package index. */
  debianPackages: string[];
  /** [tool.bubble-sandbox] preload: importable module names a warm sandbox imports ahead. */
  preload: string[];
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
    preload: moduleList(tool.preload, 'tool.bubble-sandbox.preload', file),
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

/** Dotted module names only: they are passed to the sandbox's launcher as one comma-separated argument. */
function moduleList(value: unknown, key: string, file: string): string[] {
  const list = stringList(value, key, file);
  const bad = list.find((m) => !/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(m));
  if (bad !== undefined) throw new PyprojectError(`${file}: ${key} must list module names, not ${JSON.stringify(bad)}`);
  return list;
}

async function inspect(dir: string, name: string): Promise<Environment> {
  const base = { name, description: '', dependencies: [] as string[], venvDir: null, usable: false, ...VENV_DEFAULTS };
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
  const described = { ...base, description: project.description, dependencies: project.dependencies, preload: project.preload };
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

/**
 * Every environment directory, usable or not, and (given the workspace dir) every imported root
 * filesystem, sorted by name.
 */
export async function discoverEnvironments(environmentsDir: string, workspaceDir?: string): Promise<Environment[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(environmentsDir, { withFileTypes: true });
  } catch {
    entries = [];
  }
  const names = entries.filter((e) => e.isDirectory() && ENVIRONMENT_NAME.test(e.name)).map((e) => e.name).sort();
  const venvs = await Promise.all(names.map((n) => inspect(path.join(environmentsDir, n), n)));
  if (workspaceDir === undefined) return venvs;
  const layout = rootfsLayout(workspaceDir);
  const taken = new Set(names);
  const roots = (await listRootfs(layout)).filter((r) => !taken.has(r.name));
  const rootEnvs = (await Promise.all(roots.map(async (r) => {
    const found = await resolveRootfs(layout, r.name);
    return found ? rootfsEnvironment(found.record, found.dir) : null;
  }))).filter((e): e is Environment => e !== null);
  return [...venvs, ...rootEnvs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export async function findEnvironment(environmentsDir: string, name: string, workspaceDir?: string): Promise<Environment | null> {
  if (!ENVIRONMENT_NAME.test(name)) return null;
  const st = await fs.lstat(path.join(environmentsDir, name)).catch(() => null);
  if (st?.isDirectory()) return inspect(path.join(environmentsDir, name), name);
  if (workspaceDir === undefined) return null;
  const found = await resolveRootfs(rootfsLayout(workspaceDir), name);
  return found ? rootfsEnvironment(found.record, found.dir) : null;
}
