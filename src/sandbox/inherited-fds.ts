// bwrap does not close descriptors it inherits, and Node's spawn passes on every descriptor
// that lacks FD_CLOEXEC. Node and libuv open everything close-on-exec, so anything without the
// flag was inherited from whoever started us (a shell, a supervisor) and must not reach a
// sandbox. Closing them once, before the first spawn, keeps only 0, 1 and 2 for children.
import fs from 'node:fs';

const O_CLOEXEC = 0o2000000;
let done = false;

export function closeInheritedDescriptors(): number[] {
  if (done) return [];
  done = true;
  const keep = new Set([0, 1, 2]);
  const ipc = Number(process.env.NODE_CHANNEL_FD);
  if (Number.isInteger(ipc)) keep.add(ipc);
  const closed: number[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc/self/fd');
  } catch {
    return closed;
  }
  for (const entry of entries) {
    const fd = Number(entry);
    if (!Number.isInteger(fd) || keep.has(fd)) continue;
    let info: string;
    try {
      info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // the directory handle used by readdir itself, already gone
    }
    const flags = /^flags:\s+([0-7]+)/m.exec(info)?.[1];
    if (flags === undefined || (parseInt(flags, 8) & O_CLOEXEC) !== 0) continue;
    try {
      fs.closeSync(fd);
      closed.push(fd);
    } catch {
      // already closed
    }
  }
  return closed;
}
