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
# Run as `python /sandbox/warm-launch.py <control fd> <report fd> <preload,...>`; or, a session's
# fork server (fork-body.py says what it is), `python /sandbox/warm-launch.py --fork-server
# <channel fd> <preload,...>`.
#
# Control protocol (the pipe is a socket pair, both ways): this side writes one line, a JSON
# object {"ready": true, "modules": [top-level names imported by the preload], "failed": [...],
# "rss_bytes": n, "suffixes": [module file endings of this interpreter]}, then reads one
# request: a 4-byte big-endian length, then a JSON object
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

import importlib.util  # noqa: E402


def load(name, source):
    """The module at `source`, loaded under a private name that sys.modules never holds: from the
    .pyc the service compiled beside it (the __main__ script, this file, is compiled on every start;
    a module need not be), or from the source when there is none or it was made for another
    interpreter version (bad magic number: nothing of it ran)."""
    for path in (source + 'c', source):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            return module
        except (ImportError, OSError, EOFError, ValueError):
            if path == source:
                raise


# The launcher's code (warm-body.py), and the cold path's launch.py, through whose run() a script
# runs exactly as in a cold run; a fork server's code (fork-body.py) uses both.
if sys.argv[1:2] == ['--fork-server']:
    load('_bubble_fork', '/sandbox/fork-body.py').main(
        AT_START, STARTUP_PATH, load('_bubble_warm', '/sandbox/warm-body.py'), load('_bubble_launch', '/sandbox/launch.py'))
else:
    load('_bubble_warm', '/sandbox/warm-body.py').main(AT_START, STARTUP_PATH, load('_bubble_launch', '/sandbox/launch.py'))
