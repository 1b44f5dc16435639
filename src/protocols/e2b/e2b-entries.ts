// Workspace entries in envd's proto3 JSON (filesystem.EntryInfo): E2B paths, enum names, int64
// sizes as strings, RFC 3339 times.
import type { EntryInfo } from '../../workspace/workspace-entries.js';
import { e2bPathOf } from './e2b-paths.js';

const FILE_TYPES: Record<EntryInfo['kind'], string> = {
  file: 'FILE_TYPE_FILE', directory: 'FILE_TYPE_DIRECTORY', symlink: 'FILE_TYPE_SYMLINK', other: 'FILE_TYPE_UNSPECIFIED',
};

function permissions(mode: number, kind: EntryInfo['kind']): string {
  const type = kind === 'directory' ? 'd' : kind === 'symlink' ? 'L' : '-';
  let bits = '';
  for (let shift = 6; shift >= 0; shift -= 3) {
    const b = (mode >> shift) & 7;
    bits += `${b & 4 ? 'r' : '-'}${b & 2 ? 'w' : '-'}${b & 1 ? 'x' : '-'}`;
  }
  return type + bits;
}

export function entryJson(e: EntryInfo) {
  return {
    name: e.name === '' ? 'user' : e.name,
    type: FILE_TYPES[e.kind],
    path: e2bPathOf(e.path),
    size: String(e.size),
    mode: e.mode & 0o7777,
    permissions: permissions(e.mode, e.kind),
    owner: 'user',
    group: 'user',
    modifiedTime: e.mtime.toISOString(),
    ...(e.linkTarget !== null ? { symlinkTarget: e.linkTarget } : {}),
  };
}
