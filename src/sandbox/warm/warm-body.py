# The warm launcher's code (warm-launch.py is its entry point and says what it does). A module
# of its own so that it is not compiled on every warm start: the __main__ script always is, while
# this module is loaded from the .pyc the service compiled beside it when the interpreter's
# version matches (and compiled in memory, as before, when it does not).
import _imp
import gc
import importlib
import json
import os
import sys

def read_exact(fd, n):
    chunks = []
    while n > 0:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError('control pipe closed')
        chunks.append(chunk)
        n -= len(chunk)
    return b''.join(chunks)


def rss_bytes():
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def preload(names, at_start, startup_path):
    """Import the preload modules with the workspace off sys.path and their output discarded."""
    # Warnings printed while importing belong to no execution: fd 1 and 2 point at /dev/null meanwhile.
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = (os.dup(1), os.dup(2))
    devnull = os.open('/dev/null', os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    failed = []
    try:
        for name in names:
            try:
                importlib.import_module(name)
            except BaseException:  # a broken preload only costs its speed-up
                failed.append(name)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        os.close(saved_fds[0])
        os.close(saved_fds[1])
        sys.path[:] = startup_path
    # sitecustomize and usercustomize are looked for on sys.path (the workspace too) at start.
    tops = sorted({m.split('.', 1)[0] for m in set(sys.modules) - at_start} | {'sitecustomize', 'usercustomize'})
    # What the preload made lives as long as the process: out of the collector's way, so neither
    # the script's collections nor the interpreter's exit walk it (that exit took 100-200 ms with
    # pandas, numpy and matplotlib loaded; 20 ms frozen). Objects the script makes are collected
    # and finalized as in a cold run.
    if hasattr(gc, 'freeze'):  # Python 3.7+; a root filesystem may have an older one
        gc.freeze()
    return tops, failed


def run_script(launcher, report):
    # The finders cached directory listings while preloading: files uploaded since must be found.
    importlib.invalidate_caches()
    launcher.run(report)


def exec_program(argv, env, search):
    try:
        if search:
            os.execvpe(argv[0], argv, env)
        os.execve(argv[0], argv, env)
    except OSError as exc:
        # What bwrap prints when it cannot start a program, with its exit status.
        os.write(2, ('bwrap: execvp %s: %s\n' % (argv[0], exc.strerror)).encode('utf-8', 'replace'))
        os._exit(1)


def main(at_start, startup_path, launcher):
    """at_start: the modules the interpreter had loaded before the launcher; startup_path: sys.path
    then; launcher: launch.py's module, whose run() runs a script as a cold run does."""
    control = int(sys.argv[1])
    report = int(sys.argv[2])
    os.set_inheritable(report, False)  # programs the script starts do not get it
    os.set_inheritable(control, False)
    names = [n for n in sys.argv[3].split(',') if n] if len(sys.argv) > 3 else []
    tops, failed = preload(names, at_start, startup_path)
    # The endings a module file has for this interpreter (what importlib's path finder looks for),
    # so the service can tell exactly which workspace names would shadow an imported module.
    suffixes = ['.py', '.pyc'] + list(_imp.extension_suffixes())
    ready = {'ready': True, 'modules': tops, 'failed': failed, 'rss_bytes': rss_bytes(), 'suffixes': suffixes}
    os.write(control, (json.dumps(ready) + '\n').encode('utf-8'))
    try:
        size = int.from_bytes(read_exact(control, 4), 'big')
        request = json.loads(read_exact(control, size).decode('utf-8'))
    except (EOFError, OSError, ValueError):
        os._exit(0)  # discarded before it was claimed
    os.close(control)
    env = request.get('env')
    kind = request['kind']
    if kind == 'command':
        exec_program(['/bin/sh', '-c', request['command']], env if env is not None else dict(os.environ), False)
    elif kind == 'argv':
        exec_program(list(request['argv']), env if env is not None else dict(os.environ), True)
    else:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        run_script(launcher, report)
