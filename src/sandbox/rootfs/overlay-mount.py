# Mounts a session's writable root (run by the service as root on the host, never in a sandbox):
#   overlay(lower = the shared rootfs seen through an idmapped mount, upper + work on the session's
#   root-layer image) at MERGED, nosuid,nodev.
# The shared tree belongs to ROOTFS_UID; the idmapped view shows its files as the session's host
# uid, which is root inside the sandbox's own user namespace, so package managers can change
# anything in `/` (overlayfs copies a file up into the session's upper layer first; the shared
# tree is read-only through the idmapped mount and never written). Python's os module has no
# open_tree/mount_setattr/move_mount, so they are called through ctypes (x86_64 and aarch64 numbers:
# the same on both, from the generic syscall table).
#   overlay-mount.py LOWER UPPER WORK MERGED FROM_ID TO_UID TO_GID
import ctypes
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x1, 0x2, 0x4, 0x100000
MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH = 0x2
CLONE_NEWUSER = 0x10000000


class MountAttr(ctypes.Structure):
    _fields_ = [('attr_set', ctypes.c_uint64), ('attr_clr', ctypes.c_uint64),
                ('propagation', ctypes.c_uint64), ('userns_fd', ctypes.c_uint64)]


def check(ret, what):
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, '%s: %s' % (what, os.strerror(err)))
    return ret


def userns_mapping(from_id, to_uid, to_gid):
    """A user namespace (held by a child that waits) mapping FROM_ID to the session's uid/gid."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(done_w)
        code = 0 if libc.unshare(CLONE_NEWUSER) == 0 else 1
        os.write(ready_w, b'x')
        os.read(done_r, 1)
        os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    os.read(ready_r, 1)
    os.close(ready_r)
    with open('/proc/%d/uid_map' % pid, 'w') as f:
        f.write('%d %d 1\n' % (from_id, to_uid))
    with open('/proc/%d/setgroups' % pid, 'w') as f:
        f.write('deny')
    with open('/proc/%d/gid_map' % pid, 'w') as f:
        f.write('%d %d 1\n' % (from_id, to_gid))
    fd = os.open('/proc/%d/ns/user' % pid, os.O_RDONLY | os.O_CLOEXEC)
    return fd, pid, done_w


def main():
    if len(sys.argv) != 8:
        print('usage: overlay-mount.py LOWER UPPER WORK MERGED FROM_ID TO_UID TO_GID', file=sys.stderr)
        return 2
    lower, upper, work, merged = sys.argv[1:5]
    from_id, to_uid, to_gid = (int(a) for a in sys.argv[5:8])
    for p in (lower, upper, work, merged):
        if not p.startswith('/') or any(c in p for c in ',:\\\n'):
            print('unusable path for an overlay option: %r' % p, file=sys.stderr)
            return 2
    ns_fd, pid, done_w = userns_mapping(from_id, to_uid, to_gid)
    staged = merged + '.lower'
    try:
        tree = check(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, lower.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), 'open_tree')
        attr = MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, ns_fd)
        check(libc.syscall(SYS_MOUNT_SETATTR, tree, b'', AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)), 'mount_setattr')
        # The idmapped view is attached only while the overlay is mounted over it: overlayfs keeps
        # its own private clone of each layer, so the attached one is detached right after.
        os.makedirs(staged, mode=0o700, exist_ok=True)
        check(libc.syscall(SYS_MOVE_MOUNT, tree, b'', AT_FDCWD, staged.encode(), MOVE_MOUNT_F_EMPTY_PATH), 'move_mount')
        try:
            # Layer paths relative to the mount point's directory: the kernel shows them as given
            # in the sandbox's /proc/self/mountinfo, and host paths have no business there.
            base = os.path.dirname(merged)
            os.chdir(base)
            opts = 'lowerdir=%s,upperdir=%s,workdir=%s' % tuple(os.path.relpath(p, base) for p in (staged, upper, work))
            check(libc.mount(b'overlay', merged.encode(), b'overlay', MS_NOSUID | MS_NODEV, opts.encode()), 'mount overlay')
        finally:
            libc.umount2(staged.encode(), MNT_DETACH)
            os.rmdir(staged)
    except OSError as err:
        print(str(err), file=sys.stderr)
        return 1
    finally:
        os.close(done_w)
        os.waitpid(pid, 0)
        os.close(ns_fd)
    return 0


if __name__ == '__main__':
    sys.exit(main())
