# A session's fork server: a sandbox built once for the session (its workspace, environment,
# volumes, uid, limits, network namespace), its interpreter started and the environment's preload
# modules imported, that forks one process tree per execution instead of a new sandbox being built
# for each. It never runs a program itself; every execution runs in a child that, before the
# program's first instruction, is in a cgroup of its own (placed there by the service), in new
# PID, mount, IPC, UTS and cgroup namespaces with a fresh /proc, /dev, /tmp and /sandbox, holds no
# capability, has no_new_privs and the service's seccomp filter: what a cold sandbox has.
#
# Run as `python /sandbox/warm-launch.py --fork-server <channel fd> <preload,...>` (the warm
# launcher's entry, which loads this module), with CAP_SYS_ADMIN and
# CAP_SETPCAP in the sandbox's own user namespace (bwrap --cap-add; they are needed for the
# per-execution namespaces and mounts and are dropped before any program runs), and without the
# seccomp filter (each execution loads it).
#
# Channel: Node's IPC channel ('json' lines on a Unix socket; a descriptor travels with a
# {"cmd":"NODE_HANDLE",...} line and Node answers {"cmd":"NODE_HANDLE_ACK"} before the next).
#   this side, once:   {"ready": true, "pid": n, "modules": [...], "failed": [...], "rss_bytes": n,
#                       "suffixes": [...]}                  (as warm-launch.py's ready line, + pid)
#   the service:       {"fork": id, "tmp_bytes": n}      (an execution forked ahead of its program)
#   this side:         five descriptors, the service's ends of the execution's stdin, stdout,
#                      stderr, report and control sockets ({"id": id, "fd": 0..4}), then
#                      {"id": id, "pid": n} (the execution's first process, in this sandbox's PID
#                      namespace) or {"id": id, "error": str}.
# Per execution (control socket): the service places process n in a cgroup of the execution's
# own and writes 'p'; n enters new namespaces and forks the namespace's init, which makes the
# mounts and forks the program's process, which writes 'r' and waits. All that is done ahead
# (the service hands out only an execution that said 'r'). When the program
# is known the service writes 'g', a 4-byte big-endian length and a JSON object {"kind":
# "script"|"command"|"argv", "script": str, "command": str, "argv": [str], "env": {..}|null,
# "cpu": seconds}; the program's process puts the script in /sandbox, makes it read-only, drops
# every capability, loads the seccomp filter and runs it. When the program has exited, the init
# kills and reaps every process left in the namespace, then writes the exit status ("<code>\n",
# 128+N for signal N, as bwrap reports). Anything else from the service, or its end closing, and
# they exit without running anything.
#
# Processes of an execution: n (outside the new PID namespace, waits), init (pid 1 inside: the
# mounts, then reaps) and the program (pid 2, as under bwrap). Each dies with its parent
# (PR_SET_PDEATHSIG) and the server dies with the service (bwrap --die-with-parent).
import ctypes
import json
import os
import resource
import signal
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.unshare.argtypes = [ctypes.c_int]
libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

CONFIG = '/sandbox/fork.json'
SECCOMP_FILE = '/sandbox/seccomp.bpf'
MASK_FILE = '/sandbox/mask-file'
MASK_DIR = '/sandbox/mask-dir'
# /dev as bwrap --dev makes it: these nodes bound from the sandbox's /dev, pts a new devpts.
DEV_NODES = ('null', 'zero', 'full', 'random', 'urandom', 'tty')
DEV_LINKS = (('ptmx', 'pts/ptmx'), ('fd', '/proc/self/fd'), ('stdin', '/proc/self/fd/0'),
             ('stdout', '/proc/self/fd/1'), ('stderr', '/proc/self/fd/2'), ('core', '/proc/kcore'))
# Signals the interpreter sets up at start, given back to programs started by exec.
RESET_ON_EXEC = ('SIGPIPE', 'SIGXFSZ', 'SIGINT', 'SIGCHLD')


class Failed(Exception):
    pass


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise Failed('%s: %s' % (what, os.strerror(err)))


def mount(source, target, fstype, flags, data=None):
    check(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                     flags, data.encode() if data else None), 'mount %s' % target)


class Channel:
    """Node's IPC channel: JSON lines both ways, descriptors with NODE_HANDLE lines."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.buf = b''
        self.queued = []

    def _line(self):
        while b'\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line.decode('utf-8'))

    def next_request(self):
        """The service's next message that is not Node's own (a NODE_* one), or None at the end."""
        while True:
            if self.queued:
                return self.queued.pop(0)
            msg = self._line()
            if msg is None:
                return None
            if isinstance(msg, dict) and not str(msg.get('cmd', '')).startswith('NODE_'):
                return msg

    def send(self, obj):
        self.sock.sendall((json.dumps(obj) + '\n').encode('utf-8'))

    def send_fd(self, msg, fd):
        line = json.dumps({'cmd': 'NODE_HANDLE', 'type': 'net.Socket', 'msg': msg}) + '\n'
        socket.send_fds(self.sock, [line.encode('utf-8')], [fd])
        while True:  # Node takes the next descriptor only after its receipt for this one
            reply = self._line()
            if reply is None:
                raise EOFError('channel closed')
            cmd = reply.get('cmd') if isinstance(reply, dict) else None
            if cmd == 'NODE_HANDLE_ACK':
                return
            if cmd == 'NODE_HANDLE_NACK':
                raise Failed('the service refused a descriptor')
            if cmd is None or not str(cmd).startswith('NODE_'):
                self.queued.append(reply)


def drop_capabilities(last_cap):
    for cap in range(last_cap + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: unknown here
            check(-1, 'PR_CAPBSET_DROP')
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), 'PR_CAP_AMBIENT_CLEAR_ALL')
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    check(libc.capset(ctypes.addressof(header), ctypes.addressof(data)), 'capset')


class SockFprog(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]


def load_seccomp(program):
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 'PR_SET_NO_NEW_PRIVS')
    if program is None:
        return
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), 'seccomp')


def exit_code(status):
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Server:
    def __init__(self, channel_fd, warm, launcher):
        self.channel = Channel(channel_fd)
        self.channel_fd = channel_fd
        self.warm = warm
        self.launcher = launcher
        self.pid = os.getpid()
        with open(CONFIG) as f:
            self.config = json.load(f)
        self.seccomp = None
        if os.path.exists(SECCOMP_FILE):
            with open(SECCOMP_FILE, 'rb') as f:
                self.seccomp = f.read()
        with open('/sandbox/launch.py', 'rb') as f:
            self.launch_source = f.read()
        with open('/proc/sys/kernel/cap_last_cap') as f:
            self.last_cap = int(f.read())

    def check(self):
        """Once, before saying ready: a child drops every capability and loads the seccomp program
        as each execution's program process will, after it has said it is set up. A host or a
        program that refuses either ends the server here (it never says ready, sessions run
        cold) instead of failing a user's execution."""
        pid = os.fork()
        if pid == 0:
            try:
                os.close(self.channel_fd)
                drop_capabilities(self.last_cap)
                load_seccomp(self.seccomp)
                os._exit(0)
            except BaseException:  # noqa: B036
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            os.write(2, b'bubble-sandbox fork server: capabilities could not be dropped or the seccomp program not loaded\n')
            os._exit(1)

    def serve(self):
        # Executions' first processes are reaped by the kernel: each reports on its own socket.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        while True:
            req = self.channel.next_request()
            if req is None:
                os._exit(0)  # the service is gone or discarded this server
            if 'fork' in req:
                self.fork(req)

    def fork(self, req):
        rid = req['fork']
        tmp_bytes = int(req['tmp_bytes'])
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(5)]
        ours = [p[0].detach() for p in pairs]
        theirs = [p[1].detach() for p in pairs]
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in ours + theirs:
                os.close(fd)
            self.channel.send({'id': rid, 'error': 'fork: %s' % exc.strerror})
            return
        if pid == 0:
            self.guarded(lambda: self.first(tmp_bytes, ours, theirs), 2)
        for fd in theirs:
            os.close(fd)
        try:
            for k, fd in enumerate(ours):
                os.set_blocking(fd, False)  # the service's ends: Node uses them as they come
                self.channel.send_fd({'id': rid, 'fd': k}, fd)
                os.close(fd)
                ours[k] = -1
            self.channel.send({'id': rid, 'pid': pid})
        finally:
            for fd in ours:
                if fd >= 0:
                    os.close(fd)

    def first(self, tmp_bytes, ours, theirs):
        """The execution's first process: once in its cgroup, enters new namespaces and forks the init."""
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != self.pid:
            os._exit(125)  # the server died meanwhile
        os.close(self.channel_fd)
        for fd in ours:
            os.close(fd)
        stdin, stdout, stderr, report, control = theirs
        try:
            if self.warm.read_exact(control, 1) != b'p':
                os._exit(0)
        except (EOFError, OSError):
            os._exit(0)  # the service gave it up before placing it
        try:
            check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP), 'unshare')
            init = os.fork()
        except (Failed, OSError) as exc:
            os.write(stderr, ('bubble-sandbox fork server: %s\n' % exc).encode('utf-8', 'replace'))
            os.write(control, b'125\n')
            os._exit(0)
        if init == 0:
            self.guarded(lambda: self.init(tmp_bytes, stdin, stdout, stderr, report, control), stderr)
        for fd in (stdin, stdout, stderr, report, control):
            os.close(fd)
        while True:
            try:
                os.waitpid(init, 0)
                break
            except InterruptedError:
                continue
        os._exit(0)

    @staticmethod
    def guarded(step, stderr):
        """Runs a child's whole life: it never returns into the server's loop, whatever happens."""
        try:
            step()
        except BaseException as exc:  # noqa: B036
            try:
                os.write(stderr, ('bubble-sandbox fork server: %s\n' % exc).encode('utf-8', 'replace'))
            except OSError:
                pass
        os._exit(125)

    def init(self, tmp_bytes, stdin, stdout, stderr, report, control):
        """Pid 1 of the execution's PID namespace: a fresh /proc, /dev, /tmp and /sandbox, then the program."""
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # Named for what it is (/proc/1/comm), as bwrap's init is named bwrap.
        libc.prctl(PR_SET_NAME, ctypes.addressof(ctypes.create_string_buffer(b'sandbox-init')), 0, 0, 0)
        # A new session led by the init, the program in it (bwrap --new-session under bwrap's init).
        os.setsid()
        # As bwrap's init, pid 1 ignores the signals its namespace sends it (no handler of its own).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        cfg = self.config
        uid, gid = cfg['uid'], cfg['gid']
        mount(None, '/', None, MS_REC | MS_PRIVATE)
        nodes = {name: os.open('/dev/' + name, os.O_PATH) for name in DEV_NODES}
        mount('proc', '/proc', 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for dest, is_dir in cfg['masks']:
            mount(MASK_DIR if is_dir else MASK_FILE, dest, None, MS_BIND)
            mount(None, dest, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        mount('tmpfs', '/dev', 'tmpfs', MS_NOSUID | MS_NODEV, 'mode=0755,uid=%d,gid=%d' % (uid, gid))
        for name, fd in nodes.items():
            os.close(os.open('/dev/' + name, os.O_CREAT | os.O_WRONLY, 0o444))
            mount('/proc/self/fd/%d' % fd, '/dev/' + name, None, MS_BIND)
            os.close(fd)
        os.mkdir('/dev/shm', 0o755)
        os.mkdir('/dev/pts', 0o755)
        mount('devpts', '/dev/pts', 'devpts', MS_NOSUID | MS_NOEXEC, 'newinstance,ptmxmode=0666,mode=620')
        for name, target in DEV_LINKS:
            os.symlink(target, '/dev/' + name)
        mount('tmpfs', '/tmp', 'tmpfs', MS_NOSUID | MS_NODEV, 'size=%d,mode=0755,uid=%d,gid=%d' % (tmp_bytes, uid, gid))
        # Writable until the program has put its script there (then read-only, before it runs).
        mount('tmpfs', '/sandbox', 'tmpfs', MS_NOSUID | MS_NODEV, 'mode=0755,uid=%d,gid=%d' % (uid, gid))
        program = os.fork()
        if program == 0:
            self.guarded(lambda: self.program(stdin, stdout, stderr, report, control), 2)
        for fd in (stdin, stdout, stderr, report):
            os.close(fd)
        code = 125
        while True:
            try:
                pid, status = os.wait()
            except InterruptedError:
                continue
            except ChildProcessError:
                break
            if pid == program:
                code = exit_code(status)
                # As bwrap's init ending the namespace: everything the program left is killed and
                # reaped before the status goes out, so nothing of it runs once the service has
                # it (the namespace's teardown, a wait of several milliseconds, comes after).
                try:
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
        try:
            os.write(control, b'%d\n' % code)
        except OSError:
            pass  # the service is no longer listening
        os._exit(code)

    def program(self, stdin, stdout, stderr, report, control):
        """Pid 2: waits for its program, then runs it with what a cold sandbox's program has."""
        for fd, std in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, std)
            os.close(fd)
        os.chdir('/workspace')
        try:
            os.write(control, b'r')  # set up: the service may hand this execution out
            if self.warm.read_exact(control, 1) != b'g':
                os._exit(0)
            req = json.loads(self.warm.read_exact(control, int.from_bytes(self.warm.read_exact(control, 4), 'big')).decode('utf-8'))
        except (EOFError, OSError, ValueError):
            os._exit(0)  # given up before its program came
        os.close(control)
        kind = req.get('kind')
        if kind == 'script':
            for name, data in (('main.py', (req.get('script') or '').encode('utf-8')), ('launch.py', self.launch_source)):
                fd = os.open('/sandbox/' + name, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o444)
                os.write(fd, data)
                os.close(fd)
        mount(None, '/sandbox', None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.closerange(3, report)
        os.closerange(report + 1, 65536)
        os.set_inheritable(report, False)
        cpu = max(1, int(req.get('cpu') or 1))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        # A fork shares its parent's random state: modules seeded at import are seeded again.
        numpy_random = sys.modules.get('numpy.random')
        if numpy_random is not None and hasattr(numpy_random, 'seed'):
            numpy_random.seed()
        drop_capabilities(self.last_cap)
        load_seccomp(self.seccomp)
        env = req.get('env')
        if kind in ('command', 'argv'):
            for name in RESET_ON_EXEC:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            environ = env if env is not None else dict(os.environ)
            if kind == 'command':
                self.warm.exec_program(['/bin/sh', '-c', req['command']], environ, False)
            else:
                self.warm.exec_program(list(req['argv']), environ, True)
            return
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        code = 0
        try:
            self.warm.run_script(self.launcher, report)
        except SystemExit as exc:
            code = exc.code
        # As the interpreter ends: non-daemon threads joined, atexit functions run, the streams
        # flushed, then the status SystemExit asked for.
        threading = sys.modules.get('threading')
        if threading is not None and hasattr(threading, '_shutdown'):
            threading._shutdown()
        import atexit
        atexit._run_exitfuncs()
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(code & 0xff)


def main(at_start, startup_path, warm, launcher):
    channel_fd = int(sys.argv[2])  # after --fork-server
    os.set_inheritable(channel_fd, False)
    names = [n for n in sys.argv[3].split(',') if n] if len(sys.argv) > 3 else []
    tops, failed = warm.preload(names, at_start, startup_path)
    import _imp
    server = Server(channel_fd, warm, launcher)
    server.check()
    server.channel.send({'ready': True, 'pid': os.getpid(), 'modules': tops, 'failed': failed,
                         'rss_bytes': warm.rss_bytes(), 'suffixes': ['.py', '.pyc'] + list(_imp.extension_suffixes())})
    server.serve()
