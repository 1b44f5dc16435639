# Unpacks a root filesystem archive read from stdin (an uncompressed, gzip or xz tar stream; zstd
# is decompressed by the `zstd` binary in front of it) into TARGET. It runs inside a sandbox as an
# unprivileged host uid that can write only the staging directory, and is hardened on its own too,
# because this is the security boundary of an import (written by hand, not tarfile's extractall:
# the host's Python may lack extraction filters, and the rules here are stricter than 'data'):
#   - a member with an absolute name or a `..` component refuses the whole archive;
#   - every parent of a member is walked one component at a time with O_NOFOLLOW relative to the
#     target: a member that would be written through a symlink refuses the archive;
#   - a hard link must name a regular file already unpacked inside the target;
#   - device nodes and FIFOs are skipped (real `docker export` archives carry dev/console);
#   - setuid, setgid bits are stripped; owners are not restored (all files belong to us).
# Exit codes: 0 done (a summary line on stdout), 3 refused or unreadable (one line on stderr).
import os
import stat
import subprocess
import sys
import tarfile

NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    pass


def components(name):
    if name.startswith('/'):
        raise Refused('absolute member name: %r' % name[:200])
    parts = [p for p in name.split('/') if p not in ('', '.')]
    if '..' in parts:
        raise Refused('member name with "..": %r' % name[:200])
    return parts


def open_parent(root_fd, parts):
    """The directory that holds parts[-1], created as needed; never through a symlink."""
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            except (NotADirectoryError, OSError) as err:
                raise Refused('member written through a link or a file: %r (%s)' % ('/'.join(parts)[:200], err.strerror))
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def clear(parent_fd, name):
    """Remove what a later member replaces (not a directory)."""
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise Refused('member replaces a directory: %r' % name[:200])
    os.unlink(name, dir_fd=parent_fd)


def safe_mode(mode, is_dir):
    keep = 0o1777 if is_dir else 0o777
    return mode & keep


def write_file(tar, member, parent_fd, name):
    clear(parent_fd, name)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent_fd)
    with os.fdopen(fd, 'wb') as out:
        src = tar.extractfile(member)
        if src is not None:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.fchmod(out.fileno(), safe_mode(member.mode, False))
        os.utime(out.fileno(), (member.mtime, member.mtime))


def link_file(root_fd, member, parent_fd, name):
    target_parts = components(member.linkname)
    if not target_parts:
        raise Refused('hard link without a target: %r' % member.name[:200])
    src_parent = open_parent(root_fd, target_parts)
    try:
        try:
            st = os.lstat(target_parts[-1], dir_fd=src_parent)
        except FileNotFoundError:
            raise Refused('hard link to a file not in the archive: %r' % member.linkname[:200])
        if not stat.S_ISREG(st.st_mode):
            raise Refused('hard link to something not a regular file: %r' % member.linkname[:200])
        clear(parent_fd, name)
        os.link(target_parts[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent_fd, follow_symlinks=False)
    finally:
        os.close(src_parent)


def unpack(stream, target):
    os.mkdir(target, 0o755)
    root_fd = os.open(target, NOFOLLOW_DIR)
    dirs = []
    counts = {'files': 0, 'dirs': 0, 'links': 0, 'skipped_devices': 0, 'stripped_setid': 0}
    try:
        with tarfile.open(fileobj=stream, mode='r|*') as tar:
            for member in tar:
                parts = components(member.name)
                if not parts:
                    continue  # "./" itself
                if member.mode & 0o6000:
                    counts['stripped_setid'] += 1
                if member.ischr() or member.isblk() or member.isfifo():
                    counts['skipped_devices'] += 1
                    continue
                parent = open_parent(root_fd, parts)
                name = parts[-1]
                try:
                    if member.isdir():
                        try:
                            os.mkdir(name, 0o700, dir_fd=parent)
                        except FileExistsError:
                            if not stat.S_ISDIR(os.lstat(name, dir_fd=parent).st_mode):
                                raise Refused('directory over a file or link: %r' % member.name[:200])
                        dirs.append((parts, safe_mode(member.mode, True) | 0o700, member.mtime))
                        counts['dirs'] += 1
                    elif member.issym():
                        clear(parent, name)
                        os.symlink(member.linkname, name, dir_fd=parent)
                        counts['links'] += 1
                    elif member.islnk():
                        link_file(root_fd, member, parent, name)
                        counts['files'] += 1
                    elif member.isreg():
                        write_file(tar, member, parent, name)
                        counts['files'] += 1
                    else:
                        counts['skipped_devices'] += 1
                finally:
                    os.close(parent)
        if counts['files'] + counts['dirs'] + counts['links'] == 0:
            raise Refused('the archive holds no files')
        # Directory modes last, deepest first: a read-only directory must not stop its own members.
        for parts, mode, mtime in reversed(dirs):
            parent = open_parent(root_fd, parts)
            try:
                fd = os.open(parts[-1], NOFOLLOW_DIR, dir_fd=parent)
                try:
                    os.fchmod(fd, mode)
                    os.utime(fd, (mtime, mtime))
                finally:
                    os.close(fd)
            finally:
                os.close(parent)
    finally:
        os.close(root_fd)
    return counts


def main():
    args = sys.argv[1:]
    zstd = args[:1] == ['--zstd']
    if zstd:
        args = args[1:]
    if len(args) != 1:
        print('usage: unpack.py [--zstd] TARGET < archive.tar', file=sys.stderr)
        return 2
    os.umask(0o022)
    decompressor = None
    try:
        stream = sys.stdin.buffer
        if zstd:
            decompressor = subprocess.Popen(['zstd', '-dcq'], stdin=sys.stdin.buffer, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            stream = decompressor.stdout
        counts = unpack(stream, args[0])
        if decompressor is not None:
            decompressor.stdout.read()
            if decompressor.wait() != 0:
                raise Refused('not a readable zstd stream')
    except Refused as err:
        print('refused: %s' % err, file=sys.stderr)
        return 3
    except Exception as err:  # tarfile, zlib, lzma and OS errors alike: one line, exit 3
        print('not a readable tar archive: %s' % (str(err).splitlines() or ['unknown error'])[0][:300], file=sys.stderr)
        return 3
    finally:
        if decompressor is not None and decompressor.poll() is None:
            decompressor.kill()
    print(' '.join('%s=%d' % kv for kv in sorted(counts.items())))
    return 0


if __name__ == '__main__':
    sys.exit(main())
