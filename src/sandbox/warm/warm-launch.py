# A pre-started ("warm") sandbox's program: it starts the interpreter, imports the environment's
# preload modules, then waits for the one program it will ever run, sent by the service on a
# private control pipe. It runs that program exactly once:
#   - a script: through launch.py's own run(), loaded beside this file, so exactly as a cold run
#     (/sandbox/main.py, written by the service into this sandbox's read-only /sandbox just before
#     the request, run as __main__, its uncaught exception reported on the report pipe, the same
#     traceback and exit status);
#   - a command or an argv: by execve, so nothing of this interpreter stays (not even the
#     preloaded modules), with the request's environment.
#
# Run as `python /sandbox/warm-launch.py <control fd> <report fd> <preload,...>`.
#
# Control protocol (the pipe is a socket pair, both ways): this side writes one line, a JSON
# object {"ready": true, "modules": [top-level names imported by the preload], "failed": [...],
# "rss_bytes": n}, then reads one request: a 4-byte big-endian length, then a JSON object
# {"kind": "script"|"command"|"argv", "command": str, "argv": [str], "env": {..}|null}. The pipe
# is closed before the program runs, so the program never holds it.
#
# Preloading never sees the workspace: /workspace, '' and /sandbox are off sys.path until the
# program runs (a workspace file cannot be preloaded), and the service refuses a warm sandbox
# when a workspace entry would shadow a module imported here (it runs cold instead), so user
# files win as in a cold run.
import sys

# Modules the interpreter loaded at start (a cold launch.py finds them loaded too); everything
# imported from here on, by this launcher or the preload, is named to the service, which runs
# cold instead when a workspace entry would shadow one of them. The workspace is off sys.path
# until the program runs, so nothing of it runs before the claim.
AT_START = set(sys.modules)
STARTUP_PATH = list(sys.path)
sys.path[:] = [p for p in sys.path if p not in ('', '/workspace', '/sandbox')]

import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

LAUNCH = '/sandbox/launch.py'


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


def preload(names):
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
        sys.path[:] = STARTUP_PATH
    # sitecustomize and usercustomize are looked for on sys.path (the workspace too) at start.
    tops = sorted({m.split('.', 1)[0] for m in set(sys.modules) - AT_START} | {'sitecustomize', 'usercustomize'})
    # What the preload made lives as long as the process: out of the collector's way, so neither
    # the script's collections nor the interpreter's exit walk it (that exit took 100-200 ms with
    # pandas, numpy and matplotlib loaded; 20 ms frozen). Objects the script makes are collected
    # and finalized as in a cold run.
    if hasattr(gc, 'freeze'):  # Python 3.7+; a root filesystem may have an older one
        gc.freeze()
    return tops, failed


def load_cold_launcher():
    """launch.py (written beside this file by the service), loaded under a private name that
    sys.modules never holds: a script runs through the very code a cold run uses."""
    spec = importlib.util.spec_from_file_location('_bubble_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def main():
    control = int(sys.argv[1])
    report = int(sys.argv[2])
    os.set_inheritable(report, False)  # programs the script starts do not get it
    os.set_inheritable(control, False)
    names = [n for n in sys.argv[3].split(',') if n] if len(sys.argv) > 3 else []
    launcher = load_cold_launcher()
    tops, failed = preload(names)
    ready = {'ready': True, 'modules': tops, 'failed': failed, 'rss_bytes': rss_bytes()}
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


main()
