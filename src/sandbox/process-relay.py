# The in-sandbox agent of a long-running process (POST /v1/sessions/{id}/processes): it starts the
# program and stays beside it as its parent, because bwrap 0.8 does not forward signals (a signal
# to bwrap kills the whole sandbox, the program's traps never run) and a terminal's size can only
# be set from inside the sandbox's own devpts.
#
# Placed at /sandbox/process-relay.py and run as
#   python -I /sandbox/process-relay.py CTL_FD MODE COLS ROWS CWD -- PROGRAM ARG...
# MODE "pipes": the program gets the relay's stdin, stdout and stderr as they are, in a process
#   group of its own.
# MODE "pty": the program gets a new pseudo-terminal (COLS x ROWS) as its controlling terminal and
#   its stdin/stdout/stderr; the relay copies its stdin to the terminal and the terminal's output
#   to its stdout. End of stdin is typed as ^D.
# CWD: a directory relative to /workspace to start in ("" for /workspace itself).
#
# CTL_FD carries JSON lines from the service: {"resize": [cols, rows]} (pty mode) and
# {"signal": "SIGINT"} (sent to the program's process group; in pty mode to the terminal's
# foreground group, as a keyboard would). Junk and over-long lines are ignored. When the program
# has exited the relay exits with its status (128+N for signal N), which bwrap passes on; the
# service takes the outcome from bwrap's exit, never from anything written on CTL_FD (code in the
# sandbox runs as the same user and could write there too). Leftover background jobs die with the
# sandbox's PID namespace when the relay, its last process but one, is gone.
import errno
import fcntl
import json
import os
import select
import signal
import struct
import sys
import termios

MAX_CTL_LINE = 4096
MAX_PENDING_INPUT = 64 * 1024
SIGNALS = {'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGQUIT', 'SIGWINCH'}
# Python ignores these (or installs its own handlers); an ignored signal would stay ignored
# across exec, so the program gets the defaults back.
RESET = ('SIGINT', 'SIGQUIT', 'SIGTSTP', 'SIGTTIN', 'SIGTTOU', 'SIGPIPE', 'SIGXFSZ', 'SIGCHLD', 'SIGHUP', 'SIGTERM')


def set_size(fd, cols, rows):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))


def start_program(argv, cwd, tty):
    pid = os.fork()
    if pid != 0:
        return pid
    try:
        if tty is None:
            os.setpgid(0, 0)
        else:
            os.setsid()
            fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(tty, fd)
            if tty > 2:
                os.close(tty)
            os.environ['TERM'] = 'xterm-256color'
        for name in RESET:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if cwd:
            os.chdir(cwd)
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, f'{argv[0]}: {e.strerror}\r\n'.encode(errors='replace'))
    os._exit(127)


class Control:
    """JSON lines from the service, each at most MAX_CTL_LINE bytes."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = b''
        self.skipping = False
        self.open = True

    def read(self):
        data = os.read(self.fd, 4096)
        if not data:
            self.open = False
            return []
        self.buf += data
        messages = []
        while b'\n' in self.buf:
            line, self.buf = self.buf.split(b'\n', 1)
            if self.skipping:
                self.skipping = False
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                messages.append(msg)
        if len(self.buf) > MAX_CTL_LINE:
            self.buf = b''
            self.skipping = True
        return messages


def handle(msg, pid, master):
    sig = msg.get('signal')
    if isinstance(sig, str) and sig in SIGNALS:
        group = pid
        if master is not None:
            try:
                group = os.tcgetpgrp(master)
            except OSError:
                pass
        try:
            os.killpg(group, getattr(signal, sig))
        except OSError:
            try:
                os.kill(pid, getattr(signal, sig))
            except OSError:
                pass
    size = msg.get('resize')
    if master is not None and isinstance(size, list) and len(size) == 2:
        cols, rows = size
        if all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000 for v in (cols, rows)):
            set_size(master, cols, rows)


def write_all(fd, data):
    """Blocking write (backpressure reaches the program); a closed reader drops the output."""
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def main():
    ctl_fd = int(sys.argv[1])
    mode = sys.argv[2]
    cols, rows = int(sys.argv[3]), int(sys.argv[4])
    cwd = sys.argv[5]
    if sys.argv[6] != '--' or len(sys.argv) < 8 or mode not in ('pipes', 'pty'):
        os.write(2, b'process-relay: bad arguments\n')
        os._exit(2)
    argv = sys.argv[7:]
    os.set_inheritable(ctl_fd, False)

    # SIGCHLD wakes the select loop through a pipe, so the program's end is never missed.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    master = None
    if mode == 'pty':
        master, tty = os.openpty()
        set_size(master, cols, rows)
        pid = start_program(argv, cwd, tty)
        os.close(tty)
        os.set_blocking(master, False)
    else:
        pid = start_program(argv, cwd, None)
        os.close(0)  # the program holds stdin; the relay must not keep its writer's pipe alive

    ctl = Control(ctl_fd)
    pending = b''
    stdin_open = master is not None
    status = None
    while status is None:
        readers = [wake_r] + ([ctl_fd] if ctl.open else [])
        writers = []
        if master is not None:
            readers.append(master)
            if stdin_open and len(pending) < MAX_PENDING_INPUT:
                readers.append(0)
            if pending:
                writers.append(master)
        try:
            ready_r, ready_w, _ = select.select(readers, writers, [])
        except InterruptedError:
            continue
        if wake_r in ready_r:
            os.read(wake_r, 512)
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
        if master is not None and master in ready_r:
            try:
                data = os.read(master, 65536)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                data = b''
            if data:
                write_all(1, data)
        if 0 in ready_r:
            data = os.read(0, 65536)
            if data:
                pending += data
            else:
                stdin_open = False
                pending += b'\x04'
        if master in ready_w:
            try:
                pending = pending[os.write(master, pending):]
            except BlockingIOError:
                pass
            except OSError:
                pending = b''
        if ctl_fd in ready_r:
            for msg in ctl.read():
                handle(msg, pid, master)

    if master is not None:
        # What the program wrote just before it exited is still in the terminal.
        try:
            while True:
                data = os.read(master, 65536)
                if not data:
                    break
                write_all(1, data)
        except OSError:
            pass
    code = os.waitstatus_to_exitcode(status)
    try:
        os.write(ctl_fd, (json.dumps({'exit': code}) + '\n').encode())
    except OSError:
        pass
    os._exit(code if code >= 0 else 128 - code)


main()
