# The host-side helper behind change tracking (change-tracker.ts), run as root by the service:
# `python3 -I -S -c <loader>`, which reads this file's text from fd 3 (so `ps` shows one short
# line). The build copies it to dist beside the compiled TypeScript.
#
# One fanotify group (FAN_REPORT_DFID_NAME_TARGET) holds a FAN_MARK_FILESYSTEM mark per watched
# workspace, each of which is a loop-mounted file system of its own. An event names the
# directory (as a file handle) and the entry that changed, and the inode it concerns; the helper
# reads them as they come and keeps, per workspace, the set of (directory, name) pairs and the
# set of inode numbers of the files touched (a hard link made and removed again names only
# itself, yet changes its other names' inode), so the kernel's bounded queue stays short. A drain turns the directory handles into paths below the workspace root and
# hands the pairs over. Whatever cannot be told exactly (queue overflow, too many pairs, a path
# outside the root, a file system that is no longer the watched one) answers "rescan".
#
# It only reads events and resolves directory handles; it never opens, stats or follows
# anything the sandbox can name. The service stats the names itself, without following links.
#
# Protocol: one JSON object per line each way, answers in request order.
#   {"op":"watch","key":K,"path":P}    -> {"ok":true} | {"ok":false,"error":E}
#   {"op":"drain","key":K,"path":P}    -> {"ok":true,"rescan":true}
#                                       | {"ok":true,"rescan":false,"dirs":[[dirB64,[nameB64,...]],...],"inos":[n,...]}
#   {"op":"unwatch","key":K,"path":P}  -> {"ok":true}
# First line out: {"ready":true} or {"ready":false,"error":E} (then it exits).
# Between answers, unasked: {"dirty":K} once a watched workspace has collected something since its
# last drain (once per drain), as soon as the helper has read the event. The service skips the
# drain before an execution while it has heard nothing of the kind since the last one.

import base64
import ctypes
import errno
import json
import os
import select
import struct
import sys

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_REPORT_FID = 0x200
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_TARGET_FID = 0x1000
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_FILESYSTEM = 0x100
FAN_MODIFY = 0x2
FAN_ATTRIB = 0x4
FAN_CLOSE_WRITE = 0x8
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_Q_OVERFLOW = 0x4000
FAN_ONDIR = 0x40000000
FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
# ext4's file handles: 32-bit inode number, then generation.
FILEID_INO32_GEN = 1
O_PATH = 0o10000000
# Writes through a shared mapping raise no MODIFY; CLOSE_WRITE comes once the mapping is released
# (at the latest when the execution's processes end).
MASK = (FAN_MODIFY | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_MOVED_FROM | FAN_MOVED_TO
        | FAN_CREATE | FAN_DELETE | FAN_ONDIR)
META = struct.Struct('=IBBHQii')
# Per workspace, and for all of them together: past these a workspace is rescanned instead.
MAX_PAIRS = int(sys.argv[1])
MAX_PAIRS_TOTAL = 4 * MAX_PAIRS
# Paths the API addresses are at most this long (a scan skips longer ones, and so do we).
MAX_PATH = int(sys.argv[2])
# An answer above this (base64 included) says "rescan" instead.
MAX_ANSWER = 4 << 20
total = [0]

libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]


def oserror():
    e = ctypes.get_errno()
    return OSError(e, os.strerror(e))


def say(obj):
    data = (json.dumps(obj, separators=(',', ':')) + '\n').encode()
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


# Watches that collected something since they were last told of (sent {"dirty":K}) or drained.
newly_dirty = set()


class Watch:
    def __init__(self, fsid, key):
        self.fsid = fsid
        self.key = key
        self.pairs = {}
        self.inos = set()
        self.count = 0
        self.rescan = False
        self.told = False

    def counted(self):
        self.count += 1
        total[0] += 1
        newly_dirty.add(self)
        if self.count > MAX_PAIRS or total[0] > MAX_PAIRS_TOTAL:
            self.overflow()

    def add_ino(self, ino):
        if self.rescan or ino in self.inos:
            return
        self.inos.add(ino)
        self.counted()

    def add(self, handle, name):
        if self.rescan:
            return
        names = self.pairs.setdefault(handle, set())
        if name not in names:
            names.add(name)
            self.counted()

    def take(self):
        taken = (self.pairs, self.inos, self.rescan)
        self.pairs, self.inos, self.rescan = {}, set(), False
        total[0] -= self.count
        self.count = 0
        self.told = False
        return taken

    def overflow(self):
        self.take()
        self.rescan = True
        newly_dirty.add(self)


def tell_dirty():
    # After the answer to a drain that took them, nothing is left to tell for those watches.
    for w in newly_dirty:
        if not w.told and (w.count > 0 or w.rescan) and watches.get(w.key) is w:
            w.told = True
            say({'dirty': w.key})
    newly_dirty.clear()


fan = libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME
                         | FAN_REPORT_TARGET_FID, os.O_RDONLY)
if fan < 0:
    say({'ready': False, 'error': 'fanotify_init: ' + os.strerror(ctypes.get_errno())})
    sys.exit(1)
watches = {}
by_fsid = {}


def read_events():
    while True:
        try:
            buf = os.read(fan, 1 << 18)
        except BlockingIOError:
            return
        off = 0
        while off + META.size <= len(buf):
            ev_len, _vers, _res, meta_len, mask, fd, _pid = META.unpack_from(buf, off)
            if ev_len < META.size:
                break
            if fd >= 0:
                os.close(fd)
            if mask & FAN_Q_OVERFLOW:
                for w in watches.values():
                    w.overflow()
            info, end = off + meta_len, off + ev_len
            while info + 4 <= end:
                kind, _pad, length = struct.unpack_from('=BBH', buf, info)
                if length == 0:
                    break
                lo, hi = struct.unpack_from('=II', buf, info + 4)
                w = by_fsid.get(lo | (hi << 32))
                if w is not None and kind == FAN_EVENT_INFO_TYPE_DFID_NAME:
                    size = struct.unpack_from('=I', buf, info + 12)[0]
                    handle = bytes(buf[info + 12:info + 20 + size])
                    name = bytes(buf[info + 20 + size:info + length]).split(b'\0', 1)[0]
                    w.add(handle, name)
                elif w is not None and kind == FAN_EVENT_INFO_TYPE_FID and not mask & FAN_ONDIR:
                    size, htype = struct.unpack_from('=Ii', buf, info + 12)
                    if htype == FILEID_INO32_GEN and size == 8:
                        w.add_ino(struct.unpack_from('=I', buf, info + 20)[0])
                    else:
                        w.overflow()  # an inode we cannot name: let a scan decide
                info += length
            off += ev_len


def open_dir(path):
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def fd_path(fd):
    return os.readlink(b'/proc/self/fd/%d' % fd)


def watch(key, path):
    fd = open_dir(path)
    try:
        if os.fstat(fd).st_dev == os.stat('..', dir_fd=fd, follow_symlinks=False).st_dev:
            return {'ok': False, 'error': 'not the root of a file system of its own'}
        fsid = os.fstatvfs(fd).f_fsid
        old = watches.get(key)
        if old is not None and old.fsid == fsid:
            return {'ok': True}
        if fsid in by_fsid:
            return {'ok': False, 'error': 'file system already watched for another workspace'}
        if libc.fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, MASK, fd, None) != 0:
            raise oserror()
    finally:
        os.close(fd)
    forget(key)
    w = Watch(fsid, key)
    watches[key] = w
    by_fsid[fsid] = w
    return {'ok': True}


def forget(key):
    w = watches.pop(key, None)
    if w is not None:
        w.take()
        if by_fsid.get(w.fsid) is w:
            del by_fsid[w.fsid]
    return w


def unwatch(key, path):
    w = forget(key)
    if w is None:
        return {'ok': True}
    try:
        fd = open_dir(path)
    except OSError:
        return {'ok': True}
    try:
        if os.fstatvfs(fd).f_fsid == w.fsid:
            libc.fanotify_mark(fan, FAN_MARK_REMOVE | FAN_MARK_FILESYSTEM, MASK, fd, None)
    finally:
        os.close(fd)
    return {'ok': True}


RESCAN = {'ok': True, 'rescan': True}


def drain(key, path):
    read_events()
    w = watches.get(key)
    if w is None:
        return RESCAN
    pairs, inos, rescan = w.take()
    if rescan:
        return RESCAN
    if not pairs:
        return {'ok': True, 'rescan': False, 'dirs': [], 'inos': sorted(inos)}
    mount = open_dir(path)
    try:
        if os.fstatvfs(mount).f_fsid != w.fsid:
            return RESCAN
        root = fd_path(mount)
        dirs = []
        size = 0
        for handle, names in pairs.items():
            try:
                fd = libc.open_by_handle_at(mount, handle, O_PATH | os.O_CLOEXEC)
                if fd < 0:
                    raise oserror()
            except OSError as e:
                # A directory removed since: its removal is an event of its parent's.
                if e.errno in (errno.ESTALE, errno.ENOENT):
                    continue
                raise
            try:
                if os.fstat(fd).st_nlink == 0:
                    continue
                where = fd_path(fd)
                # Removed between the two looks: the path would end in " (deleted)".
                if os.fstat(fd).st_nlink == 0:
                    continue
            finally:
                os.close(fd)
            if where == root:
                rel = b''
            elif where.startswith(root + b'/'):
                rel = where[len(root) + 1:]
            else:
                return RESCAN
            wanted = [n for n in names if n not in (b'', b'.', b'..') and len(rel) + 1 + len(n) <= MAX_PATH]
            if wanted:
                size += (len(rel) + sum(len(n) + 8 for n in wanted)) * 4 // 3 + 16
                if size > MAX_ANSWER:
                    return RESCAN
                dirs.append([base64.b64encode(rel).decode(), [base64.b64encode(n).decode() for n in wanted]])
        return {'ok': True, 'rescan': False, 'dirs': dirs, 'inos': sorted(inos)}
    finally:
        os.close(mount)


OPS = {'watch': watch, 'drain': drain, 'unwatch': unwatch}


def answer(line):
    try:
        req = json.loads(line)
        return OPS[req['op']](req['key'], req['path'])
    except OSError as e:
        return {'ok': False, 'error': '%s: %s' % (errno.errorcode.get(e.errno, e.errno), e.strerror)}
    except Exception as e:
        return {'ok': False, 'error': type(e).__name__}


say({'ready': True})
poller = select.poll()
poller.register(0, select.POLLIN)
poller.register(fan, select.POLLIN)
pending = b''
while True:
    for fd, _ev in poller.poll():
        if fd == fan:
            read_events()
            tell_dirty()
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:
            sys.exit(0)
        pending += chunk
        while b'\n' in pending:
            line, pending = pending.split(b'\n', 1)
            say(answer(line))
            tell_dirty()
